package sae

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/factlens/factlens/gpt2/kernels"
)

// TestSyntheticRecovery trains on 512 ground-truth unit directions in 64
// dimensions, 5 active per row, and checks that the decoder recovers them.
func TestSyntheticRecovery(t *testing.T) {
	cases := []struct {
		name    string
		arch    Architecture
		steps   int
		l1      float64
		maxL0   float64
		minFrac float64
	}{
		// TopK with k = 5 has L0 ≤ 5 by construction.
		{"topk", TopK, 300, 0, 5, 0.95},
		// The L1 penalty leaves a few small extra activations per row.
		{"standard", Standard, 400, 1.0, 15, 0.95},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, err := NewSyntheticSource(64, 512, 5, 7)
			if err != nil {
				t.Fatal(err)
			}
			cfg := DefaultTrainConfig(c.arch, 64, 1024, 5)
			cfg.BatchSize, cfg.Steps, cfg.LR = 1024, c.steps, 8e-3
			cfg.L1Coefficient, cfg.L1WarmUpSteps = c.l1, 100
			cfg.DeadFeatureWindow = 50
			cfg.LogEvery = 50
			s, tr, err := Train(context.Background(), cfg, src)
			if err != nil {
				t.Fatal(err)
			}
			best, frac := src.Recovery(s, 0.9)
			last := tr.History[len(tr.History)-1]
			t.Logf("recovered %.1f%% of 512 features (median best cosine %.3f), L0 %.2f, batch EV %.3f",
				100*frac, median(best), last.L0, last.ExplainedVariance)
			if frac < c.minFrac {
				t.Errorf("recovered %.3f of the features with cosine > 0.9, want ≥ %.2f", frac, c.minFrac)
			}
			if last.L0 > c.maxL0 || last.L0 < 4 {
				t.Errorf("L0 %.2f, want in [4, %g]", last.L0, c.maxL0)
			}
			if c.arch == TopK {
				for j := 0; j < 1024; j += 97 {
					row := s.WDec[j*64 : (j+1)*64]
					if n := math.Sqrt(float64(kernels.Dot(row, row))); math.Abs(n-1) > 1e-4 {
						t.Errorf("decoder row %d has norm %v, want 1", j, n)
					}
				}
			}
		})
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// cancelAfter cancels a context once its source has served n batches.
type cancelAfter struct {
	*SyntheticSource
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Next(ctx context.Context, dst []float32) error {
	c.n--
	if c.n < 0 {
		c.cancel()
	}
	return c.SyntheticSource.Next(ctx, dst)
}

func smallTrainConfig(dir string) TrainConfig {
	cfg := DefaultTrainConfig(TopK, 16, 64, 3)
	cfg.BatchSize, cfg.Steps, cfg.LR = 64, 40, 3e-3
	cfg.LRWarmUpSteps, cfg.LRDecaySteps = 5, 10
	cfg.DeadFeatureWindow, cfg.FeatureSamplingWindow = 4, 15
	cfg.NormalizeActivations, cfg.NormEstimateBatches = NormExpectedAverageOnlyIn, 3
	cfg.CheckpointDir, cfg.CheckpointEvery = dir, 10
	cfg.Metadata = Metadata{ModelName: "synthetic", HookName: "blocks.0.hook_resid_pre", ContextSize: 8, PrependBOS: true}
	cfg.LogEvery = 5
	cfg.Seed = 3
	return cfg
}

// TestResumeIsExact interrupts a run by cancelling its context, checks that
// the last checkpoint is intact, resumes, and compares with an uninterrupted
// run bit for bit.
func TestResumeIsExact(t *testing.T) {
	newSrc := func() *SyntheticSource {
		s, err := NewSyntheticSource(16, 40, 3, 11)
		if err != nil {
			t.Fatal(err)
		}
		// Scale the data so that normalization has something to do.
		s.MinMag, s.MaxMag = 5, 20
		return s
	}
	want, wantTr, err := Train(context.Background(), smallTrainConfig(t.TempDir()), newSrc())
	if err != nil {
		t.Fatal(err)
	}
	if f := wantTr.NormFactor(); !(f > 0 && f < 0.5) {
		t.Fatalf("norm factor %v: data of norm ~20 in 16 dims should give ~0.2", f)
	}

	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// 3 batches estimate the norm, then the run is cancelled during step 26.
	src := &cancelAfter{SyntheticSource: newSrc(), n: 3 + 25, cancel: cancel}
	if _, _, err := Train(ctx, smallTrainConfig(dir), src); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run returned %v", err)
	}
	ck, err := LatestCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(ck) != "step_000000020" {
		t.Errorf("latest checkpoint %s, want step_000000020", ck)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Errorf("leftover temporary %s", e.Name())
		}
	}
	// The checkpoint is an SAELens folder in its own right.
	mid, err := Load(ck)
	if err != nil {
		t.Fatal(err)
	}
	if mid.Config.Normalization != NormNone || mid.Config.Metadata.HookName != "blocks.0.hook_resid_pre" {
		t.Errorf("checkpoint cfg: normalization %q, hook %q", mid.Config.Normalization, mid.Config.Metadata.HookName)
	}

	tr, err := ResumeTrainer(dir, ResumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Step() != 20 {
		t.Fatalf("resumed at step %d", tr.Step())
	}
	got, err := tr.Run(context.Background(), newSrc())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		name      string
		got, want []float32
	}{{"W_enc", got.WEnc, want.WEnc}, {"b_enc", got.BEnc, want.BEnc}, {"W_dec", got.WDec, want.WDec},
		{"b_dec", got.BDec, want.BDec}, {"log sparsity", got.LogSparsity, want.LogSparsity}} {
		if !slices.Equal(p.got, p.want) {
			t.Errorf("%s differs between the resumed and the uninterrupted run", p.name)
		}
	}
	if len(tr.History) != len(wantTr.History) || tr.History[len(tr.History)-1].Loss != wantTr.History[len(wantTr.History)-1].Loss {
		t.Errorf("history differs: %d vs %d entries", len(tr.History), len(wantTr.History))
	}
	// The final checkpoint is step 40 and two are kept.
	if ck, _ := LatestCheckpoint(dir); filepath.Base(ck) != "step_000000040" {
		t.Errorf("final checkpoint %s", ck)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "step_*"))
	if len(matches) != 2 {
		t.Errorf("%d checkpoints kept, want 2: %v", len(matches), matches)
	}
}

// TestFoldNormScalingFactor checks that folding f into the weights gives on
// raw x what the unfolded SAE gives on f·x, with the reconstruction unscaled.
func TestFoldNormScalingFactor(t *testing.T) {
	ref := loadReference(t)
	c := ref.Loss[2] // topk
	s := c.sae()
	x := f32(c.X)
	const f = 0.37
	xs := slices.Clone(x)
	for i := range xs {
		xs[i] *= f
	}
	wantActs, wantOut, err := s.Reconstruct(xs, c.N)
	if err != nil {
		t.Fatal(err)
	}
	folded := c.sae()
	folded.FoldNormScalingFactor(f)
	acts, out, err := folded.Reconstruct(x, c.N)
	if err != nil {
		t.Fatal(err)
	}
	for i := range acts {
		if math.Abs(float64(acts[i]-wantActs[i])) > 1e-4 {
			t.Fatalf("acts[%d] = %v, want %v", i, acts[i], wantActs[i])
		}
	}
	for i := range out {
		if math.Abs(float64(out[i])-float64(wantOut[i])/f) > 1e-3 {
			t.Fatalf("out[%d] = %v, want %v", i, out[i], float64(wantOut[i])/f)
		}
	}
	// And the unfolded SAE with the factor in its cfg behaves like the folded one.
	cfgScaled := c.sae()
	cfgScaled.Config.Normalization, cfgScaled.Config.NormScalingFactor = NormExpectedAverageOnlyIn, f
	acts2, out2, err := cfgScaled.Reconstruct(x, c.N)
	if err != nil {
		t.Fatal(err)
	}
	for i := range out2 {
		if math.Abs(float64(out2[i]-out[i])) > 1e-3 || math.Abs(float64(acts2[i%len(acts2)]-acts[i%len(acts)])) > 1e-4 {
			t.Fatalf("cfg-scaled and folded SAEs differ at %d", i)
		}
	}
}

func TestTrainConfigErrors(t *testing.T) {
	base := DefaultTrainConfig(TopK, 8, 16, 2)
	base.Steps = 10
	cases := []struct {
		name   string
		change func(*TrainConfig)
		want   string
	}{
		{"jumprelu", func(c *TrainConfig) { c.Architecture = JumpReLU }, "not implemented"},
		{"unknown architecture", func(c *TrainConfig) { c.Architecture = "gated" }, "unknown architecture"},
		{"k too large", func(c *TrainConfig) { c.K = 17 }, "k=17"},
		{"no steps", func(c *TrainConfig) { c.Steps = 0 }, "steps"},
		{"warm-up too long", func(c *TrainConfig) { c.LRWarmUpSteps = 11 }, "warm-up"},
		{"normalization", func(c *TrainConfig) { c.NormalizeActivations = NormLayerNorm }, "normalize_activations"},
		{"checkpoint interval", func(c *TrainConfig) { c.CheckpointDir = "x" }, "CheckpointEvery"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			c.change(&cfg)
			_, err := NewTrainer(cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	// A source of the wrong width is refused.
	tr, err := NewTrainer(base)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := NewSyntheticSource(9, 10, 2, 1)
	if _, err := tr.Run(context.Background(), src); err == nil || !strings.Contains(err.Error(), "d_in is 8") {
		t.Errorf("wrong-width source: %v", err)
	}
}
