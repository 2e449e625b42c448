package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// refProduct computes op(A)·op(B) (+ c0) in float64 together with the
// per-element magnitude Σ|a||b| (+|c0|) that bounds float32 rounding error.
func refProduct(c0, a, b []float32, m, k, n int, transA, transB, accumulate bool) (want, mag []float64) {
	want = make([]float64, m*n)
	mag = make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, abs float64
			if accumulate {
				s, abs = float64(c0[i*n+j]), math.Abs(float64(c0[i*n+j]))
			}
			for p := 0; p < k; p++ {
				av := a[i*k+p]
				if transA {
					av = a[p*m+i]
				}
				bv := b[p*n+j]
				if transB {
					bv = b[j*k+p]
				}
				s += float64(av) * float64(bv)
				abs += math.Abs(float64(av) * float64(bv))
			}
			want[i*n+j], mag[i*n+j] = s, abs
		}
	}
	return want, mag
}

func randFloats(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

type productFunc func(ks *kernelSet, c, a, b []float32, m, k, n int, accumulate bool)

var products = []struct {
	name           string
	transA, transB bool
}{
	{"MatMul", false, false},
	{"MatMulTransB", false, true},
	{"MatMulTransA", true, false},
}

// testFamilies returns every kernel family runnable here, each also with a
// tiny blocking so that small shapes cross every block boundary, and with
// the dot-product path for small-m TransB turned off so that GEMM covers it.
func testFamilies() []*kernelSet {
	var out []*kernelSet
	for _, ks := range kernelFamilies() {
		out = append(out, ks)
		tiny := &kernelSet{name: ks.name + "/tiny", mr: ks.mr, nr: ks.nr, kc: 16, nc: 2 * ks.nr,
			micro: ks.micro, transpose8: ks.transpose8, dotTile: ks.dotTile, axpy: ks.axpy,
			elementwise: ks.elementwise}
		out = append(out, tiny)
	}
	return out
}

func checkProduct(t *testing.T, ks *kernelSet, m, k, n int, transA, transB, accumulate bool, rng *rand.Rand) {
	t.Helper()
	a := randFloats(rng, m*k)
	b := randFloats(rng, k*n)
	bCopy := append([]float32(nil), b...)
	const guard = 7
	c := randFloats(rng, m*n+guard)
	c0 := append([]float32(nil), c...)
	gemm(ks, c[:m*n], a, b, m, k, n, transA, transB, accumulate)
	want, mag := refProduct(c0, a, b, m, k, n, transA, transB, accumulate)
	// Any summation order of k float32 products is within about k·u·Σ|a||b|;
	// blocked orders are far better, so 2·(k+2)·u is a loose, safe bound.
	const u = 1.0 / (1 << 24)
	bad := 0
	for i := range want {
		tol := 2*float64(k+2)*u*mag[i] + 1e-30
		if d := math.Abs(float64(c[i]) - want[i]); d > tol || math.IsNaN(float64(c[i])) {
			if bad < 3 {
				t.Errorf("c[%d,%d] = %v, want %v (|diff| %.3g > tol %.3g)", i/n, i%n, c[i], want[i], d, tol)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d elements wrong", bad, len(want))
	}
	for i := m * n; i < len(c); i++ {
		if c[i] != c0[i] {
			t.Fatalf("wrote past the m×n result at %d", i)
		}
	}
	for i := range b {
		if b[i] != bCopy[i] {
			t.Fatalf("modified b[%d]", i)
		}
	}
}

func TestProductsOddShapes(t *testing.T) {
	dims := []int{1, 3, 8, 17, 48, 63, 65, 129}
	for _, ks := range testFamilies() {
		for _, pr := range products {
			t.Run(ks.name+"/"+pr.name, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(1, 2))
				for _, m := range dims {
					for _, k := range dims {
						for _, n := range dims {
							for _, acc := range []bool{false, true} {
								checkProduct(t, ks, m, k, n, pr.transA, pr.transB, acc, rng)
								if t.Failed() {
									t.Fatalf("shape m=%d k=%d n=%d accumulate=%v", m, k, n, acc)
								}
							}
						}
					}
				}
			})
		}
	}
}

// TestProductsLarge covers shapes big enough to run in parallel, to use
// several k and n blocks with the default blocking, and to take the
// small-m and in-place-B paths.
func TestProductsLarge(t *testing.T) {
	shapes := []struct{ m, k, n int }{
		{128, 300, 200},
		{20, 520, 1100},
		{1, 770, 1000},
		{2, 768, 517},
		{5, 300, 1001},
		{9, 257, 999},
		{200, 100, 30},
		{1030, 40, 7},
	}
	for _, ks := range kernelFamilies() {
		for _, pr := range products {
			for _, s := range shapes {
				name := fmt.Sprintf("%s/%s/m%d_k%d_n%d", ks.name, pr.name, s.m, s.k, s.n)
				t.Run(name, func(t *testing.T) {
					rng := rand.New(rand.NewPCG(uint64(s.m), uint64(s.n)))
					checkProduct(t, ks, s.m, s.k, s.n, pr.transA, pr.transB, false, rng)
					checkProduct(t, ks, s.m, s.k, s.n, pr.transA, pr.transB, true, rng)
				})
			}
		}
	}
}

func TestZeroSizes(t *testing.T) {
	c := []float32{1, 2, 3, 4}
	MatMul(c, nil, nil, 2, 0, 2, true)
	if c[0] != 1 || c[3] != 4 {
		t.Fatalf("k=0 accumulate changed c: %v", c)
	}
	MatMul(c, nil, nil, 2, 0, 2, false)
	if c[0] != 0 || c[3] != 0 {
		t.Fatalf("k=0 overwrite left c = %v, want zeros", c)
	}
	MatMulTransA(nil, nil, nil, 0, 5, 0, false)
	MatMulTransB(nil, nil, make([]float32, 10), 0, 5, 2, false)
}

func TestShortSlicePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("MatMul with a short b did not panic")
		}
	}()
	MatMul(make([]float32, 4), make([]float32, 4), make([]float32, 3), 2, 2, 2, false)
}

func TestTranspose8(t *testing.T) {
	for _, ks := range kernelFamilies() {
		if ks.transpose8 == nil {
			continue
		}
		const srcStride, dstStride, blocks = 37, 11, 3
		src := make([]float32, 7*srcStride+8*blocks)
		for i := range src {
			src[i] = float32(i)
		}
		dst := make([]float32, (8*blocks-1)*dstStride+8)
		ks.transpose8(dst, dstStride, src, srcStride, blocks)
		for p := 0; p < 8*blocks; p++ {
			for r := 0; r < 8; r++ {
				if got, want := dst[p*dstStride+r], src[r*srcStride+p]; got != want {
					t.Fatalf("%s: dst[%d*%d+%d] = %v, want %v", ks.name, p, dstStride, r, got, want)
				}
			}
		}
	}
}

// TestGEMMStrided multiplies matrices that live inside wider ones (as one
// attention head inside c_attn's output) and checks that nothing outside the
// C view changes.
func TestGEMMStrided(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	shapes := []struct{ m, k, n int }{{1, 64, 1}, {5, 64, 7}, {128, 64, 128}, {33, 17, 129}, {9, 300, 2}}
	for _, pr := range products {
		for _, s := range shapes {
			for _, acc := range []bool{false, true} {
				ar, ac := s.m, s.k
				if pr.transA {
					ar, ac = s.k, s.m
				}
				br, bc := s.k, s.n
				if pr.transB {
					br, bc = s.n, s.k
				}
				lda, ldb, ldc := ac+rng.IntN(50), bc+rng.IntN(50), s.n+rng.IntN(50)
				offA, offB, offC := rng.IntN(9), rng.IntN(9), rng.IntN(9)
				aBig := randFloats(rng, offA+(ar-1)*lda+ac)
				bBig := randFloats(rng, offB+(br-1)*ldb+bc)
				cBig := randFloats(rng, offC+(s.m-1)*ldc+s.n)
				cOrig := append([]float32(nil), cBig...)
				dense := func(big []float32, off, rows, cols, ld int) []float32 {
					d := make([]float32, 0, rows*cols)
					for r := 0; r < rows; r++ {
						d = append(d, big[off+r*ld:][:cols]...)
					}
					return d
				}
				a, b := dense(aBig, offA, ar, ac, lda), dense(bBig, offB, br, bc, ldb)
				c0 := dense(cBig, offC, s.m, s.n, ldc)
				GEMM(pr.transA, pr.transB, s.m, s.n, s.k, aBig[offA:], lda, bBig[offB:], ldb, cBig[offC:], ldc, acc)
				want, mag := refProduct(c0, a, b, s.m, s.k, s.n, pr.transA, pr.transB, acc)
				const u = 1.0 / (1 << 24)
				for i := range cBig {
					rel := i - offC
					r, j := rel/ldc, rel%ldc
					if rel < 0 || j >= s.n {
						if cBig[i] != cOrig[i] {
							t.Fatalf("%s %v: wrote outside C at %d", pr.name, s, i)
						}
						continue
					}
					w, tol := want[r*s.n+j], 2*float64(s.k+2)*u*mag[r*s.n+j]
					if math.Abs(float64(cBig[i])-w) > tol {
						t.Fatalf("%s %v acc=%v: c[%d,%d] = %v, want %v", pr.name, s, acc, r, j, cBig[i], w)
					}
				}
			}
		}
	}
}

func TestGEMMShortPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("GEMM with ldc < n did not panic")
		}
	}()
	GEMM(false, false, 2, 3, 2, make([]float32, 4), 2, make([]float32, 6), 3, make([]float32, 100), 2, false)
}

// TestConcurrentCallers runs products from several goroutines at once, as
// attention heads would, each checking its own result.
func TestConcurrentCallers(t *testing.T) {
	const m, k, n = 64, 96, 200
	rng := rand.New(rand.NewPCG(3, 3))
	a, b := randFloats(rng, m*k), randFloats(rng, k*n)
	want, mag := refProduct(nil, a, b, m, k, n, false, false, false)
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			c := make([]float32, m*n)
			for range 20 {
				MatMul(c, a, b, m, k, n, false)
				for i := range c {
					if math.Abs(float64(c[i])-want[i]) > 2*float64(k+2)*mag[i]/(1<<24) {
						errs <- fmt.Errorf("goroutine %d: c[%d] = %v, want %v", g, i, c[i], want[i])
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
