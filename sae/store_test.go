package sae

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"testing"

	"github.com/factlens/factlens/gpt2"
)

// collectRows drains a single-pass source in chunks of rows.
func collectRows(t *testing.T, src *ModelSource, chunk int) [][]float32 {
	t.Helper()
	d := src.DIn()
	var rows [][]float32
	for {
		buf := make([]float32, chunk*d)
		err := src.Next(context.Background(), buf)
		if errors.Is(err, io.EOF) {
			return rows
		}
		if err != nil {
			t.Fatal(err)
		}
		for r := 0; r < chunk; r++ {
			rows = append(rows, buf[r*d:(r+1)*d])
		}
	}
}

func sortRows(rows [][]float32) {
	slices.SortFunc(rows, func(a, b []float32) int { return slices.Compare(a, b) })
}

// TestModelSourceServesTheHookActivations checks that the shuffled stream
// holds exactly the activations of a direct run over the same windows.
func TestModelSourceServesTheHookActivations(t *testing.T) {
	m := tinyModel(t, gpt2.Processing{})
	files := writeCorpus(t)
	const ctxSize = 12
	windows, err := Windows(byteTokenizer{}, files, ctxSize, true, 1000)
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.Run(context.Background(), windows, gpt2.RunOptions{Cache: gpt2.HookName("blocks.0.mlp.hook_post"),
		Logits: gpt2.LogitsNone, PrependBOS: true})
	if err != nil {
		t.Fatal(err)
	}
	a := res.Cache["blocks.0.mlp.hook_post"]
	for _, exclude := range []bool{false, true} {
		want, err := activationRows(a, nil, exclude)
		if err != nil {
			t.Fatal(err)
		}
		src, err := NewModelSource(m, byteTokenizer{}, StoreConfig{Hook: "blocks.0.mlp.hook_post", Files: files,
			ContextSize: ctxSize, PrependBOS: true, ExcludeBOS: exclude, ModelBatch: 3, BufferRows: 40, SinglePass: true, Seed: 9})
		if err != nil {
			t.Fatal(err)
		}
		if src.DIn() != 64 {
			t.Fatalf("d_in %d, want d_mlp 64", src.DIn())
		}
		perWindow := ctxSize
		if exclude {
			perWindow--
		}
		got := collectRows(t, src, perWindow)
		var wantRows [][]float32
		for r := 0; r < len(want)/64; r++ {
			wantRows = append(wantRows, want[r*64:(r+1)*64])
		}
		if len(got) != len(wantRows) || len(got) != len(windows)*perWindow {
			t.Fatalf("exclude BOS %v: %d rows served, %d harvested directly, %d windows", exclude, len(got), len(wantRows), len(windows))
		}
		// The first rows served must not simply be the first window (the
		// buffer shuffles).
		if slices.Equal(got[0], wantRows[0]) && slices.Equal(got[1], wantRows[1]) {
			t.Error("rows come out in harvest order")
		}
		sortRows(got)
		sortRows(wantRows)
		for i := range got {
			if !slices.Equal(got[i], wantRows[i]) {
				t.Fatalf("exclude BOS %v: row sets differ at %d", exclude, i)
			}
		}
	}
}

func TestModelSourceStateAndErrors(t *testing.T) {
	m := tinyModel(t, gpt2.Processing{})
	files := writeCorpus(t)
	cfg := StoreConfig{Hook: "blocks.1.hook_resid_post", Files: files, ContextSize: 10, PrependBOS: true, BufferRows: 32, Seed: 1}
	src, err := NewModelSource(m, byteTokenizer{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]float32, 50*src.DIn())
	for i := 0; i < 3; i++ {
		if err := src.Next(context.Background(), buf); err != nil {
			t.Fatal(err)
		}
	}
	state, err := src.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewModelSource(m, byteTokenizer{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.UnmarshalState(state); err != nil {
		t.Fatal(err)
	}
	// Both token streams now continue at the same window (the corpus loops).
	for i := 0; i < 5; i++ {
		a, _ := src.toks.window(context.Background(), 9)
		b, _ := other.toks.window(context.Background(), 9)
		if !slices.Equal(a, b) {
			t.Fatalf("window %d after restoring: %v vs %v", i, a, b)
		}
	}

	head := 1
	for _, c := range []struct {
		name string
		cfg  StoreConfig
	}{
		{"unknown hook", StoreConfig{Hook: "blocks.9.hook_resid_pre", Files: files}},
		{"pattern hook", StoreConfig{Hook: "blocks.0.attn.hook_pattern", Files: files}},
		{"context too long", StoreConfig{Hook: "blocks.0.hook_resid_pre", Files: files, ContextSize: 33}},
		{"no files", StoreConfig{Hook: "blocks.0.hook_resid_pre"}},
		{"missing file", StoreConfig{Hook: "blocks.0.hook_resid_pre", Files: []string{"/nonexistent/x.txt"}}},
		{"head of a resid hook", StoreConfig{Hook: "blocks.0.hook_resid_pre", Files: files, HeadIndex: &head}},
	} {
		if _, err := NewModelSource(m, byteTokenizer{}, c.cfg); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	// A JSON Lines document without "text" is reported with its line.
	bad := t.TempDir() + "/bad.jsonl"
	writeFile(t, bad, `{"text": "ok"}`+"\n"+`{"body": "no"}`+"\n")
	if _, err := Windows(byteTokenizer{}, []string{bad}, 4, false, 100); err == nil || !bytes.Contains([]byte(err.Error()), []byte("bad.jsonl:2")) {
		t.Errorf("bad JSON Lines: %v", err)
	}
}

// TestTrainAndEvaluateOnModel harvests MLP activations of the tiny model,
// trains a TopK SAE with checkpoints, resumes, and evaluates it.
func TestTrainAndEvaluateOnModel(t *testing.T) {
	m := tinyModel(t, gpt2.Processing{})
	files := writeCorpus(t)
	hook := "blocks.0.mlp.hook_post"
	newSrc := func() *ModelSource {
		src, err := NewModelSource(m, byteTokenizer{}, StoreConfig{Hook: hook, Files: files, ContextSize: 16,
			PrependBOS: true, BufferRows: 256, Seed: 2})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	dir := t.TempDir()
	cfg := DefaultTrainConfig(TopK, 64, 128, 8)
	cfg.BatchSize, cfg.Steps, cfg.LR = 64, 30, 3e-3
	cfg.NormalizeActivations, cfg.NormEstimateBatches = NormExpectedAverageOnlyIn, 2
	cfg.CheckpointDir, cfg.CheckpointEvery = dir, 10
	cfg.DeadFeatureWindow = 5
	src := newSrc()
	cfg.Metadata, cfg.RequiresProcessing = src.TrainMetadata()
	if cfg.Metadata.HookName != hook || cfg.Metadata.ContextSize != 16 || !cfg.RequiresProcessing.Known {
		t.Fatalf("train metadata %+v %+v", cfg.Metadata, cfg.RequiresProcessing)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	wrapped := &funcSource{dIn: 64, next: func(ctx context.Context, dst []float32) error {
		calls++
		if calls == 2+15 {
			cancel()
		}
		return src.Next(ctx, dst)
	}}
	if _, _, err := Train(ctx, cfg, wrapped); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
	tr, err := ResumeTrainer(dir, ResumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := tr.Run(context.Background(), newSrc())
	if err != nil {
		t.Fatal(err)
	}
	if tr.Step() != 30 || s.Config.Normalization != NormNone || s.LogSparsity == nil {
		t.Fatalf("step %d, normalization %q", tr.Step(), s.Config.Normalization)
	}
	out := t.TempDir()
	if err := s.Save(out); err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if p := loaded.Config.RequiresProcessing; !p.Known || p.CenterWritingWeights {
		t.Errorf("saved processing %+v", p)
	}
	windows, err := Windows(byteTokenizer{}, files, 16, true, 6)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Evaluate(context.Background(), m, loaded, windows, EvalOptions{PrependBOS: true})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Reconstruction
	t.Logf("tiny model, %s, 30 steps: L0 %.2f, EV %.3f, CE score %.3f, KL score %.3f, dead %d",
		hook, r.L0, r.ExplainedVariance, rep.CELossScore, rep.KLScore, r.Dead)
	if r.L0 > 8 || !(r.ExplainedVariance > 0) || rep.ProcessingWarning != "" {
		t.Errorf("L0 %v, EV %v, warning %q", r.L0, r.ExplainedVariance, rep.ProcessingWarning)
	}
}

type funcSource struct {
	dIn  int
	next func(context.Context, []float32) error
}

func (f *funcSource) DIn() int                                      { return f.dIn }
func (f *funcSource) Next(ctx context.Context, dst []float32) error { return f.next(ctx, dst) }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
