package analysis

import (
	"context"
	"sync"
	"testing"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// GPT-2 small shapes (12 layers, 768 wide, 3072 neurons per layer, 50257
// tokens) with seeded random weights, built once per benchmark binary.
var (
	smallGPT2Once sync.Once
	smallGPT2     *gpt2.Model
	smallGPT2Err  error
)

func gpt2SmallRandom(b *testing.B) *gpt2.Model {
	b.Helper()
	smallGPT2Once.Do(func() {
		smallGPT2, smallGPT2Err = gpt2.FromCheckpoint(randomCheckpoint(weights.DefaultConfig(), 1, 0.02), gpt2.Processing{})
	})
	if smallGPT2Err != nil {
		b.Fatal(smallGPT2Err)
	}
	return smallGPT2
}

var benchPrompt = []int{464, 4284, 9215, 22658, 318, 5140, 287, 262, 1748, 286} // 10 tokens

// BenchmarkCausalTrace traces one 10-token prompt (subject at positions
// 1–3) over all 12 layers × 10 positions × 3 kinds (window 3) with 10
// noisy samples: 3·12·9 restorations (position 0 precedes the subject) less
// 8 last-layer hidden states that cannot matter, plus the baseline: 317
// cells of 10 rows of 10 tokens. Run with -benchtime=1x.
func BenchmarkCausalTrace(b *testing.B) {
	m := gpt2SmallRandom(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := CausalTrace(ctx, m, benchPrompt, 1, 4, -1, TraceOptions{Noise: 0.1}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/trace")
}

// BenchmarkNeuronAttribution scores all 36,864 neurons (12 × 3072) at one
// position of a 10-token prompt by attribution patching: a clean forward
// pass and a corrupted forward and backward pass.
func BenchmarkNeuronAttribution(b *testing.B) {
	m := gpt2SmallRandom(b)
	ctx := context.Background()
	corrupted := append([]int{}, benchPrompt...)
	corrupted[2] = 7993
	for b.Loop() {
		r, err := NeuronAttribution(ctx, m, benchPrompt, corrupted, 3482, 4881, AttributionOptions{Positions: []int{3}})
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Scores) != 36864 {
			b.Fatalf("%d scores", len(r.Scores))
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/36864-neurons")
}

// BenchmarkNeuronAblation measures exact single-neuron ablation (one batch
// row each) on 256 neurons and reports the time 36,864 would take at that
// rate (the cost is the same for every layer: a whole forward pass per
// neuron).
func BenchmarkNeuronAblation(b *testing.B) {
	m := gpt2SmallRandom(b)
	ctx := context.Background()
	var neurons []NeuronRef
	for n := 0; n < 256; n++ {
		neurons = append(neurons, NeuronRef{Layer: n % 12, Neuron: n * 11, Pos: 3})
	}
	for b.Loop() {
		if _, err := NeuronAblationEffects(ctx, m, benchPrompt, 3482, 4881, neurons, AblationOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	per := b.Elapsed().Seconds() / float64(b.N) / 256
	b.ReportMetric(per*36864, "s/36864-neurons(projected)")
	b.ReportMetric(1/per, "neurons/s")
}

// BenchmarkDirectLogitAttribution attributes a logit difference at the last
// of 10 tokens to embeddings, 144 heads, 24 biases and 36,864 neurons.
func BenchmarkDirectLogitAttribution(b *testing.B) {
	m := gpt2SmallRandom(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := DirectLogitAttribution(ctx, m, benchPrompt, 3482, 4881, DLAOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/op")
}

// BenchmarkLogitLens unembeds 13 residual states of a 10-token prompt.
func BenchmarkLogitLens(b *testing.B) {
	m := gpt2SmallRandom(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := LogitLens(ctx, m, benchPrompt, 3482, 4881, LensOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/op")
}
