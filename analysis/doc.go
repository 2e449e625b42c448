// Package analysis owns factlens' fact-recall analyses of a GPT-2 model:
// direct logit attribution and the logit lens (TransformerLens'
// ActivationCache utilities), causal tracing as ROME does it, activation
// patching as TransformerLens' patching module does it, neuron ablation and
// attribution, the neuron conjunction ("AND gate") test of Fact Finding, and
// sparse probing as in Gurnee et al.; plus the fact datasets these run on
// (ROME's known_1000, the LRE relations, user JSON Lines).
//
// Every analysis is a function that returns a plain result struct with JSON
// tags; nothing here prints. Token positions count from 0 over the tokens the
// model runs (a BOS token, if a Prompt has one, is position 0). Activations
// are read in the coordinates of the model's gpt2.Processing, which every
// result names.
//
// Long analyses take a context.Context and stop when it is cancelled. All
// randomness comes from explicit seeds.
package analysis
