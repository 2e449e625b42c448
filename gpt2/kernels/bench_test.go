package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Shapes of GPT-2 small's forward (m tokens; k×n = 768×768 attn c_proj,
// 768×2304 c_attn, 768×3072 c_fc, 3072×768 mlp c_proj, 768×50257 unembed) and
// of SAE training at d_in 768 × d_sae 6144 (batch scaled to 1024).
var benchShapes = []struct {
	op      string
	m, k, n int
}{
	{"MatMul", 128, 768, 768},
	{"MatMul", 128, 768, 2304},
	{"MatMul", 128, 768, 3072},
	{"MatMul", 128, 3072, 768},
	{"MatMul", 1024, 768, 768},
	{"MatMul", 8, 768, 768},
	{"MatMul", 8, 768, 3072},
	{"MatMul", 8, 3072, 768},
	{"MatMul", 16, 768, 3072},
	{"MatMul", 1, 768, 768},
	{"MatMulTransB", 128, 768, 50257},
	{"MatMulTransB", 1, 768, 50257},
	{"MatMulTransB", 8, 768, 50257},
	{"MatMulTransB", 16, 768, 50257},
	{"MatMulTransB", 32, 768, 50257},
	{"MatMulTransB", 64, 768, 50257},
	{"MatMulTransB", 128, 768, 768},
	{"MatMulTransA", 768, 128, 768},
	{"MatMulTransA", 768, 128, 3072},
	// SAE: encoder forward, dZ = dX̂·W_decᵀ, dW_dec = Zᵀ·dX̂, dW_enc = Xᵀ·dZ.
	{"MatMul", 1024, 768, 6144},
	{"MatMulTransB", 1024, 768, 6144},
	{"MatMulTransA", 6144, 1024, 768},
	{"MatMulTransA", 768, 1024, 6144},
}

func BenchmarkMatMul(b *testing.B) {
	for _, ks := range kernelFamilies() {
		for _, s := range benchShapes {
			name := fmt.Sprintf("%s/%s/m=%d,k=%d,n=%d", s.op, ks.name, s.m, s.k, s.n)
			b.Run(name, func(b *testing.B) {
				if ks.name == "go" && s.m*s.k*s.n > 128*768*3072 {
					b.Skip("portable kernel: large shapes too slow to be useful")
				}
				rng := rand.New(rand.NewPCG(1, 1))
				a := randFloats(rng, s.m*s.k)
				bm := randFloats(rng, s.k*s.n)
				c := make([]float32, s.m*s.n)
				transA, transB := s.op == "MatMulTransA", s.op == "MatMulTransB"
				b.ResetTimer()
				for range b.N {
					gemm(ks, c, a, bm, s.m, s.k, s.n, transA, transB, false)
				}
				b.ReportMetric(2*float64(s.m)*float64(s.k)*float64(s.n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

func BenchmarkAddBiasGELU(b *testing.B) {
	const rows, cols = 128, 3072
	rng := rand.New(rand.NewPCG(1, 1))
	x0 := randFloats(rng, rows*cols)
	bias := randFloats(rng, cols)
	x := make([]float32, len(x0))
	b.SetBytes(4 * rows * cols)
	for range b.N {
		copy(x, x0)
		AddBiasGELU(x, bias, rows, cols)
	}
}

func BenchmarkLayerNorm(b *testing.B) {
	const rows, cols = 128, 768
	rng := rand.New(rand.NewPCG(1, 1))
	x := randFloats(rng, rows*cols)
	g, be := randFloats(rng, cols), randFloats(rng, cols)
	out := make([]float32, len(x))
	b.SetBytes(4 * rows * cols)
	for range b.N {
		LayerNorm(out, x, g, be, rows, cols, 1e-5, nil, nil)
	}
}

func BenchmarkCausalSoftmax(b *testing.B) {
	const heads, t = 12, 128
	rng := rand.New(rand.NewPCG(1, 1))
	x0 := randFloats(rng, heads*t*t)
	x := make([]float32, len(x0))
	b.SetBytes(4 * heads * t * t)
	for range b.N {
		copy(x, x0)
		for h := range heads {
			CausalSoftmaxRows(x[h*t*t:], t, t, 0)
		}
	}
}

// BenchmarkAttentionHeads runs GPT-2 small attention's two products for all
// 12 heads through GEMM, reading Q, K, V in place from c_attn's [T, 2304]
// output: scores_h = Q_h·K_hᵀ (T×64·64×T), z_h = P_h·V_h (T×T·T×64).
func BenchmarkAttentionHeads(b *testing.B) {
	for _, t := range []int{128, 1024} {
		b.Run(fmt.Sprintf("T=%d", t), func(b *testing.B) {
			const heads, dh, width = 12, 64, 3 * 768
			rng := rand.New(rand.NewPCG(1, 1))
			qkv := randFloats(rng, t*width)
			scores := make([]float32, t*t)
			z := make([]float32, t*768)
			for range b.N {
				for h := range heads {
					q, k, v := qkv[h*dh:], qkv[768+h*dh:], qkv[2*768+h*dh:]
					GEMM(false, true, t, t, dh, q, width, k, width, scores, t, false)
					GEMM(false, false, t, dh, t, scores, t, v, width, z[h*dh:], 768, false)
				}
			}
			flops := float64(heads) * 2 * (2 * float64(t) * float64(t) * dh)
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
