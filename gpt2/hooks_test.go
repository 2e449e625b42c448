package gpt2

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestHookNames(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	names := m.HookNames()
	if want := 2 + 18*m.NLayer() + 2; len(names) != want {
		t.Fatalf("%d hook names, want %d", len(names), want)
	}
	wantOrder := []string{
		"hook_embed", "hook_pos_embed",
		"blocks.0.hook_resid_pre", "blocks.0.ln1.hook_scale", "blocks.0.ln1.hook_normalized",
		"blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v",
		"blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z",
		"blocks.0.attn.hook_result", "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid",
		"blocks.0.ln2.hook_scale", "blocks.0.ln2.hook_normalized", "blocks.0.mlp.hook_pre",
		"blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post",
		"blocks.1.hook_resid_pre",
	}
	if !slices.Equal(names[:len(wantOrder)], wantOrder) {
		t.Errorf("hook names start %q,\nwant %q", names[:len(wantOrder)], wantOrder)
	}
	if tail := names[len(names)-2:]; !slices.Equal(tail, []string{"ln_final.hook_scale", "ln_final.hook_normalized"}) {
		t.Errorf("hook names end %q", tail)
	}
	names[0] = "changed"
	if m.HookNames()[0] != "hook_embed" {
		t.Error("HookNames returned the model's own slice")
	}
}

func TestCheckHookName(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	for _, tc := range []struct{ name, suggest string }{
		{"blocks.1.mlp.hook_post", ""},
		{"blocks.1.mlp.hook_pst", `"blocks.1.mlp.hook_post"`},
		{"hook_embd", `"hook_embed"`},
		{"blocks.0.attn.hook_scores", `"blocks.0.attn.hook_attn_scores"`},
		{"blocks.7.hook_resid_pre", "did you mean"},
		{"ln_f.hook_normalized", `"ln_final.hook_normalized"`},
	} {
		err := m.CheckHookName(tc.name)
		if tc.suggest == "" {
			if err != nil {
				t.Errorf("CheckHookName(%q) = %v, want nil", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.suggest) {
			t.Errorf("CheckHookName(%q) = %v, want an error suggesting %s", tc.name, err, tc.suggest)
		}
	}
}

func TestHookGlob(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	var got []string
	for _, n := range m.HookNames() {
		if HookGlob("blocks.*.mlp.hook_post")(n) {
			got = append(got, n)
		}
	}
	if want := []string{"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"}; !slices.Equal(got, want) {
		t.Errorf("glob matched %q, want %q", got, want)
	}
	if _, err := CompileHookGlob("blocks.[.hook_z"); err == nil {
		t.Error("CompileHookGlob accepted a malformed pattern")
	}
	in := readInputs(t)
	_, err := m.Run(context.Background(), in.Batch, RunOptions{Hooks: []Hook{ZeroAblate(HookGlob("blocks.[.hook_z"))}})
	if err == nil || !strings.Contains(err.Error(), "matches no hook point") {
		t.Errorf("malformed glob hook: err = %v, want 'matches no hook point'", err)
	}
	_, err = m.Run(context.Background(), in.Batch, RunOptions{Hooks: []Hook{ZeroAblate(HookName("blocks.0.mlp.hook_pst"))}})
	if err == nil {
		t.Error("a hook matching no hook point ran silently")
	}
	_, err = m.Run(context.Background(), in.Batch, RunOptions{Cache: HookName("blocks.9.hook_resid_pre")})
	if err == nil {
		t.Error("a cache selection matching no hook point ran silently")
	}
}

func mustRun(t *testing.T, m *Model, tokens [][]int, opts RunOptions) *Result {
	t.Helper()
	res, err := m.Run(context.Background(), tokens, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestIdentityPatch patches every hook point with its own clean value: the
// result must not change. A hook on hook_result makes attn_out a sum over
// heads instead of one matrix product, which rounds differently; every other
// hook point must be bit-identical.
func TestIdentityPatch(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	clean := mustRun(t, m, in.Batch, RunOptions{})
	notResult := func(n string) bool { return !strings.HasSuffix(n, "hook_result") }
	cache := mustRun(t, m, in.Batch, RunOptions{Cache: cacheAll, Logits: LogitsNone}).Cache
	noop := Hook{Match: cacheAll, Fn: func(*Activation) error { return nil }}
	patched := mustRun(t, m, in.Batch, RunOptions{Hooks: []Hook{PatchFrom(cache, notResult), noop}})
	if !slices.Equal(patched.Logits.Data, clean.Logits.Data) {
		t.Error("identity patch of every hook point but hook_result changed the logits")
	}

	withResult := mustRun(t, m, in.Batch, RunOptions{Hooks: []Hook{PatchFrom(cache, cacheAll)}})
	if d := maxScaledDiff(withResult.Logits.Data, clean.Logits.Data); d > 1e-6 {
		t.Errorf("identity patch including hook_result moved logits by %.3g (scaled)", d)
	}
}

// maxScaledDiff is max|a−b| / max(1, max|b|).
func maxScaledDiff(a, b []float32) float64 {
	scale, d := 1.0, 0.0
	for i := range b {
		scale = max(scale, math.Abs(float64(b[i])))
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d / scale
}

// TestPatchResidPrePosition patches one position of blocks.1.hook_resid_pre
// from a second prompt: earlier positions must not change at all, that
// position and later ones must.
func TestPatchResidPrePosition(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	a, b := in.Batch[:1], in.Batch[1:]
	const pos = 3
	name := "blocks.1.hook_resid_pre"
	source := mustRun(t, m, b, RunOptions{Cache: HookName(name), Logits: LogitsNone}).Cache
	clean := mustRun(t, m, a, RunOptions{Cache: cacheAll})
	patched := mustRun(t, m, a, RunOptions{Cache: cacheAll, Hooks: []Hook{PatchFrom(source, HookName(name), pos)}})

	if got, want := patched.Cache[name].At(0, pos), source[name].At(0, pos); !slices.Equal(got, want) {
		t.Errorf("%s at %d was not replaced", name, pos)
	}
	p := len(a[0])
	v := m.VocabSize()
	for q := 0; q < p; q++ {
		same := slices.Equal(patched.Logits.Data[q*v:(q+1)*v], clean.Logits.Data[q*v:(q+1)*v])
		if q < pos && !same {
			t.Errorf("logits at position %d < %d changed", q, pos)
		}
		if q >= pos && same {
			t.Errorf("logits at position %d ≥ %d did not change", q, pos)
		}
	}
	for _, n := range []string{"blocks.1.attn.hook_pattern", "blocks.1.hook_resid_post", "blocks.1.mlp.hook_post"} {
		for q := 0; q < pos; q++ {
			var g, w []float32
			if strings.HasSuffix(n, "pattern") {
				for h := 0; h < m.NHead(); h++ {
					g = append(g, patched.Cache[n].At(0, h, q)...)
					w = append(w, clean.Cache[n].At(0, h, q)...)
				}
			} else {
				g, w = patched.Cache[n].At(0, q), clean.Cache[n].At(0, q)
			}
			if !slices.Equal(g, w) {
				t.Errorf("%s at position %d < %d changed", n, q, pos)
			}
		}
	}
}

// TestPatchPropagates checks that a change made at a hook point reaches the
// computation that reads it.
func TestPatchPropagates(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	clean := mustRun(t, m, in.Batch, RunOptions{Cache: cacheAll})
	p, h, dh, d := len(in.Batch[0]), m.NHead(), m.DHead(), m.DModel()
	scaleBy := func(f float32) func(a *Activation) error {
		return func(a *Activation) error {
			for i := range a.Data {
				a.Data[i] *= f
			}
			return nil
		}
	}
	for _, tc := range []struct {
		name  string
		hook  Hook
		check func(t *testing.T, res *Result)
	}{
		{"q doubles the scores", Hook{HookName("blocks.0.attn.hook_q"), scaleBy(2)}, func(t *testing.T, res *Result) {
			got, want := res.Cache["blocks.0.attn.hook_attn_scores"].Data, clean.Cache["blocks.0.attn.hook_attn_scores"].Data
			for i := range want {
				if math.IsInf(float64(want[i]), -1) != math.IsInf(float64(got[i]), -1) ||
					!math.IsInf(float64(want[i]), -1) && !closeTo(got[i], 2*want[i], 1e-5) {
					t.Fatalf("scores[%d] = %v, want 2·%v", i, got[i], want[i])
				}
			}
		}},
		{"scores set to zero give a uniform pattern over all keys", Hook{HookName("blocks.1.attn.hook_attn_scores"), func(a *Activation) error {
			clear(a.Data) // unmasks the future too
			return nil
		}}, func(t *testing.T, res *Result) {
			for i, v := range res.Cache["blocks.1.attn.hook_pattern"].Data {
				if !closeTo(v, 1/float32(p), 1e-6) {
					t.Fatalf("pattern[%d] = %v, want 1/%d", i, v, p)
				}
			}
		}},
		{"a uniform pattern averages every value", Hook{HookName("blocks.0.attn.hook_pattern"), func(a *Activation) error {
			for i := range a.Data {
				a.Data[i] = 1 / float32(p)
			}
			return nil
		}}, func(t *testing.T, res *Result) {
			v, z := clean.Cache["blocks.0.attn.hook_v"], res.Cache["blocks.0.attn.hook_z"]
			for b := range in.Batch {
				for hi := 0; hi < h; hi++ {
					for e := 0; e < dh; e++ {
						var mean float32
						for k := 0; k < p; k++ {
							mean += v.At(b, k, hi)[e] / float32(p)
						}
						for q := 0; q < p; q++ {
							if got := z.At(b, q, hi)[e]; !closeTo(got, mean, 1e-5) {
								t.Fatalf("z[%d,%d,%d,%d] = %v, want mean of v %v", b, q, hi, e, got, mean)
							}
						}
					}
				}
			}
		}},
		{"zeroing head 0's result removes it from attn_out", Hook{HookName("blocks.1.attn.hook_result"), func(a *Activation) error {
			for b := 0; b < a.Shape[0]; b++ {
				for q := 0; q < a.Shape[1]; q++ {
					clear(a.At(b, q, 0))
				}
			}
			return nil
		}}, func(t *testing.T, res *Result) {
			bO, err := m.Weight("h.1.attn.c_proj.bias")
			if err != nil {
				t.Fatal(err)
			}
			result, out := clean.Cache["blocks.1.attn.hook_result"], res.Cache["blocks.1.hook_attn_out"]
			for b := range in.Batch {
				for q := 0; q < p; q++ {
					for j := 0; j < d; j++ {
						want := bO.Data[j]
						for hi := 1; hi < h; hi++ {
							want += result.At(b, q, hi)[j]
						}
						if got := out.At(b, q)[j]; !closeTo(got, want, 1e-5) {
							t.Fatalf("attn_out[%d,%d,%d] = %v, want %v", b, q, j, got, want)
						}
					}
				}
			}
		}},
		{"doubling ln1's scale halves the normalized vector", Hook{HookName("blocks.1.ln1.hook_scale"), scaleBy(2)}, func(t *testing.T, res *Result) {
			bias, err := m.Weight("h.1.ln_1.bias")
			if err != nil {
				t.Fatal(err)
			}
			got, want := res.Cache["blocks.1.ln1.hook_normalized"], clean.Cache["blocks.1.ln1.hook_normalized"]
			for i, w := range want.Data {
				b := bias.Data[i%d]
				if !closeTo(got.Data[i]-b, (w-b)/2, 1e-5) {
					t.Fatalf("normalized[%d] = %v, want (%v−b)/2+b", i, got.Data[i], w)
				}
			}
		}},
		{"zero final normalized vector gives zero logits", Hook{HookName("ln_final.hook_normalized"), scaleBy(0)}, func(t *testing.T, res *Result) {
			for i, v := range res.Logits.Data {
				if v != 0 {
					t.Fatalf("logits[%d] = %v, want 0 (no unembedding bias in raw GPT-2)", i, v)
				}
			}
		}},
		{"mlp.hook_pre feeds mlp.hook_post", Hook{HookName("blocks.0.mlp.hook_pre"), scaleBy(0)}, func(t *testing.T, res *Result) {
			for i, v := range res.Cache["blocks.0.mlp.hook_post"].Data {
				if v != 0 {
					t.Fatalf("post[%d] = %v, want gelu(0) = 0", i, v)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := mustRun(t, m, in.Batch, RunOptions{Cache: cacheAll, Hooks: []Hook{tc.hook}})
			if slices.Equal(res.Logits.Data, clean.Logits.Data) {
				t.Error("the patch did not change the logits")
			}
			tc.check(t, res)
		})
	}
}

func closeTo(got, want, tol float32) bool {
	return float32(math.Abs(float64(got-want))) <= tol*max(1, float32(math.Abs(float64(want))))
}

func TestHookErrorAborts(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	boom := errors.New("boom")
	var after []string
	_, err := m.Run(context.Background(), in.Batch, RunOptions{Hooks: []Hook{
		{HookName("blocks.0.hook_resid_mid"), func(*Activation) error { return boom }},
		{HookGlob("blocks.1.*"), func(a *Activation) error { after = append(after, a.Name); return nil }},
	}})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "blocks.0.hook_resid_mid") {
		t.Errorf("err = %v, want boom at blocks.0.hook_resid_mid", err)
	}
	if len(after) > 0 {
		t.Errorf("hooks after the failing one ran: %q", after)
	}

	_, err = m.Run(context.Background(), in.Batch, RunOptions{Hooks: []Hook{
		{HookName("hook_embed"), func(a *Activation) error { a.Data = make([]float32, len(a.Data)); return nil }},
	}})
	if err == nil {
		t.Error("a hook replacing Data instead of writing into it was not reported")
	}
}

func TestPatchHelpers(t *testing.T) {
	mk := func(name string, shape ...int) *Activation {
		a := &Activation{Name: name, Shape: shape, Data: make([]float32, product(shape))}
		for i := range a.Data {
			a.Data[i] = float32(i)
		}
		return a
	}
	t.Run("MeanAblate broadcasts over leading dims", func(t *testing.T) {
		a := mk("blocks.0.mlp.hook_post", 2, 3, 4)
		mean := &Activation{Shape: []int{4}, Data: []float32{1, 2, 3, 4}}
		if err := MeanAblate(cacheAll, mean).Fn(a); err != nil {
			t.Fatal(err)
		}
		for i, v := range a.Data {
			if v != float32(i%4+1) {
				t.Fatalf("data[%d] = %v", i, v)
			}
		}
		if err := MeanAblate(cacheAll, &Activation{Shape: []int{3}, Data: make([]float32, 3)}).Fn(a); err == nil {
			t.Error("mismatched mean accepted")
		}
	})
	t.Run("PatchFrom batch-1 source, negative position", func(t *testing.T) {
		a := mk("blocks.0.hook_resid_pre", 2, 3, 2)
		src := &Activation{Shape: []int{1, 3, 2}, Data: []float32{-1, -2, -3, -4, -5, -6}}
		if err := PatchFrom(map[string]*Activation{a.Name: src}, cacheAll, -1).Fn(a); err != nil {
			t.Fatal(err)
		}
		want := []float32{0, 1, 2, 3, -5, -6, 6, 7, 8, 9, -5, -6}
		if !slices.Equal(a.Data, want) {
			t.Errorf("got %v, want %v", a.Data, want)
		}
		if err := PatchFrom(map[string]*Activation{}, cacheAll).Fn(a); err == nil {
			t.Error("missing source accepted")
		}
		if err := PatchFrom(map[string]*Activation{a.Name: src}, cacheAll, 3).Fn(a); err == nil {
			t.Error("out-of-range position accepted")
		}
	})
	t.Run("PatchFrom pattern patches query rows", func(t *testing.T) {
		a := mk("blocks.0.attn.hook_pattern", 1, 2, 2, 2)
		src := &Activation{Shape: []int{1, 2, 2, 2}, Data: make([]float32, 8)}
		if err := PatchFrom(map[string]*Activation{a.Name: src}, cacheAll, 1).Fn(a); err != nil {
			t.Fatal(err)
		}
		if want := []float32{0, 1, 0, 0, 4, 5, 0, 0}; !slices.Equal(a.Data, want) {
			t.Errorf("got %v, want %v", a.Data, want)
		}
	})
	t.Run("AddDirection", func(t *testing.T) {
		a := mk("blocks.0.hook_resid_post", 1, 2, 2)
		if err := AddDirection(cacheAll, []float32{1, -1}, 10, 0).Fn(a); err != nil {
			t.Fatal(err)
		}
		if want := []float32{10, -9, 2, 3}; !slices.Equal(a.Data, want) {
			t.Errorf("got %v, want %v", a.Data, want)
		}
		if err := AddDirection(cacheAll, []float32{1}, 1).Fn(a); err == nil {
			t.Error("wrong-size direction accepted")
		}
	})
	t.Run("ResampleAblate is seeded", func(t *testing.T) {
		src := mk("blocks.0.hook_z", 5, 2, 1, 1)
		run := func() []float32 {
			a := mk("blocks.0.hook_z", 3, 2, 1, 1)
			h := ResampleAblate(cacheAll, map[string]*Activation{a.Name: src}, rand.New(rand.NewPCG(7, 8)))
			if err := h.Fn(a); err != nil {
				t.Fatal(err)
			}
			return a.Data
		}
		first := run()
		if !slices.Equal(first, run()) {
			t.Error("same seed gave different draws")
		}
		for b := 0; b < 3; b++ {
			row := first[2*b : 2*b+2]
			if row[0] != row[1]-1 || int(row[0])%2 != 0 {
				t.Errorf("row %d = %v is not a source row", b, row)
			}
		}
	})
}

// TestSteeringEndToEnd adds a direction to the residual stream at the last
// position only and checks only that position's logits move.
func TestSteeringEndToEnd(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	dir := make([]float32, m.DModel())
	dir[3] = 1
	clean := mustRun(t, m, in.Batch, RunOptions{})
	steered := mustRun(t, m, in.Batch, RunOptions{Hooks: []Hook{AddDirection(HookName("blocks.1.hook_resid_pre"), dir, 5, -1)}})
	p := len(in.Batch[0])
	for b := range in.Batch {
		for q := 0; q < p; q++ {
			same := slices.Equal(steered.Logits.At(b, q), clean.Logits.At(b, q))
			if same != (q < p-1) {
				t.Errorf("row %d position %d: changed = %v", b, q, !same)
			}
		}
	}
}
