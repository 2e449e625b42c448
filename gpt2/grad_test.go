package gpt2

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/factlens/factlens/gpt2/kernels"
	"github.com/factlens/factlens/weights"
)

// gradRun runs Gradients and fails the test on error.
func gradRun(t *testing.T, m *Model, tokens [][]int, opts GradOptions, obj Objective) *GradResult {
	t.Helper()
	res, err := m.Gradients(context.Background(), tokens, opts, obj)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// notAttention leaves out the hook points that force the unfused attention
// path (scores, pattern) or the per-head output sum (result).
func notAttention(n string) bool {
	return !strings.HasSuffix(n, "hook_attn_scores") && !strings.HasSuffix(n, "hook_pattern") && !strings.HasSuffix(n, "hook_result")
}

// TestGradForwardMatchesRun checks that the values of gradient mode — logits
// and every hook point — equal the independent float64 goldens within their
// tolerance and the fast forward within 1e-6 (scaled), with the fused
// attention node and with every attention hook point materialized.
func TestGradForwardMatchesRun(t *testing.T) {
	in := readInputs(t)
	for _, tc := range []struct {
		ckpt, prefix string
		proc         Processing
		tokens       [][]int
		mask         [][]bool
	}{
		{"tied_f32", "batch/", Processing{}, in.Batch, nil},
		{"tied_f32", "padded/", Processing{}, in.Padded, in.PaddedMask},
		{"tied_f32", "tl/", TransformerLensProcessing(), in.Batch, nil},
		{"options", "batch/", Processing{}, in.Batch, nil},
	} {
		t.Run(tc.ckpt+"/"+strings.TrimSuffix(tc.prefix, "/"), func(t *testing.T) {
			m := openModel(t, tc.ckpt, tc.proc)
			golden := readActs(t, tc.ckpt)
			fast := mustRun(t, m, tc.tokens, RunOptions{Cache: cacheAll, Mask: tc.mask})
			for _, sel := range []struct {
				name  string
				cache Matcher
			}{{"all", cacheAll}, {"fused", notAttention}} {
				res := gradRun(t, m, tc.tokens, GradOptions{RunOptions: RunOptions{Cache: sel.cache, Mask: tc.mask},
					Want: HookName("blocks.0.hook_resid_pre")}, LogitDiffObjective(0, -1, 1, 2))
				if sel.name == "all" {
					checkAgainstGolden(t, golden, tc.prefix, &Result{Cache: res.Cache, Logits: res.Logits})
				}
				if d := maxScaledDiff(res.Logits.Data, fast.Logits.Data); d > 1e-6 {
					t.Errorf("%s: logits differ from Run by %.3g (scaled)", sel.name, d)
				}
				for name, a := range res.Cache {
					if !slices.Equal(a.Shape, fast.Cache[name].Shape) {
						t.Errorf("%s: %s shape %v, Run %v", sel.name, name, a.Shape, fast.Cache[name].Shape)
					} else if d := maxScaledDiffInf(a.Data, fast.Cache[name].Data); d > 1e-6 {
						t.Errorf("%s: %s differs from Run by %.3g (scaled)", sel.name, name, d)
					}
				}
				if want := len(slices.DeleteFunc(m.HookNames(), func(n string) bool { return !sel.cache(n) })); len(res.Cache) != want {
					t.Errorf("%s: cached %d hook points, want %d", sel.name, len(res.Cache), want)
				}
			}
		})
	}
}

// maxScaledDiffInf is maxScaledDiff where equal infinities count as equal.
func maxScaledDiffInf(a, b []float32) float64 {
	scale, d := 1.0, 0.0
	for i := range b {
		if math.IsInf(float64(b[i]), 0) || math.IsInf(float64(a[i]), 0) {
			if a[i] != b[i] {
				return math.Inf(1)
			}
			continue
		}
		scale = max(scale, math.Abs(float64(b[i])))
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d / scale
}

// TestGradHooksPatchLikeRun checks that hooks in gradient mode change the
// forward exactly as they change Run: patching, ablation and steering at
// several hook points, including the attention pattern and hook_result.
func TestGradHooksPatchLikeRun(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	other := mustRun(t, m, [][]int{in.Batch[1], in.Batch[0]}, RunOptions{Cache: cacheAll}).Cache
	dir := make([]float32, m.DModel())
	for i := range dir {
		dir[i] = float32(i%5) - 2
	}
	for _, tc := range []struct {
		name  string
		hooks []Hook
	}{
		{"patch_resid_pre_pos3", []Hook{PatchFrom(other, HookName("blocks.1.hook_resid_pre"), 3)}},
		{"patch_pattern", []Hook{PatchFrom(other, HookName("blocks.0.attn.hook_pattern"))}},
		{"zero_result", []Hook{ZeroAblate(HookName("blocks.1.attn.hook_result"))}},
		{"zero_mlp_out", []Hook{ZeroAblate(HookName("blocks.0.hook_mlp_out"))}},
		{"patch_q_and_scale", []Hook{PatchFrom(other, HookGlob("blocks.*.attn.hook_q")), PatchFrom(other, HookName("blocks.1.ln2.hook_scale"), -1)}},
		{"steer_resid_mid", []Hook{AddDirection(HookName("blocks.0.hook_resid_mid"), dir, 0.3, -2, -1)}},
		{"unmask_scores", []Hook{{Match: HookName("blocks.1.attn.hook_attn_scores"), Fn: func(a *Activation) error {
			for i, x := range a.Data {
				if math.IsInf(float64(x), -1) {
					a.Data[i] = 0.5
				}
			}
			return nil
		}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fast := mustRun(t, m, in.Batch, RunOptions{Hooks: tc.hooks, Cache: cacheAll})
			clean := mustRun(t, m, in.Batch, RunOptions{})
			if maxScaledDiff(fast.Logits.Data, clean.Logits.Data) < 1e-4 {
				t.Fatal("the hooks do not change the logits; the test would prove nothing")
			}
			res := gradRun(t, m, in.Batch, GradOptions{RunOptions: RunOptions{Hooks: tc.hooks, Cache: cacheAll},
				Want: HookGlob("blocks.*.mlp.hook_post")}, LogitDiffObjective(1, -1, 4, 9))
			if d := maxScaledDiff(res.Logits.Data, fast.Logits.Data); d > 1e-6 {
				t.Errorf("logits differ from Run with the same hooks by %.3g (scaled)", d)
			}
			for name, a := range res.Cache {
				if d := maxScaledDiffInf(a.Data, fast.Cache[name].Data); d > 1e-6 {
					t.Errorf("%s differs from Run with the same hooks by %.3g (scaled)", name, d)
				}
			}
		})
	}
}

// TestGradHookModes checks how gradients cross a hook that changed values.
// Zero-ablating blocks.1.hook_mlp_out makes its MLP irrelevant: under
// HookGradCut every gradient into that MLP is exactly zero. Steering
// (adding a direction to hook_mlp_out) is the identity for the gradient:
// under HookGradThrough the gradients must match finite differences of Run
// with the same steering hook, and under HookGradCut they are zero.
func TestGradHookModes(t *testing.T) {
	m := tinyModel(t, tinyConfig("gelu_new", false), Processing{}, false)
	tokens, mask := tinyBatch()
	want := HookGlob("blocks.1.mlp.hook_*")
	obj := LogitDiffObjective(0, -1, 3, 8)
	allZero := func(a *Activation) bool { return !slices.ContainsFunc(a.Data, func(x float32) bool { return x != 0 }) }

	ablate := RunOptions{Mask: mask, Hooks: []Hook{ZeroAblate(HookName("blocks.1.hook_mlp_out"))}}
	for name, g := range gradRun(t, m, tokens, GradOptions{RunOptions: ablate, Want: want}, obj).Grads {
		if !allZero(g) {
			t.Errorf("HookGradCut: %s has a nonzero gradient through an ablated hook_mlp_out", name)
		}
	}

	dir := make([]float32, m.DModel())
	for i := range dir {
		dir[i] = float32(i%3) - 0.5 // no zero: every element changes
	}
	steer := RunOptions{Mask: mask, Hooks: []Hook{AddDirection(HookName("blocks.1.hook_mlp_out"), dir, 0.7)}}
	for name, g := range gradRun(t, m, tokens, GradOptions{RunOptions: steer, Want: want}, obj).Grads {
		if !allZero(g) {
			t.Errorf("HookGradCut: %s has a nonzero gradient through a steered hook_mlp_out", name)
		}
	}
	through := gradRun(t, m, tokens, GradOptions{RunOptions: steer, Want: want, HookGrad: HookGradThrough}, obj)
	c := &fdChecker{t: t}
	for name, g := range through.Grads {
		if allZero(g) {
			t.Fatalf("HookGradThrough: %s is all zero", name)
		}
		// The objective reads row 0's last position, the only one whose
		// layer-1 MLP matters.
		last := (len(tokens[0]) - 1) * m.DMLP()
		idx := []int{last + 3, last + 11, last + 17}
		fd := make([]float64, len(idx))
		for k, i := range idx {
			plus := fdValue(t, m, tokens, steer, obj, addAt(name, i, fdStep))
			minus := fdValue(t, m, tokens, steer, obj, addAt(name, i, -fdStep))
			fd[k] = (plus - minus) / (2 * fdStep)
		}
		c.check(name, g.Data, idx, fd)
	}
	t.Logf("%d comparisons, worst scaled error %.2e at %s", c.n, c.worst, c.where)
}

// TestGradPatchedFiniteDifferences checks HookGradCut against finite
// differences of Run with the same patch: patching position 4 of
// blocks.1.hook_resid_pre makes everything upstream of that position
// irrelevant there, and the gradients must agree with that.
func TestGradPatchedFiniteDifferences(t *testing.T) {
	m := tinyModel(t, tinyConfig("gelu_new", false), Processing{}, false)
	tokens, _ := tinyBatch()
	other := mustRun(t, m, [][]int{tokens[1], tokens[0]}, RunOptions{Cache: cacheAll}).Cache
	opts := RunOptions{Hooks: []Hook{PatchFrom(other, HookName("blocks.1.hook_resid_pre"), 4)}}
	obj := LogitDiffObjective(0, -1, 2, 5)
	res := gradRun(t, m, tokens, GradOptions{RunOptions: opts, Want: cacheAll}, obj)
	c := &fdChecker{t: t}
	d := m.DModel()
	for _, name := range []string{"hook_embed", "blocks.0.hook_resid_post", "blocks.0.mlp.hook_post", "blocks.1.hook_resid_pre", "blocks.1.attn.hook_v"} {
		g := res.Grads[name]
		width := len(g.Data) / (2 * len(tokens[0]))
		var idx []int
		for _, pos := range []int{3, 4, 6} {
			idx = append(idx, pos*width+1, (len(tokens[0])+pos)*width+2)
		}
		fd := make([]float64, len(idx))
		for k, i := range idx {
			plus := fdValue(t, m, tokens, opts, obj, addAt(name, i, fdStep))
			minus := fdValue(t, m, tokens, opts, obj, addAt(name, i, -fdStep))
			fd[k] = (plus - minus) / (2 * fdStep)
		}
		c.check(name, g.Data, idx, fd)
		if name == "blocks.0.hook_resid_post" && g.Data[4*d+1] != 0 {
			t.Errorf("gradient at a patched position upstream of the patch is %v, want 0", g.Data[4*d+1])
		}
	}
	t.Logf("%d comparisons, worst scaled error %.2e at %s", c.n, c.worst, c.where)
}

func TestGradRejectsBadInput(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	obj := LogitDiffObjective(0, -1, 1, 2)
	for _, tc := range []struct {
		name string
		opts GradOptions
		obj  Objective
		want string
	}{
		{"nil objective", GradOptions{}, nil, "nil objective"},
		{"stop at layer", GradOptions{RunOptions: RunOptions{StopAtLayer: 1}}, obj, "StopAtLayer"},
		{"no logits", GradOptions{RunOptions: RunOptions{Logits: LogitsNone}}, obj, "logits mode"},
		{"bad want", GradOptions{Want: HookName("blocks.9.mlp.hook_post")}, obj, "gradient selection matches no hook point"},
		{"bad row", GradOptions{}, LogitDiffObjective(5, -1, 1, 2), "row 5 out of range"},
		{"bad token", GradOptions{}, LogitDiffObjective(0, -1, 1000, 2), "out of range"},
		{"bad targets", GradOptions{}, CrossEntropyObjective([][]int{{1}}, nil), "target rows"},
		{"short gradient", GradOptions{}, func(*Activation) (float64, []float32, error) { return 0, []float32{1}, nil }, "logit gradients"},
		{"hook error", GradOptions{RunOptions: RunOptions{Hooks: []Hook{{cacheAll, func(*Activation) error { return errors.New("boom") }}}}}, obj, "boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Gradients(context.Background(), in.Batch, tc.opts, tc.obj)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Gradients(ctx, in.Batch, GradOptions{Want: cacheAll}, obj); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: error %v", err)
	}
	// Cancelled between forward and backward: every node skips its work but
	// still sends (zero) gradients, so the backward pass ends.
	ctx, cancel = context.WithCancel(context.Background())
	cancelling := func(l *Activation) (float64, []float32, error) {
		cancel()
		return obj(l)
	}
	if _, err := m.Gradients(ctx, in.Batch, GradOptions{Want: cacheAll, ParamGrads: true}, cancelling); !errors.Is(err, context.Canceled) {
		t.Errorf("context cancelled before backward: error %v", err)
	}
}

// TestGradWithoutWantOrParams returns the value and logits only.
func TestGradWithoutWantOrParams(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	res := gradRun(t, m, in.Batch, GradOptions{RunOptions: RunOptions{Logits: LogitsLast}}, LogitDiffObjective(1, 0, 1, 2))
	fast := mustRun(t, m, in.Batch, RunOptions{Logits: LogitsLast})
	v := m.VocabSize()
	if want := float64(fast.Logits.Data[v+1] - fast.Logits.Data[v+2]); math.Abs(res.Value-want) > 1e-6 {
		t.Errorf("value %v, want %v", res.Value, want)
	}
	if res.Grads != nil || res.ParamGrads != nil || res.Cache != nil {
		t.Error("unrequested gradients or cache returned")
	}
}

// TestGradConcurrentReadOnly runs Gradients from several goroutines on one
// model (the checkpoint is a read-only mmap: a write into it would fault)
// and checks that the results agree and the parameters are unchanged.
func TestGradConcurrentReadOnly(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	var before []float32
	for _, p := range m.paramList() {
		before = append(before, p.data...)
	}
	opts := GradOptions{RunOptions: RunOptions{Mask: in.PaddedMask}, Want: cacheAll, ParamGrads: true}
	obj := CrossEntropyObjective(NextTokenTargets(in.Padded, in.PaddedMask), nil)
	want := gradRun(t, m, in.Padded, opts, obj)
	errs := make(chan error, 4)
	results := make(chan *GradResult, 4)
	for i := 0; i < 4; i++ {
		go func() {
			res, err := m.Gradients(context.Background(), in.Padded, opts, obj)
			errs <- err
			results <- res
		}()
	}
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		res := <-results
		for name, g := range want.Grads {
			if !slices.Equal(res.Grads[name].Data, g.Data) {
				t.Errorf("concurrent run: %s differs", name)
			}
		}
		for name, g := range want.ParamGrads {
			if maxScaledDiff(res.ParamGrads[name], g) > 1e-6 {
				t.Errorf("concurrent run: gradient of %s differs", name)
			}
		}
	}
	var after []float32
	for _, p := range m.paramList() {
		after = append(after, p.data...)
	}
	if !slices.Equal(before, after) {
		t.Error("Gradients changed the model's parameters")
	}
}

// TestGELUBackwardFromOutput checks the exponential-free GELU derivative
// against the direct formula over the range activations take, including
// saturation and values near zero.
func TestGELUBackwardFromOutput(t *testing.T) {
	var x []float32
	for _, v := range []float32{0, 1e-30, 1e-8, 1e-3, 0.1, 0.5, 1, 2, 3, 5, 8, 12, 30, 100} {
		x = append(x, v, -v)
	}
	y := slices.Clone(x)
	kernels.GELU(y)
	gy := make([]float32, len(x))
	for i := range gy {
		gy[i] = 1
	}
	fast, exact := make([]float32, len(x)), make([]float32, len(x))
	geluTanhBackward(fast, gy, x, y)
	activationBackward(weights.ActivationGELUTanh, exact, gy, x)
	for i := range x {
		if math.Abs(float64(fast[i]-exact[i])) > 2e-6 {
			t.Errorf("gelu'(%v): from output %v, direct %v", x[i], fast[i], exact[i])
		}
	}
}
