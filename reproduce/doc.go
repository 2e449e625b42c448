// Package reproduce owns factlens' reproductions of published findings about
// how language models recall facts: ROME's causal tracing (Meng et al. 2022),
// the athlete → sport study of Fact Finding (Nanda, Rajamanoharan, Kramár &
// Shah 2023), counts that bear on computation in superposition, and sparse
// probing (Gurnee et al. 2023).
//
// Each study runs the methods of package analysis (and sae and toy) on a
// model, measures, and returns a result struct whose core is a list of
// Findings: a published claim with its source and the paper's figure, this
// model's number, and a verdict in words reached by a rule stated with its
// thresholds. The published figures are the only numbers typed into this
// package (see Claims); every other number in a result is computed by the run
// that returns it. Nothing here prints: package main renders results.
//
// Verdicts never fail on empty sets: a model that knows none of a dataset's
// facts gets "not found" with the count, too few facts give "inconclusive",
// and parts that need an input the caller did not give (an SAE, a toy model)
// are "not measured".
package reproduce
