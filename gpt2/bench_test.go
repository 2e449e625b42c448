package gpt2

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/factlens/factlens/weights"
)

// randomCheckpoint builds an in-memory checkpoint with cfg's shapes and
// seeded random weights (std ≈ 0.02 like GPT-2's init, LayerNorm weights 1).
func randomCheckpoint(cfg *weights.Config, seed uint64) *weights.Checkpoint {
	rng := rand.New(rand.NewPCG(seed, 0))
	ck := &weights.Checkpoint{Config: cfg, Params: map[string]*weights.Param{}}
	for _, s := range cfg.ParamSpecs() {
		data := make([]float32, product(s.Shape))
		switch {
		case len(s.Shape) == 1 && (s.Name == "ln_f.weight" || hasSuffix(s.Name, "ln_1.weight", "ln_2.weight")):
			for i := range data {
				data[i] = 1
			}
		default:
			for i := range data {
				data[i] = float32(rng.Float64()-0.5) * 0.07 // uniform, std 0.02
			}
		}
		ck.Params[s.Name] = &weights.Param{Name: s.Name, Shape: s.Shape, Data: data, StoredDType: "F32"}
	}
	return ck
}

func hasSuffix(s string, suffixes ...string) bool {
	for _, x := range suffixes {
		if len(s) >= len(x) && s[len(s)-len(x):] == x {
			return true
		}
	}
	return false
}

// BenchmarkForward times GPT-2 small (random weights) on batch×seq tokens,
// without hooks and with every blocks.L.mlp.hook_post cached, computing all
// logits or only the last position's. Run it with -benchtime=3x on shared
// machines; the tokens/s metric is what to compare.
func BenchmarkForward(b *testing.B) {
	cfg := weights.DefaultConfig()
	m, err := FromCheckpoint(randomCheckpoint(cfg, 1), Processing{})
	if err != nil {
		b.Fatal(err)
	}
	for _, shape := range []struct{ batch, seq int }{{1, 8}, {1, 128}, {8, 128}} {
		rng := rand.New(rand.NewPCG(2, 0))
		tokens := make([][]int, shape.batch)
		for i := range tokens {
			for j := 0; j < shape.seq; j++ {
				tokens[i] = append(tokens[i], rng.IntN(cfg.VocabSize))
			}
		}
		for _, cache := range []string{"none", "mlp_post"} {
			for _, logits := range []LogitsMode{LogitsAll, LogitsLast} {
				opts := RunOptions{Logits: logits}
				if cache == "mlp_post" {
					opts.Cache = HookGlob("blocks.*.mlp.hook_post")
				}
				name := fmt.Sprintf("%dx%d/cache=%s/logits=%s", shape.batch, shape.seq, cache, map[LogitsMode]string{LogitsAll: "all", LogitsLast: "last"}[logits])
				b.Run(name, func(b *testing.B) {
					for b.Loop() {
						if _, err := m.Run(context.Background(), tokens, opts); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.N*shape.batch*shape.seq)/b.Elapsed().Seconds(), "tokens/s")
				})
			}
		}
	}
}

// BenchmarkLinear times the forward's Conv1D products at 128 tokens, through
// the same path the forward takes (bias rows, then MatMul accumulating):
// attn.c_proj (768×768·768×128 as the issue writes it, x[128×768]·W[768×768])
// and mlp.c_fc (3072×768·768×128, x[128×768]·W[768×3072]). GFLOP/s counts
// 2·rows·in·out per call.
func BenchmarkLinear(b *testing.B) {
	for _, tc := range []struct {
		name          string
		rows, in, out int
	}{
		{"768x768x128", 128, 768, 768},
		{"3072x768x128", 128, 768, 3072},
	} {
		rng := rand.New(rand.NewPCG(4, 0))
		x := make([]float32, tc.rows*tc.in)
		w := make([]float32, tc.in*tc.out)
		bias := make([]float32, tc.out)
		for _, s := range [][]float32{x, w, bias} {
			for i := range s {
				s[i] = float32(rng.Float64() - 0.5)
			}
		}
		y := make([]float32, tc.rows*tc.out)
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				linear(y, x, w, bias, tc.rows, tc.in, tc.out)
			}
			flops := 2 * float64(tc.rows*tc.in*tc.out) * float64(b.N)
			b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
