package gpt2

// The goldens in testdata/golden were made by an independent float64 PyTorch
// reference of Hugging Face's GPT-2 forward (and of TransformerLens' weight
// processing), with:
//
//	cd gpt2/testdata/golden && /usr/bin/python3 make_goldens.py
//
// Tolerance: every element within 5e-6 scaled by the tensor's largest
// magnitude (at least 1), i.e. |got − want| ≤ 5e-6·max(1, max|want|);
// -Inf (masked scores) must match exactly.

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/factlens/factlens/weights"
)

const goldenTol = 5e-6

var goldenDir = filepath.Join("testdata", "golden")

type goldenInputs struct {
	Batch      [][]int  `json:"batch"`
	Padded     [][]int  `json:"padded"`
	PaddedMask [][]bool `json:"padded_mask"`
	NoMLPLayer int      `json:"nomlp_layer"`
}

func readInputs(t *testing.T) goldenInputs {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(goldenDir, "inputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var in goldenInputs
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatal(err)
	}
	return in
}

// readActs loads acts_<name>.safetensors as activations keyed by tensor name.
func readActs(t *testing.T, name string) map[string]*Activation {
	t.Helper()
	f, err := weights.OpenSafetensors(filepath.Join(goldenDir, "acts_"+name+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	out := map[string]*Activation{}
	for _, info := range f.Tensors() {
		data, err := f.Float32(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		out[info.Name] = &Activation{Name: info.Name, Shape: info.Shape, Data: data}
	}
	return out
}

func openModel(t testing.TB, name string, p Processing) *Model {
	t.Helper()
	ck, err := weights.OpenCheckpoint(filepath.Join(goldenDir, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	m, err := FromCheckpoint(ck, p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func cacheAll(string) bool { return true }

// errStats is the largest absolute and scaled difference of one comparison.
type errStats struct{ abs, scaled float64 }

// compareAct checks got against want with the golden tolerance and returns
// the errors it found.
func compareAct(t *testing.T, label string, got, want *Activation) errStats {
	t.Helper()
	if got == nil {
		t.Errorf("%s: missing", label)
		return errStats{}
	}
	if !equalInts(got.Shape, want.Shape) {
		t.Errorf("%s: shape %v, want %v", label, got.Shape, want.Shape)
		return errStats{}
	}
	maxAbs := 1.0
	for _, w := range want.Data {
		if !math.IsInf(float64(w), 0) {
			maxAbs = max(maxAbs, math.Abs(float64(w)))
		}
	}
	var st errStats
	bad := 0
	for i, w := range want.Data {
		g := got.Data[i]
		if math.IsInf(float64(w), 0) || math.IsInf(float64(g), 0) || math.IsNaN(float64(g)) {
			if g != w {
				if bad++; bad <= 3 {
					t.Errorf("%s[%d] = %v, want %v", label, i, g, w)
				}
			}
			continue
		}
		e := math.Abs(float64(g) - float64(w))
		st.abs = max(st.abs, e)
		st.scaled = max(st.scaled, e/maxAbs)
		if e > goldenTol*maxAbs {
			if bad++; bad <= 3 {
				t.Errorf("%s[%d] = %v, want %v (diff %.3g, allowed %.3g)", label, i, g, w, e, goldenTol*maxAbs)
			}
		}
	}
	return st
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkAgainstGolden compares every golden tensor under prefix ("batch/",
// "tl/", …) with the run's cache and logits.
func checkAgainstGolden(t *testing.T, golden map[string]*Activation, prefix string, res *Result) {
	t.Helper()
	var worst errStats
	worstName := ""
	n := 0
	for key, want := range golden {
		name, ok := strings.CutPrefix(key, prefix)
		if !ok {
			continue
		}
		got := res.Cache[name]
		if name == "logits" {
			got = res.Logits
		}
		st := compareAct(t, key, got, want)
		if st.scaled > worst.scaled {
			worst, worstName = st, key
		}
		n++
	}
	if n == 0 {
		t.Fatalf("no golden tensors under %q", prefix)
	}
	t.Logf("%d tensors under %q: worst scaled error %.2e (abs %.2e) at %s", n, prefix, worst.scaled, worst.abs, worstName)
}

func TestGoldenEveryHook(t *testing.T) {
	in := readInputs(t)
	for _, name := range []string{"tied_f32", "options"} {
		t.Run(name, func(t *testing.T) {
			m := openModel(t, name, Processing{})
			res, err := m.Run(context.Background(), in.Batch, RunOptions{Cache: cacheAll})
			if err != nil {
				t.Fatal(err)
			}
			golden := readActs(t, name)
			checkAgainstGolden(t, golden, "batch/", res)
			if got, want := len(res.Cache), len(m.HookNames()); got != want {
				t.Errorf("cache has %d entries, want every hook point (%d)", got, want)
			}
		})
	}
}

// TestGoldenLoaderVariants runs checkpoints stored with a name prefix and an
// untied lm_head, as F16, as BF16 and sharded.
func TestGoldenLoaderVariants(t *testing.T) {
	in := readInputs(t)
	for _, name := range []string{"prefixed_untied", "f16", "bf16", "sharded"} {
		t.Run(name, func(t *testing.T) {
			m := openModel(t, name, Processing{})
			res, err := m.Run(context.Background(), in.Batch, RunOptions{Cache: HookGlob("blocks.*.hook_resid_post")})
			if err != nil {
				t.Fatal(err)
			}
			c, err := m.Run(context.Background(), in.Batch, RunOptions{Cache: HookName("hook_embed"), Logits: LogitsNone})
			if err != nil {
				t.Fatal(err)
			}
			res.Cache["hook_embed"] = c.Cache["hook_embed"]
			checkAgainstGolden(t, readActs(t, name), "batch/", res)
		})
	}
}

func TestGoldenLeftPadded(t *testing.T) {
	in := readInputs(t)
	m := openModel(t, "tied_f32", Processing{})
	res, err := m.Run(context.Background(), in.Padded, RunOptions{Cache: cacheAll, Mask: in.PaddedMask})
	if err != nil {
		t.Fatal(err)
	}
	checkAgainstGolden(t, readActs(t, "tied_f32"), "padded/", res)

	// The real tokens of the padded row equal that row run alone.
	first := 0
	for !in.PaddedMask[0][first] {
		first++
	}
	alone, err := m.Run(context.Background(), [][]int{in.Padded[0][first:]}, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v := m.VocabSize()
	for p := first; p < len(in.Padded[0]); p++ {
		got := res.Logits.At(0, p)
		want := alone.Logits.Data[(p-first)*v : (p-first+1)*v]
		for i := range got {
			if math.Abs(float64(got[i]-want[i])) > 1e-5 {
				t.Fatalf("padded row position %d logit %d = %v, alone %v", p, i, got[i], want[i])
			}
		}
	}
}

func TestGoldenTransformerLensProcessing(t *testing.T) {
	in := readInputs(t)
	m := openModel(t, "tied_f32", TransformerLensProcessing())
	res, err := m.Run(context.Background(), in.Batch, RunOptions{Cache: cacheAll})
	if err != nil {
		t.Fatal(err)
	}
	checkAgainstGolden(t, readActs(t, "tied_f32"), "tl/", res)
}

// TestZeroAblateMLPOut checks that zero-ablating blocks.L.hook_mlp_out equals
// the reference forward with that MLP removed.
func TestZeroAblateMLPOut(t *testing.T) {
	in := readInputs(t)
	m := openModel(t, "tied_f32", Processing{})
	name := "blocks.0.hook_mlp_out"
	res, err := m.Run(context.Background(), in.Batch, RunOptions{
		Hooks: []Hook{ZeroAblate(HookName(name))},
		Cache: func(n string) bool { return n != name }, // the golden holds the un-ablated mlp_out
	})
	if err != nil {
		t.Fatal(err)
	}
	checkAgainstGolden(t, withoutKey(readActs(t, "tied_f32"), "nomlp0/"+name), "nomlp0/", res)
}

func withoutKey(m map[string]*Activation, key string) map[string]*Activation {
	delete(m, key)
	return m
}
