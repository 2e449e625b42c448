package sae

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// byteTokenizer maps each byte to its own id and <|endoftext|> to 256, for a
// test model with a vocabulary of 257.
type byteTokenizer struct{}

func (byteTokenizer) Encode(s string) []int {
	out := make([]int, len(s))
	for i := 0; i < len(s); i++ {
		out[i] = int(s[i])
	}
	return out
}

func (byteTokenizer) EOT() int { return 256 }

// tinyModel is a seeded random 2-layer GPT-2 over byteTokenizer's vocabulary.
func tinyModel(t testing.TB, p gpt2.Processing) *gpt2.Model {
	t.Helper()
	cfg := weights.DefaultConfig()
	cfg.VocabSize, cfg.NPositions, cfg.NEmbd, cfg.NLayer, cfg.NHead = 257, 32, 16, 2, 2
	cfg.BOSTokenID, cfg.EOSTokenID = 256, 256
	rng := rand.New(rand.NewPCG(5, 6))
	var params []weights.Tensor
	for _, s := range cfg.ParamSpecs() {
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(rng.NormFloat64() * 0.3)
			if strings.HasSuffix(s.Name, "ln_1.weight") || strings.HasSuffix(s.Name, "ln_2.weight") || s.Name == "ln_f.weight" {
				data[i] += 1
			}
		}
		params = append(params, weights.Tensor{Name: s.Name, Shape: s.Shape, Data: data})
	}
	dir := t.TempDir()
	if err := weights.SaveCheckpoint(dir, cfg, params, weights.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	ck, err := weights.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := gpt2.FromCheckpoint(ck, p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAccumulatorMatchesNumpy(t *testing.T) {
	ref := loadReference(t).Metrics
	a := NewAccumulator(ref.D, 3)
	// Two Add calls: the dataset-level metrics must not depend on batching.
	x, xhat := f32(ref.X), f32(ref.XHat)
	half := 25 * ref.D
	if err := a.Add(x[:half], make([]float32, 25*3), xhat[:half], 25); err != nil {
		t.Fatal(err)
	}
	if err := a.Add(x[half:], make([]float32, 25*3), xhat[half:], 25); err != nil {
		t.Fatal(err)
	}
	m := a.Result()
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"explained variance", m.ExplainedVariance, ref.ExplainedVariance},
		{"explained variance as SAELens' code computes it", m.ExplainedVarianceSAELensCode, ref.ExplainedVarianceCode},
		{"cosine similarity", m.CosSim, ref.Cossim},
		{"mse", m.MSE, ref.MSE},
		{"sum squared error", m.SumSquaredError, ref.SumSqError},
	} {
		if !closeRel(c.got, c.want, 1e-5, 1e-6) {
			t.Errorf("%s = %.8g, numpy %.8g", c.name, c.got, c.want)
		}
	}
	// The legacy value uses each batch's own mean, so it differs from the
	// single-batch numpy number but stays close on this data.
	if math.Abs(m.ExplainedVarianceLegacy-ref.ExplainedVarianceLegacy) > 0.05 {
		t.Errorf("legacy explained variance %.4f, numpy (one batch) %.4f", m.ExplainedVarianceLegacy, ref.ExplainedVarianceLegacy)
	}
	if m.Dead != 3 || m.DensityBelow1e6 != 3 || m.ActiveFeatures.Max != 0 || m.DensityHistogram[0].Count != 3 {
		t.Errorf("density stats of all-zero activations: %+v", m)
	}
}

func TestDensityAndActiveCounts(t *testing.T) {
	// 4 tokens, 5 latents: latent 0 fires on every token, 1 on one, 2-4 never.
	acts := []float32{
		1, 0, 0, 0, 0,
		2, 3, 0, 0, 0,
		1, 0, 0, 0, 0,
		4, 0, 0, 0, 0,
	}
	x := make([]float32, 4)
	a := NewAccumulator(1, 5)
	if err := a.Add(x, acts, x, 4); err != nil {
		t.Fatal(err)
	}
	m := a.Result()
	if m.L0 != 1.25 || m.L1 != 11.0/4 || m.Dead != 3 || m.FeatureDensity[1] != 0.25 {
		t.Errorf("L0 %v L1 %v dead %d density %v", m.L0, m.L1, m.Dead, m.FeatureDensity)
	}
	d := m.ActiveFeatures
	if d.Min != 1 || d.Max != 2 || d.Median != 1 || d.P90 != 2 || d.Mean != 1.25 {
		t.Errorf("active-count distribution %+v", d)
	}
	// Densities 1 and 0.25 fall in the last bins; log10(1e-10) in the first.
	if m.DensityHistogram[19].Count != 1 || m.DensityHistogram[18].Count != 1 || m.DensityHistogram[0].Count != 3 {
		t.Errorf("histogram %+v", m.DensityHistogram)
	}
}

func TestTokenCEAndKLMatchPyTorch(t *testing.T) {
	ref := loadReference(t).KLCE
	shape := []int{1, ref.T, ref.V}
	clean := &gpt2.Activation{Shape: shape, Data: f32(ref.Clean)}
	other := &gpt2.Activation{Shape: shape, Data: f32(ref.New)}
	keep := make([]bool, ref.T)
	for i := range keep {
		keep[i] = true
	}
	tokens := [][]int{ref.Tokens}
	for _, c := range []struct {
		name string
		got  []float64
		want []float64
	}{
		{"CE clean", tokenCE(clean, tokens, keep), ref.CEClean},
		{"CE new", tokenCE(other, tokens, keep), ref.CENew},
		{"KL", tokenKL(clean, other, keep), ref.KL},
	} {
		if len(c.got) != len(c.want) {
			t.Fatalf("%s: %d values, want %d", c.name, len(c.got), len(c.want))
		}
		for i := range c.got {
			if !closeRel(c.got[i], c.want[i], 1e-5, 1e-6) {
				t.Errorf("%s[%d] = %.7g, PyTorch %.7g", c.name, i, c.got[i], c.want[i])
			}
		}
	}
	// An ignored input token drops its position from both.
	keep[1] = false
	if n := len(tokenCE(clean, tokens, keep)); n != ref.T-2 {
		t.Errorf("CE with one ignored position: %d values", n)
	}
}

// identitySAE reconstructs x exactly: acts = [ReLU(x), ReLU(−x)], W_dec = [I; −I].
func identitySAE(d int, hook string) *SAE {
	s := &SAE{Config: Config{Architecture: Standard, DIn: d, DSAE: 2 * d, ApplyBDecToInput: true,
		Normalization: NormNone, Metadata: Metadata{HookName: hook, PrependBOS: true}},
		WEnc: make([]float32, d*2*d), BEnc: make([]float32, 2*d), WDec: make([]float32, 2*d*d), BDec: make([]float32, d)}
	for i := 0; i < d; i++ {
		s.WEnc[i*2*d+i], s.WEnc[i*2*d+d+i] = 1, -1
		s.WDec[i*d+i], s.WDec[(d+i)*d+i] = 1, -1
	}
	return s
}

func TestEvaluateScores(t *testing.T) {
	m := tinyModel(t, gpt2.Processing{})
	var windows [][]int
	text := "the quick brown fox jumps over the lazy dog; "
	for i := 0; i < 5; i++ {
		windows = append(windows, byteTokenizer{}.Encode(text[i:i+15]))
	}
	ctx := context.Background()
	hook := "blocks.1.hook_resid_pre"

	id := identitySAE(16, hook)
	rep, err := Evaluate(ctx, m, id, windows, EvalOptions{PrependBOS: true, Batch: 2, TokenReports: 3, TopFeatures: 4})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Reconstruction
	if r.Tokens != 5*15 { // BOS positions are ignored
		t.Errorf("%d tokens counted, want 75", r.Tokens)
	}
	if math.Abs(r.ExplainedVariance-1) > 1e-5 || math.Abs(r.CosSim-1) > 1e-5 || r.MSE > 1e-8 {
		t.Errorf("identity SAE: EV %v, cos %v, MSE %v", r.ExplainedVariance, r.CosSim, r.MSE)
	}
	if math.Abs(rep.CELossWithSAE-rep.CELossClean) > 1e-4 || math.Abs(rep.CELossScore-1) > 1e-3 ||
		rep.KLWithSAE > 1e-6 || math.Abs(rep.KLScore-1) > 1e-4 {
		t.Errorf("identity SAE: CE clean %v sae %v abl %v score %v; KL sae %v abl %v score %v",
			rep.CELossClean, rep.CELossWithSAE, rep.CELossWithAblation, rep.CELossScore, rep.KLWithSAE, rep.KLWithAblation, rep.KLScore)
	}
	if rep.KLWithAblation <= 0.01 {
		t.Errorf("zero-ablating the residual stream changed the output distribution by KL %v only", rep.KLWithAblation)
	}
	if len(rep.Tokens) != 3 || rep.Tokens[0].Pos != 1 || rep.Tokens[0].Token != int('t') || rep.Tokens[0].Active != 16 || len(rep.Tokens[0].Top) != 4 {
		t.Errorf("token reports %+v", rep.Tokens)
	}
	if !strings.Contains(rep.ProcessingWarning, "does not say") {
		t.Errorf("processing warning %q", rep.ProcessingWarning)
	}

	// An SAE that reconstructs zero is the ablation: both scores 0 when
	// nothing is ignored.
	zero := identitySAE(16, hook)
	clear(zero.WDec)
	rep, err = Evaluate(ctx, m, zero, windows, EvalOptions{PrependBOS: true, IgnoreTokens: []int{}})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(rep.CELossScore) > 1e-4 || math.Abs(rep.KLScore) > 1e-4 {
		t.Errorf("zero SAE: CE score %v, KL score %v", rep.CELossScore, rep.KLScore)
	}
	if rep.Reconstruction.Tokens != 5*16 {
		t.Errorf("%d tokens counted with nothing ignored", rep.Reconstruction.Tokens)
	}

	// hook_z with a head index: the SAE reads and writes one head.
	head := 1
	zsae := identitySAE(8, "blocks.0.attn.hook_z")
	zsae.Config.Metadata.HookHeadIndex = &head
	rep, err = Evaluate(ctx, m, zsae, windows, EvalOptions{PrependBOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(rep.CELossScore-1) > 1e-3 || math.Abs(rep.Reconstruction.ExplainedVariance-1) > 1e-5 {
		t.Errorf("hook_z head 1: CE score %v, EV %v", rep.CELossScore, rep.Reconstruction.ExplainedVariance)
	}

	if _, err := Evaluate(ctx, m, identitySAE(16, "blocks.7.hook_resid_pre"), windows, EvalOptions{}); err == nil {
		t.Error("a hook the model lacks was accepted")
	}
	if _, err := Evaluate(ctx, m, identitySAE(12, hook), windows, EvalOptions{}); err == nil || !strings.Contains(err.Error(), "d_in is 12") {
		t.Errorf("d_in mismatch: %v", err)
	}
}

func TestProcessingWarning(t *testing.T) {
	resJB := Config{RequiresProcessing: Processing{Known: true, CenterWritingWeights: true}}
	cases := []struct {
		cfg   Config
		hook  string
		model gpt2.Processing
		want  string
	}{
		{resJB, "blocks.8.hook_resid_pre", gpt2.TransformerLensProcessing(), ""},
		{resJB, "blocks.8.hook_resid_pre", gpt2.Processing{CenterWritingWeights: true}, ""},
		{resJB, "blocks.8.hook_resid_pre", gpt2.Processing{}, "center_writing_weights=true (model has false)"},
		{resJB, "blocks.8.mlp.hook_post", gpt2.Processing{}, ""},
		{Config{RequiresProcessing: Processing{Known: true}}, "blocks.3.hook_mlp_out", gpt2.TransformerLensProcessing(), "center_writing_weights=false"},
		{Config{RequiresProcessing: Processing{Known: true}}, "blocks.3.attn.hook_z", gpt2.TransformerLensProcessing(), "fold_value_biases=false"},
		{Config{}, "blocks.3.hook_resid_post", gpt2.Processing{}, "does not say"},
		{Config{}, "blocks.3.mlp.hook_pre", gpt2.Processing{}, ""},
	}
	for _, c := range cases {
		got := ProcessingWarning(c.cfg, c.hook, c.model)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s with %v: %q, want %q", c.hook, c.model, got, c.want)
		}
	}
}

func writeCorpus(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	txt := filepath.Join(dir, "a.txt")
	if err := os.WriteFile(txt, []byte(strings.Repeat("First Citizen:\nBefore we proceed any further, hear me speak.\n\n", 4)), 0o644); err != nil {
		t.Fatal(err)
	}
	jl := filepath.Join(dir, "b.jsonl")
	if err := os.WriteFile(jl, []byte(`{"text": "All: Speak, speak."}`+"\n\n"+`{"text": "You are all resolved rather to die than to famish?", "id": 2}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{txt, jl}
}
