package gpt2

// Gradient mode: the forward of Run rebuilt as a spago autodiff graph (package
// ag) whose nodes are the hook points, so that one backward pass gives the
// gradient of a scalar with respect to any hook point and every parameter.
//
// The graph mirrors Run exactly: the same hook names and shapes (batch
// first), weight processing, PrependBOS, left padding with Mask, attention
// scale and activation function. Each node is one of our own ops (grad_ops.go)
// running the float32 kernels of gpt2/kernels forward and backward — a
// Conv1D, a LayerNorm half, a GELU, a per-head attention — so a GPT-2 block
// is about fifteen nodes and spago only schedules the backward pass.

import (
	"context"
	"fmt"
	"math"
	"slices"
)

// GradOptions control one forward and backward pass of Model.Gradients.
type GradOptions struct {
	// RunOptions are those of Run. Hooks fire at every hook point they match
	// and may change the activation in place; the changed values flow through
	// the rest of the forward (and HookGrad says how gradients cross them).
	// Cache, Mask and PrependBOS are as in Run. Logits must be LogitsAll or
	// LogitsLast (the objective reads them) and StopAtLayer must be 0.
	RunOptions
	// Want selects the hook points whose gradients GradResult.Grads holds;
	// nil selects none. Only the part of the graph after the first wanted
	// point (and, with ParamGrads, all of it) is differentiated.
	Want Matcher
	// ParamGrads also computes the gradient of the objective with respect to
	// every parameter, returned in GradResult.ParamGrads.
	ParamGrads bool
	// HookGrad says how gradients pass through elements a hook changed.
	HookGrad HookGradMode
}

// HookGradMode says how the gradient crosses a hook point whose hook changed
// some elements of the activation. Either way, GradResult.Grads reports the
// gradient with respect to the activation as the hook left it.
type HookGradMode int

const (
	// HookGradCut treats every element a hook changed as a constant: no
	// gradient flows from it to what computed it. That is what PyTorch does
	// for a TransformerLens hook that assigns into the activation (patching,
	// ablation). Unchanged elements pass the gradient on.
	HookGradCut HookGradMode = iota
	// HookGradThrough treats hooks as the identity for the gradient, as
	// PyTorch does for a hook that adds to the activation (steering).
	HookGradThrough
)

// Objective turns logits into the scalar to differentiate. It returns the
// value and its gradient with respect to every logit (len(logits.Data)
// values, same layout). logits is [batch, pos, vocab] (pos = 1 under
// LogitsLast) and must not be modified.
type Objective func(logits *Activation) (value float64, dLogits []float32, err error)

// GradResult is what Gradients returns. Every Activation and slice in it is
// owned by the caller.
type GradResult struct {
	Value  float64                // the objective
	Logits *Activation            // as Run returns them
	Cache  map[string]*Activation // the hook points RunOptions.Cache selected
	// Grads holds d Value / d activation for every hook point Want selected,
	// under the hook point's name and with its shape.
	Grads map[string]*Activation
	// ParamGrads holds d Value / d parameter when GradOptions.ParamGrads is
	// set, keyed by the names of Model.Weight (Conv1D layout, after weight
	// processing). When the unembedding is tied to wte, "wte.weight" holds
	// the sum of both uses and there is no "lm_head.weight".
	ParamGrads map[string][]float32
	Tokens     [][]int  // the token ids run, after PrependBOS
	Mask       [][]bool // the mask used, after PrependBOS; nil when unpadded
}

// Gradients runs the model on tokens as Run does, evaluates obj on the
// logits and back-propagates it: to every hook point opts.Want selects and,
// with opts.ParamGrads, to every parameter. It never writes the model's
// parameters, so it is safe on a model whose weights are a read-only mmap,
// and safe for concurrent use.
//
// Attribution patching over all MLP neurons, for example, is one call:
//
//	res, err := m.Gradients(ctx, corrupt, GradOptions{
//		RunOptions: RunOptions{Logits: LogitsLast, Cache: HookGlob("blocks.*.mlp.hook_post")},
//		Want:       HookGlob("blocks.*.mlp.hook_post"),
//	}, LogitDiffObjective(0, -1, target, contrast))
//
// then (clean − corrupt activation) · gradient per neuron.
func (m *Model) Gradients(ctx context.Context, tokens [][]int, opts GradOptions, obj Objective) (*GradResult, error) {
	return m.gradients(ctx, tokens, opts, obj, nil)
}

// LogitDiffObjective is logit(target) − logit(contrast) at one batch row
// and position of the logits (negative pos counts from the end, so -1 is
// the last position under LogitsAll and the only one under LogitsLast).
// contrast < 0 makes it the plain logit of target.
func LogitDiffObjective(row, pos, target, contrast int) Objective {
	return func(logits *Activation) (float64, []float32, error) {
		b, p, v, err := logitsShape(logits)
		if err != nil {
			return 0, nil, err
		}
		q := pos
		if q < 0 {
			q += p
		}
		switch {
		case row < 0 || row >= b:
			return 0, nil, fmt.Errorf("gpt2: logit difference: row %d out of range [0, %d)", row, b)
		case q < 0 || q >= p:
			return 0, nil, fmt.Errorf("gpt2: logit difference: position %d out of range for %d positions", pos, p)
		case target < 0 || target >= v || contrast >= v:
			return 0, nil, fmt.Errorf("gpt2: logit difference: tokens %d, %d out of range [0, %d)", target, contrast, v)
		}
		base := (row*p + q) * v
		grad := make([]float32, len(logits.Data))
		value := float64(logits.Data[base+target])
		grad[base+target] = 1
		if contrast >= 0 {
			value -= float64(logits.Data[base+contrast])
			grad[base+contrast] -= 1
		}
		return value, grad, nil
	}
}

// CrossEntropyObjective is the weighted mean cross-entropy of the logits
// against targets: Σ w[b][t]·(−log softmax(logits[b,t])[targets[b][t]]) / Σ w,
// over the positions whose target is ≥ 0 (a negative target, like PyTorch's
// ignore_index, skips a position). targets has the logits' [batch, pos]
// shape; weights may be nil (all 1) or the same shape, with no negative
// entry. For language modelling, targets[b][t] is the token at t+1; see
// NextTokenTargets.
func CrossEntropyObjective(targets [][]int, weights [][]float32) Objective {
	return func(logits *Activation) (float64, []float32, error) {
		b, p, v, err := logitsShape(logits)
		if err != nil {
			return 0, nil, err
		}
		if len(targets) != b || (weights != nil && len(weights) != b) {
			return 0, nil, fmt.Errorf("gpt2: cross-entropy: %d target rows and %d weight rows for %d logit rows", len(targets), len(weights), b)
		}
		var total float64
		for i, row := range targets {
			if len(row) != p || (weights != nil && len(weights[i]) != p) {
				return 0, nil, fmt.Errorf("gpt2: cross-entropy: row %d has %d targets, want %d positions", i, len(row), p)
			}
			for t, tok := range row {
				if tok >= v {
					return 0, nil, fmt.Errorf("gpt2: cross-entropy: target [%d][%d] = %d out of range [0, %d)", i, t, tok, v)
				}
				w := 1.0
				if weights != nil {
					w = float64(weights[i][t])
				}
				if w < 0 || math.IsNaN(w) {
					return 0, nil, fmt.Errorf("gpt2: cross-entropy: weight [%d][%d] = %v is negative", i, t, w)
				}
				if tok >= 0 {
					total += w
				}
			}
		}
		if total == 0 {
			return 0, nil, fmt.Errorf("gpt2: cross-entropy: no position has a target and a positive weight")
		}
		grad := make([]float32, len(logits.Data))
		losses := make([]float64, b*p) // per position, summed in order below
		parallelFor(b*p, func(_, r int) {
			i, t := r/p, r%p
			tok, w := targets[i][t], 1.0
			if weights != nil {
				w = float64(weights[i][t])
			}
			if tok < 0 || w == 0 {
				return
			}
			lg, g := logits.Data[r*v:(r+1)*v], grad[r*v:(r+1)*v]
			maxV := math.Inf(-1)
			for _, x := range lg {
				maxV = max(maxV, float64(x))
			}
			var sum float64
			for j, x := range lg {
				e := math.Exp(float64(x) - maxV)
				g[j] = float32(e)
				sum += e
			}
			losses[r] = w * (maxV + math.Log(sum) - float64(lg[tok]))
			scale := w / total
			f := float32(scale / sum)
			for j := range g {
				g[j] *= f
			}
			g[tok] -= float32(scale)
		})
		var loss float64
		for _, l := range losses {
			loss += l
		}
		return loss / total, grad, nil
	}
}

// NextTokenTargets returns the targets of next-token prediction for rows of
// tokens as run (Result.Tokens, after PrependBOS): targets[b][t] is
// tokens[b][t+1], and -1 (ignored) at the last position and wherever the
// current or next token is padding (mask false).
func NextTokenTargets(tokens [][]int, mask [][]bool) [][]int {
	out := make([][]int, len(tokens))
	for b, row := range tokens {
		out[b] = make([]int, len(row))
		for t := range row {
			out[b][t] = -1
			if t+1 < len(row) && (mask == nil || (mask[b][t] && mask[b][t+1])) {
				out[b][t] = row[t+1]
			}
		}
	}
	return out
}

func logitsShape(a *Activation) (b, p, v int, err error) {
	if a == nil || len(a.Shape) != 3 || a.Shape[0]*a.Shape[1]*a.Shape[2] != len(a.Data) {
		return 0, 0, 0, fmt.Errorf("gpt2: objective: logits are not a [batch, pos, vocab] tensor")
	}
	return a.Shape[0], a.Shape[1], a.Shape[2], nil
}

// namedParam is one distinct parameter of a model as the forward uses it.
type namedParam struct {
	name  string
	shape []int
	data  []float32
}

// paramList lists the model's distinct parameters in model order under the
// names of Model.Weight: those weight processing removed are skipped, and a
// tied unembedding appears once, as wte.weight.
func (m *Model) paramList() []namedParam {
	names := []string{}
	for _, s := range m.Config.ParamSpecs() {
		names = append(names, s.Name)
	}
	names = append(names, "lm_head.weight", "lm_head.bias")
	seen := map[*float32]bool{}
	var out []namedParam
	for _, name := range names {
		p, err := m.Weight(name)
		if err != nil || len(p.Data) == 0 || seen[&p.Data[0]] {
			continue
		}
		seen[&p.Data[0]] = true
		out = append(out, namedParam{name: name, shape: slices.Clone(p.Shape), data: p.Data})
	}
	return out
}
