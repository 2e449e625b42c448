package gpt2

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/factlens/factlens/weights"
)

// BenchmarkGradients times one forward and backward pass of GPT-2 small
// (random weights) for attribution patching over every MLP neuron: the
// gradient of a last-position logit difference with respect to all 12
// blocks.L.mlp.hook_post (36,864 neurons per position), logits of the last
// position only, no parameter gradients. "params" adds every parameter's
// gradient (124M floats). Run with -benchtime=3x on shared machines.
func BenchmarkGradients(b *testing.B) {
	cfg := weights.DefaultConfig()
	m, err := FromCheckpoint(randomCheckpoint(cfg, 1), Processing{})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		seq    int
		params bool
	}{{10, false}, {128, false}, {128, true}} {
		rng := rand.New(rand.NewPCG(2, 0))
		tokens := [][]int{make([]int, tc.seq)}
		for i := range tokens[0] {
			tokens[0][i] = rng.IntN(cfg.VocabSize)
		}
		opts := GradOptions{RunOptions: RunOptions{Logits: LogitsLast}, Want: HookGlob("blocks.*.mlp.hook_post"), ParamGrads: tc.params}
		obj := LogitDiffObjective(0, -1, 100, 200)
		name := fmt.Sprintf("1x%d/mlp_post", tc.seq)
		if tc.params {
			name += "+params"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := m.Gradients(context.Background(), tokens, opts, obj); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
		})
	}
}

// BenchmarkTrainStep times one training step of a toy GPT-2 (2 layers,
// d_model 64, 4 heads, d_mlp 256, vocab 300) on 64 rows of 8 tokens:
// forward, next-token cross-entropy, backward to every parameter, AdamW.
func BenchmarkTrainStep(b *testing.B) {
	tr, err := NewTrainable(toyConfig(), 1)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 0))
	batch := make([][]int, 64)
	for i := range batch {
		for j := 0; j < 8; j++ {
			batch[i] = append(batch[i], rng.IntN(300))
		}
	}
	obj := CrossEntropyObjective(NextTokenTargets(batch, nil), nil)
	opt := NewAdamW(tr, AdamWConfig{WeightDecay: 0.1})
	for b.Loop() {
		if _, err := tr.Backward(context.Background(), batch, GradOptions{}, obj); err != nil {
			b.Fatal(err)
		}
		opt.Step(1e-3)
	}
	b.ReportMetric(float64(b.N*64*8)/b.Elapsed().Seconds(), "tokens/s")
}
