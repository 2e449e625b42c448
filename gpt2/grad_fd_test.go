package gpt2

// Finite-difference checks of gradient mode on tiny random models. The
// reference is the fast forward (Run) evaluated at x ± h with a hook adding
// h to one element of a hook point, or with one parameter element moved:
// central differences (f(x+h) − f(x−h))/2h of a float32 forward, with the
// objective summed in float64. With h = 2e-3 their error (truncation
// ~h²·f''' plus float32 rounding of ~1e-6·|f|/h) stays below 1e-3 here;
// tolerance: |grad − fd| ≤ 2e-3·max(1, max|fd| of the tensor) + 2e-2·|fd|.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/factlens/factlens/weights"
)

const (
	fdStep   = 2e-3
	fdAbsTol = 2e-3
	fdRelTol = 2e-2
)

func intPtr(n int) *int { return &n }

// tinyConfig is a 2-layer model small enough for finite differences of
// every hook point.
func tinyConfig(act string, inverseLayerScale bool) *weights.Config {
	cfg := weights.DefaultConfig()
	cfg.VocabSize, cfg.NPositions, cfg.NEmbd, cfg.NLayer, cfg.NHead = 19, 12, 12, 2, 3
	cfg.NInner = intPtr(20)
	cfg.ActivationFunction = act
	cfg.ScaleAttnByInverseLayerIdx = inverseLayerScale
	cfg.BOSTokenID, cfg.EOSTokenID = 18, 18
	return cfg
}

// tinyCheckpoint has weights large enough (std 0.35) that attention is
// peaked and the activation curved, LayerNorm weights around 1 with
// nonzero biases, so every term of the backward pass matters.
func tinyCheckpoint(cfg *weights.Config, seed uint64, untied bool) *weights.Checkpoint {
	rng := rand.New(rand.NewPCG(seed, 7))
	ck := &weights.Checkpoint{Config: cfg, Params: map[string]*weights.Param{}}
	specs := cfg.ParamSpecs()
	if untied {
		f := false
		cfg.TieWordEmbeddings = &f
		specs = append(specs, weights.ParamSpec{Name: "lm_head.weight", Shape: []int{cfg.VocabSize, cfg.NEmbd}})
	}
	for _, s := range specs {
		data := make([]float32, product(s.Shape))
		isLNWeight := strings.HasSuffix(s.Name, "ln_1.weight") || strings.HasSuffix(s.Name, "ln_2.weight") || s.Name == "ln_f.weight"
		for i := range data {
			data[i] = float32(rng.NormFloat64() * 0.35)
			if isLNWeight {
				data[i] = 1 + data[i]/2
			}
		}
		ck.Params[s.Name] = &weights.Param{Name: s.Name, Shape: s.Shape, Data: data, StoredDType: "F32"}
	}
	return ck
}

func tinyModel(t testing.TB, cfg *weights.Config, p Processing, untied bool) *Model {
	t.Helper()
	m, err := FromCheckpoint(tinyCheckpoint(cfg, 11, untied), p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tinyBatch is two rows of 7 tokens, the first left-padded by 2.
func tinyBatch() ([][]int, [][]bool) {
	tokens := [][]int{{0, 0, 5, 9, 2, 14, 3}, {7, 1, 16, 11, 4, 9, 12}}
	mask := [][]bool{{false, false, true, true, true, true, true}, {true, true, true, true, true, true, true}}
	return tokens, mask
}

// fdValue runs the fast forward with extra hooks and evaluates obj.
func fdValue(t *testing.T, m *Model, tokens [][]int, opts RunOptions, obj Objective, extra ...Hook) float64 {
	t.Helper()
	opts.Hooks = append(slices.Clone(opts.Hooks), extra...)
	res, err := m.Run(context.Background(), tokens, opts)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := obj(res.Logits)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// addAt is a hook adding h to element i of the named hook point.
func addAt(name string, i int, h float32) Hook {
	return Hook{Match: HookName(name), Fn: func(a *Activation) error {
		a.Data[i] += h
		return nil
	}}
}

// fdChecker accumulates the worst error of a set of comparisons.
type fdChecker struct {
	t     *testing.T
	worst float64
	where string
	n     int
}

func (c *fdChecker) check(label string, got []float32, idx []int, fd []float64) {
	c.t.Helper()
	scale := 1.0
	for _, f := range fd {
		scale = max(scale, math.Abs(f))
	}
	for k, i := range idx {
		e := math.Abs(float64(got[i]) - fd[k])
		c.n++
		if r := e / scale; r > c.worst {
			c.worst, c.where = r, fmt.Sprintf("%s[%d]", label, i)
		}
		if e > fdAbsTol*scale+fdRelTol*math.Abs(fd[k]) {
			c.t.Errorf("%s[%d]: gradient %.6g, finite difference %.6g", label, i, got[i], fd[k])
		}
	}
}

// sample picks up to n distinct indices of [0, size), preferring those
// where the gradient is not zero (a zero gradient is checked anyway when
// every entry is zero).
func sample(rng *rand.Rand, grad []float32, n int) []int {
	var nz []int
	for i, g := range grad {
		if g != 0 {
			nz = append(nz, i)
		}
	}
	pool := nz
	if len(pool) == 0 {
		pool = make([]int, len(grad))
		for i := range pool {
			pool[i] = i
		}
	}
	rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	out := slices.Clone(pool[:min(n, len(pool))])
	// Also one index with a zero gradient, if any: it must be zero by FD too.
	if len(nz) > 0 && len(nz) < len(grad) {
		for i, g := range grad {
			if g == 0 && rng.IntN(4) == 0 {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

func TestGradFiniteDifferences(t *testing.T) {
	tokens, mask := tinyBatch()
	for _, tc := range []struct {
		name   string
		cfg    *weights.Config
		proc   Processing
		untied bool
		opts   RunOptions
		obj    Objective
	}{
		{"gelu_new/logitdiff/padded", tinyConfig("gelu_new", false), Processing{}, false,
			RunOptions{Mask: mask}, LogitDiffObjective(0, -1, 3, 7)},
		{"gelu_new/crossentropy/padded", tinyConfig("gelu_new", false), Processing{}, false,
			RunOptions{Mask: mask}, CrossEntropyObjective(NextTokenTargets(tokens, mask), nil)},
		{"gelu/untied/inverse_layer/logitdiff_last", tinyConfig("gelu", true), Processing{}, true,
			RunOptions{Logits: LogitsLast}, LogitDiffObjective(1, -1, 5, 2)},
		{"relu/bos/crossentropy", tinyConfig("relu", false), Processing{}, false,
			RunOptions{PrependBOS: true}, CrossEntropyObjective(NextTokenTargets(
				[][]int{append([]int{18}, tokens[1]...), append([]int{18}, tokens[1]...)}, nil), nil)},
		{"transformerlens_processing/logitdiff", tinyConfig("gelu_new", false), TransformerLensProcessing(), false,
			RunOptions{Mask: mask}, LogitDiffObjective(1, 4, 6, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tinyModel(t, tc.cfg, tc.proc, tc.untied)
			toks := tokens
			if tc.opts.PrependBOS {
				toks = [][]int{tokens[1], tokens[1]}
			}
			res, err := m.Gradients(context.Background(), toks, GradOptions{RunOptions: tc.opts, Want: cacheAll, ParamGrads: true}, tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Grads) != len(m.HookNames()) {
				t.Fatalf("%d hook gradients, want %d", len(res.Grads), len(m.HookNames()))
			}
			if base := fdValue(t, m, toks, tc.opts, tc.obj); math.Abs(base-res.Value) > 1e-5*max(1, math.Abs(base)) {
				t.Errorf("objective %v, fast forward %v", res.Value, base)
			}
			rng := rand.New(rand.NewPCG(3, 0))
			c := &fdChecker{t: t}
			for _, name := range m.HookNames() {
				g := res.Grads[name]
				idx := sample(rng, g.Data, 4)
				fd := make([]float64, len(idx))
				for k, i := range idx {
					plus := fdValue(t, m, toks, tc.opts, tc.obj, addAt(name, i, fdStep))
					minus := fdValue(t, m, toks, tc.opts, tc.obj, addAt(name, i, -fdStep))
					fd[k] = (plus - minus) / (2 * fdStep)
				}
				c.check(name, g.Data, idx, fd)
			}
			for name, grad := range res.ParamGrads {
				p, err := m.Weight(name)
				if err != nil {
					t.Fatal(err)
				}
				idx := sample(rng, grad, 3)
				fd := make([]float64, len(idx))
				for k, i := range idx {
					orig := p.Data[i]
					p.Data[i] = orig + fdStep
					plus := fdValue(t, m, toks, tc.opts, tc.obj)
					p.Data[i] = orig - fdStep
					minus := fdValue(t, m, toks, tc.opts, tc.obj)
					p.Data[i] = orig
					fd[k] = (plus - minus) / (2 * fdStep)
				}
				c.check(name, grad, idx, fd)
			}
			wantParams := len(m.paramList())
			if len(res.ParamGrads) != wantParams {
				t.Errorf("%d parameter gradients, want %d", len(res.ParamGrads), wantParams)
			}
			t.Logf("%d comparisons, worst scaled error %.2e at %s", c.n, c.worst, c.where)
		})
	}
}
