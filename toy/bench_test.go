package toy

import (
	"context"
	"testing"
)

// BenchmarkTrainStep measures one training step (forward, backward through
// gpt2.Model.Gradients, Adam) at the default toy size: 512 people, 1 layer,
// d_model 32, 1 head, 64 MLP neurons, batch 128. Steps per second =
// 1e9 / ns/op.
func BenchmarkTrainStep(b *testing.B) {
	ctx := context.Background()
	w, err := NewWorld(WorldConfig{Seed: 1, People: 512})
	if err != nil {
		b.Fatal(err)
	}
	v := NewVocabulary()
	tok, err := v.Tokenizer()
	if err != nil {
		b.Fatal(err)
	}
	ex, err := Encode(tok, w.Facts())
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := ModelConfig{}.WeightsConfig(v)
	if err != nil {
		b.Fatal(err)
	}
	tc, _ := TrainConfig{Seed: 1}.withDefaults()
	params := InitParams(cfg, 1)
	opt := newAdam(tc, params)
	m, err := memModel(cfg, params)
	if err != nil {
		b.Fatal(err)
	}
	grads := make([][]float32, len(params))
	for i, p := range params {
		grads[i] = make([]float32, len(p.Data))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := batchGradients(ctx, m, params, ex, batchAt(1, i, len(ex), tc.BatchSize), grads); err != nil {
			b.Fatal(err)
		}
		opt.step(params, grads)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "steps/s")
}
