package gpt2

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/factlens/factlens/weights"
)

// TestWideShapes checks each stage of one GPT-2-small-wide block (d_model
// 768, 12 heads of 64, d_mlp 3072; an odd length of 37 tokens) against naive
// float64 loops fed with the cached inputs of that stage. The goldens cover
// exact semantics on a tiny model; this covers the matrix-kernel paths that
// only real widths take.
func TestWideShapes(t *testing.T) {
	if testing.Short() {
		t.Skip("wide model")
	}
	cfg := weights.DefaultConfig()
	cfg.NLayer, cfg.VocabSize, cfg.NPositions = 1, 300, 64
	m, err := FromCheckpoint(randomCheckpoint(cfg, 3), Processing{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(4, 0))
	tokens := make([][]int, 2)
	for i := range tokens {
		for j := 0; j < 37; j++ {
			tokens[i] = append(tokens[i], rng.IntN(cfg.VocabSize))
		}
	}
	res, err := m.Run(context.Background(), tokens, RunOptions{Cache: cacheAll})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := m.Run(context.Background(), tokens, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d := maxScaledDiff(plain.Logits.Data, res.Logits.Data); d != 0 {
		t.Errorf("caching every hook point changed the logits by %.3g", d)
	}

	c := func(n string) *Activation { return res.Cache["blocks.0."+n] }
	B, P, H, Dh, D, Dm := 2, 37, 12, 64, 768, 3072
	w := func(n string) []float32 {
		p, err := m.Weight("h.0." + n)
		if err != nil {
			t.Fatal(err)
		}
		return p.Data
	}
	check := func(what string, got float32, want float64) {
		t.Helper()
		if math.Abs(float64(got)-want) > 1e-5*max(1, math.Abs(want)) {
			t.Fatalf("%s = %v, naive %v", what, got, want)
		}
	}

	q, k, v, z := c("attn.hook_q"), c("attn.hook_k"), c("attn.hook_v"), c("attn.hook_z")
	scores, pattern := c("attn.hook_attn_scores"), c("attn.hook_pattern")
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			for i := 0; i < P; i++ {
				row := make([]float64, i+1)
				maxS := math.Inf(-1)
				for j := 0; j <= i; j++ {
					var s float64
					for e := 0; e < Dh; e++ {
						s += float64(q.At(b, i, h)[e]) * float64(k.At(b, j, h)[e])
					}
					row[j] = s / 8
					maxS = max(maxS, row[j])
					check("scores", scores.At(b, h, i)[j], row[j])
				}
				if j := i + 1; j < P && !math.IsInf(float64(scores.At(b, h, i)[j]), -1) {
					t.Fatal("future score not masked")
				}
				var sum float64
				for j := range row {
					row[j] = math.Exp(row[j] - maxS)
					sum += row[j]
				}
				for e := 0; e < Dh; e++ {
					var zz float64
					for j := range row {
						zz += row[j] / sum * float64(v.At(b, j, h)[e])
					}
					check("z", z.At(b, i, h)[e], zz)
				}
				check("pattern", pattern.At(b, h, i)[i], row[i]/sum)
			}
		}
	}

	projW, projB := w("attn.c_proj.weight"), w("attn.c_proj.bias")
	fcW, fcB := w("mlp.c_fc.weight"), w("mlp.c_fc.bias")
	attnOut, ln2, pre, post := c("hook_attn_out"), c("ln2.hook_normalized"), c("mlp.hook_pre"), c("mlp.hook_post")
	for b := 0; b < B; b++ {
		for i := 0; i < P; i += 9 {
			for j := 0; j < D; j += 7 {
				s := float64(projB[j])
				for e := 0; e < D; e++ {
					s += float64(z.At(b, i)[e]) * float64(projW[e*D+j])
				}
				check("attn_out", attnOut.At(b, i)[j], s)
			}
			for j := 0; j < Dm; j += 11 {
				s := float64(fcB[j])
				for e := 0; e < D; e++ {
					s += float64(ln2.At(b, i)[e]) * float64(fcW[e*Dm+j])
				}
				check("mlp pre", pre.At(b, i)[j], s)
				x := float64(pre.At(b, i)[j])
				check("mlp post", post.At(b, i)[j], 0.5*x*(1+math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x))))
			}
		}
	}
}
