package gpt2

import (
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/factlens/factlens/weights"
)

func TestProcessingString(t *testing.T) {
	for _, tc := range []struct {
		p    Processing
		want string
	}{
		{Processing{}, "raw Hugging Face"},
		{TransformerLensProcessing(), "TransformerLens (fold_ln, center_writing_weights, center_unembed, fold_value_biases)"},
		{Processing{CenterWritingWeights: true}, "TransformerLens (center_writing_weights)"},
		{Processing{FoldLN: true, FoldValueBiases: true}, "TransformerLens (fold_ln, fold_value_biases)"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.p, got, tc.want)
		}
	}
}

// logSoftmax returns log-probabilities of each row of v values.
func logSoftmax(logits []float32, v int) []float64 {
	out := make([]float64, len(logits))
	for off := 0; off < len(logits); off += v {
		row := logits[off : off+v]
		m := float64(slices.Max(row))
		var s float64
		for _, x := range row {
			s += math.Exp(float64(x) - m)
		}
		for i, x := range row {
			out[off+i] = float64(x) - m - math.Log(s)
		}
	}
	return out
}

// minusRowMean returns a with the mean of each row of n values subtracted.
func minusRowMean(a []float32, n int) []float32 {
	out := make([]float32, len(a))
	for off := 0; off < len(a); off += n {
		var mean float64
		for _, x := range a[off : off+n] {
			mean += float64(x)
		}
		mean /= float64(n)
		for i, x := range a[off : off+n] {
			out[off+i] = float32(float64(x) - mean)
		}
	}
	return out
}

// TestProcessedRelations checks the relations TransformerLens' processing
// guarantees between a processed and the raw model on the same tokens.
func TestProcessedRelations(t *testing.T) {
	in := readInputs(t)
	raw := mustRun(t, openModel(t, "tied_f32", Processing{}), in.Batch, RunOptions{Cache: cacheAll})
	const tol = 2e-5 // scaled, as in the golden tests; both sides round in float32
	for _, p := range []Processing{
		TransformerLensProcessing(),
		{FoldLN: true}, {CenterWritingWeights: true}, {CenterUnembed: true}, {FoldValueBiases: true},
	} {
		t.Run(p.String(), func(t *testing.T) {
			m := openModel(t, "tied_f32", p)
			if m.Processing != p {
				t.Errorf("Model.Processing = %v, want %v", m.Processing, p)
			}
			res := mustRun(t, m, in.Batch, RunOptions{Cache: cacheAll})
			v, d := m.VocabSize(), m.DModel()
			check := func(what string, got, want []float32) {
				t.Helper()
				if diff := maxScaledDiff(got, want); diff > tol {
					t.Errorf("%s: differs by %.3g (scaled)", what, diff)
				}
			}
			lpGot, lpWant := logSoftmax(res.Logits.Data, v), logSoftmax(raw.Logits.Data, v)
			for i := range lpWant {
				if math.Abs(lpGot[i]-lpWant[i]) > tol*max(1, math.Abs(lpWant[i])) {
					t.Fatalf("log-prob %d = %v, raw %v", i, lpGot[i], lpWant[i])
				}
			}
			wantLogits := raw.Logits.Data
			if p.CenterUnembed {
				wantLogits = minusRowMean(wantLogits, v)
			}
			check("logits", res.Logits.Data, wantLogits)
			for _, name := range m.HookNames() {
				got, want := res.Cache[name].Data, raw.Cache[name].Data
				short := name[strings.LastIndex(name, ".")+1:]
				switch {
				case short == "hook_normalized" && p.FoldLN:
					continue // LayerNormPre: no weight and bias
				case p.FoldValueBiases && (short == "hook_v" || short == "hook_z" || short == "hook_result"):
					continue
				case p.CenterWritingWeights && (strings.Contains(short, "resid") || short == "hook_embed" ||
					short == "hook_pos_embed" || short == "hook_attn_out" || short == "hook_mlp_out" ||
					short == "hook_result"): // each head's output too, per token and head
					want = minusRowMean(want, d)
				}
				check(name, got, want)
			}
		})
	}
}

// TestProcessingLeavesCheckpointAlone checks that weight processing writes
// into copies: an F16 checkpoint's converted (writable) buffers keep their
// values, and F32 ones are read-only mappings that a write would crash on.
func TestProcessingLeavesCheckpointAlone(t *testing.T) {
	for _, name := range []string{"f16", "tied_f32"} {
		ck, err := weights.OpenCheckpoint(filepath.Join(goldenDir, name))
		if err != nil {
			t.Fatal(err)
		}
		before := map[string][]float32{}
		for n, p := range ck.Params {
			before[n] = slices.Clone(p.Data)
		}
		if _, err := FromCheckpoint(ck, TransformerLensProcessing()); err != nil {
			t.Fatal(err)
		}
		for n, p := range ck.Params {
			if !slices.Equal(p.Data, before[n]) {
				t.Errorf("%s: processing changed checkpoint tensor %s", name, n)
			}
		}
		ck.Close()
	}
}

func TestWeight(t *testing.T) {
	raw := openModel(t, "tied_f32", Processing{})
	tl := openModel(t, "tied_f32", TransformerLensProcessing())
	wte, err := raw.Weight("wte.weight")
	if err != nil {
		t.Fatal(err)
	}
	u, err := raw.Weight("lm_head.weight")
	if err != nil || !slices.Equal(u.Data, wte.Data) || !slices.Equal(u.Shape, []int{97, 32}) {
		t.Errorf("raw tied lm_head.weight: %v, %v", u, err)
	}
	if _, err := raw.Weight("lm_head.bias"); err == nil {
		t.Error("raw model has an unembedding bias")
	}
	if b, err := tl.Weight("lm_head.bias"); err != nil || len(b.Data) != 97 {
		t.Errorf("processed model's lm_head.bias: %v", err)
	}
	if _, err := tl.Weight("h.1.ln_2.weight"); err == nil || !strings.Contains(err.Error(), "fold_ln") {
		t.Errorf("folded ln weight: err = %v", err)
	}
	w, err := tl.Weight("h.1.mlp.c_fc.weight")
	if err != nil || !slices.Equal(w.Shape, []int{32, 128}) || w.Name != "h.1.mlp.c_fc.weight" {
		t.Errorf("h.1.mlp.c_fc.weight: %v %v", w, err)
	}
	for _, bad := range []string{"h.2.ln_1.weight", "h.01.ln_1.weight", "h.0.attn.bias", "nope"} {
		if _, err := raw.Weight(bad); err == nil {
			t.Errorf("Weight(%q) succeeded", bad)
		}
	}
}

func TestFromCheckpointRejects(t *testing.T) {
	ck, err := weights.OpenCheckpoint(filepath.Join(goldenDir, "tied_f32"))
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if _, err := FromCheckpoint(nil, Processing{}); err == nil {
		t.Error("nil checkpoint accepted")
	}
	broken := &weights.Checkpoint{Config: ck.Config, Params: map[string]*weights.Param{}}
	for n, p := range ck.Params {
		broken.Params[n] = p
	}
	delete(broken.Params, "h.1.mlp.c_fc.bias")
	short := *ck.Params["h.0.attn.c_proj.weight"]
	short.Shape = []int{32, 31}
	broken.Params["h.0.attn.c_proj.weight"] = &short
	_, err = FromCheckpoint(broken, Processing{})
	if err == nil || !strings.Contains(err.Error(), "h.1.mlp.c_fc.bias: missing") || !strings.Contains(err.Error(), "h.0.attn.c_proj.weight: shape [32 31]") {
		t.Errorf("err = %v, want both problems named", err)
	}
	cfg := *ck.Config
	cfg.ActivationFunction = "swish"
	if _, err := FromCheckpoint(&weights.Checkpoint{Config: &cfg, Params: ck.Params}, Processing{}); err == nil {
		t.Error("unsupported activation accepted")
	}
}
