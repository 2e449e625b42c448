package kernels

import (
	"encoding/json"
	"math"
	"os"
	"testing"
)

// golden mirrors testdata/golden.json, written by testdata/make_golden.py
// with torch 1.13 (see that script for the exact command).
type golden struct {
	Products []struct {
		Op       string
		M, K, N  int
		A, B, C0 []float32
		Want     []float64
		WantAcc  []float64 `json:"want_acc"`
	}
	GELU struct {
		X, Bias, Want []float32
	}
	LayerNorm []struct {
		Rows, Cols           int
		Eps                  float32
		X, Gamma, Beta, Want []float32
		Mean, Rstd           []float32
	}
	Softmax []struct {
		Rows, Cols, Past int
		X, Want          []float32
	}
}

func loadGolden(t *testing.T) *golden {
	t.Helper()
	data, err := os.ReadFile("testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatalf("testdata/golden.json: %v", err)
	}
	return &g
}

func TestProductsGolden(t *testing.T) {
	g := loadGolden(t)
	for _, ks := range testFamilies() {
		for _, pc := range g.Products {
			for _, acc := range []bool{false, true} {
				c := append([]float32(nil), pc.C0...)
				gemm(ks, c, pc.A, pc.B, pc.M, pc.K, pc.N, pc.Op == "MatMulTransA", pc.Op == "MatMulTransB", acc)
				want := pc.Want
				if acc {
					want = pc.WantAcc
				}
				for i, w := range want {
					if d := math.Abs(float64(c[i]) - w); d > 1e-5*float64(pc.K)*(1+math.Abs(w)) {
						t.Fatalf("%s %s m=%d k=%d n=%d acc=%v: c[%d] = %v, torch %v", ks.name, pc.Op, pc.M, pc.K, pc.N, acc, i, c[i], w)
					}
				}
			}
		}
	}
}

// closeTo reports whether got is within a few float32 ulps (relative) or abs
// of want.
func closeTo(got, want float32, rel, abs float64) bool {
	return math.Abs(float64(got)-float64(want)) <= abs+rel*math.Abs(float64(want))
}

func TestGELUGolden(t *testing.T) {
	g := loadGolden(t).GELU
	x := append([]float32(nil), g.X...)
	AddBiasGELU(x, g.Bias, 1, len(x))
	for i, w := range g.Want {
		// abs 2e-7: torch's float32 1+tanh(u) cancels to 0 below x ≈ -5,
		// where the exp form keeps the true ~-1e-7.
		if !closeTo(x[i], w, 4e-7, 2e-7) {
			t.Errorf("gelu(%v + %v) = %v, torch %v", g.X[i], g.Bias[i], x[i], w)
		}
	}
	y := append([]float32(nil), g.X...)
	AddBias(y, g.Bias, 1, len(y))
	GELU(y)
	for i := range y {
		if y[i] != x[i] {
			t.Fatalf("AddBias+GELU differs from AddBiasGELU at %d: %v vs %v", i, y[i], x[i])
		}
	}
}

func TestExp32(t *testing.T) {
	for x := float32(-110); x < 90; x += 0.0137 {
		got, want := float64(exp32(x)), math.Exp(float64(x))
		if want > math.MaxFloat32 {
			if !math.IsInf(got, 1) {
				t.Fatalf("exp32(%v) = %v, want +Inf", x, got)
			}
			continue
		}
		// Two ulps relative; subnormal results have an absolute ulp of 2^-149.
		if math.Abs(got-want) > 2.4e-7*want+1.5e-45 {
			t.Fatalf("exp32(%v) = %v, want %v", x, got, want)
		}
	}
	if v := exp32(float32(math.NaN())); v == v {
		t.Fatalf("exp32(NaN) = %v", v)
	}
	if v := exp32(float32(math.Inf(-1))); v != 0 {
		t.Fatalf("exp32(-Inf) = %v", v)
	}
}

func TestLayerNormGolden(t *testing.T) {
	for _, c := range loadGolden(t).LayerNorm {
		out := make([]float32, len(c.X))
		mean := make([]float32, c.Rows)
		rstd := make([]float32, c.Rows)
		LayerNorm(out, c.X, c.Gamma, c.Beta, c.Rows, c.Cols, c.Eps, mean, rstd)
		for i, w := range c.Want {
			if !closeTo(out[i], w, 1e-5, 1e-5) {
				t.Fatalf("rows=%d cols=%d: out[%d] = %v, torch %v", c.Rows, c.Cols, i, out[i], w)
			}
		}
		for r := range mean {
			if !closeTo(mean[r], c.Mean[r], 1e-6, 1e-6) || !closeTo(rstd[r], c.Rstd[r], 1e-6, 0) {
				t.Fatalf("row %d: mean, rstd = %v, %v; torch %v, %v", r, mean[r], rstd[r], c.Mean[r], c.Rstd[r])
			}
		}
		// In place gives the same.
		x := append([]float32(nil), c.X...)
		LayerNorm(x, x, c.Gamma, c.Beta, c.Rows, c.Cols, c.Eps, nil, nil)
		for i := range x {
			if x[i] != out[i] {
				t.Fatalf("in-place LayerNorm differs at %d", i)
			}
		}
	}
}

func TestSoftmaxGolden(t *testing.T) {
	for _, c := range loadGolden(t).Softmax {
		x := append([]float32(nil), c.X...)
		CausalSoftmaxRows(x, c.Rows, c.Cols, c.Past)
		for i, w := range c.Want {
			if !closeTo(x[i], w, 2e-6, 1e-9) {
				t.Fatalf("rows=%d cols=%d past=%d: p[%d] = %v, torch %v", c.Rows, c.Cols, c.Past, i, x[i], w)
			}
		}
	}
}

func TestDotAxpy(t *testing.T) {
	for _, n := range []int{0, 1, 7, 63, 64, 65, 200, 1000} {
		x := make([]float32, n)
		y := make([]float32, n+3)
		var want float64
		for i := range x {
			x[i] = float32(i%7) - 3.25
			y[i] = float32(i%5) * 0.5
			want += float64(x[i]) * float64(y[i])
		}
		if got := Dot(x, y); math.Abs(float64(got)-want) > 1e-5*(1+math.Abs(want)) {
			t.Errorf("Dot n=%d = %v, want %v", n, got, want)
		}
		y0 := append([]float32(nil), y...)
		Axpy(-1.5, x, y)
		for i := range y {
			w := y0[i]
			if i < n {
				w += -1.5 * x[i]
			}
			if y[i] != w {
				t.Fatalf("Axpy n=%d: y[%d] = %v, want %v", n, i, y[i], w)
			}
		}
	}
}
