package sae

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/nlpodyssey/spago/ag"
	"github.com/nlpodyssey/spago/mat"
)

// reference.json comes from testdata/reference.py (PyTorch autograd, float64).
type refLossCase struct {
	Name      string    `json:"name"`
	Arch      string    `json:"arch"`
	N         int       `json:"n"`
	DIn       int       `json:"d_in"`
	DSAE      int       `json:"d_sae"`
	K         int       `json:"k"`
	L1        float64   `json:"l1"`
	Dead      []int     `json:"dead"`
	AuxCoeff  float64   `json:"aux_coeff"`
	ApplyBDec bool      `json:"apply_b_dec"`
	X         []float64 `json:"x"`
	WEnc      []float64 `json:"W_enc"`
	BEnc      []float64 `json:"b_enc"`
	WDec      []float64 `json:"W_dec"`
	BDec      []float64 `json:"b_dec"`
	Total     float64   `json:"total"`
	MSE       float64   `json:"mse"`
	L1Loss    float64   `json:"l1_loss"`
	Aux       float64   `json:"aux"`
	L0        float64   `json:"l0"`
	GradWEnc  []float64 `json:"grad_W_enc"`
	GradBEnc  []float64 `json:"grad_b_enc"`
	GradWDec  []float64 `json:"grad_W_dec"`
	GradBDec  []float64 `json:"grad_b_dec"`
}

type reference struct {
	Loss []refLossCase `json:"loss"`
	Adam struct {
		P0    []float64   `json:"p0"`
		Grads [][]float64 `json:"grads"`
		LRs   []float64   `json:"lrs"`
		P     []float64   `json:"p"`
	} `json:"adam"`
	Metrics struct {
		N, D                    int
		X                       []float64 `json:"x"`
		XHat                    []float64 `json:"xhat"`
		ExplainedVariance       float64   `json:"explained_variance"`
		ExplainedVarianceLegacy float64   `json:"explained_variance_legacy"`
		ExplainedVarianceCode   float64   `json:"explained_variance_saelens_code"`
		Cossim                  float64   `json:"cossim"`
		MSE                     float64   `json:"mse"`
		SumSqError              float64   `json:"sum_sq_error"`
	} `json:"metrics"`
	KLCE struct {
		T, V    int
		Clean   []float64 `json:"clean"`
		New     []float64 `json:"new"`
		Tokens  []int     `json:"tokens"`
		CEClean []float64 `json:"ce_clean"`
		CENew   []float64 `json:"ce_new"`
		KL      []float64 `json:"kl"`
	} `json:"kl_ce"`
}

func loadReference(t *testing.T) *reference {
	t.Helper()
	b, err := os.ReadFile("testdata/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func f32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func (c refLossCase) sae() *SAE {
	return &SAE{
		Config: Config{Architecture: Architecture(c.Arch), DIn: c.DIn, DSAE: c.DSAE, K: c.K,
			ApplyBDecToInput: c.ApplyBDec, Normalization: NormNone},
		WEnc: f32(c.WEnc), BEnc: f32(c.BEnc), WDec: f32(c.WDec), BDec: f32(c.BDec),
	}
}

func (c refLossCase) options() lossOptions {
	o := lossOptions{L1: c.L1, AuxCoeff: c.AuxCoeff}
	if c.Dead != nil {
		o.DeadMask = make([]bool, c.DSAE)
		for _, j := range c.Dead {
			o.DeadMask[j] = true
		}
	}
	return o
}

func closeRel(got, want, rel, abs float64) bool {
	return math.Abs(got-want) <= abs+rel*math.Abs(want)
}

func compareSlices(t *testing.T, name string, got []float32, want []float64, rel, abs float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	bad := 0
	for i := range got {
		if !closeRel(float64(got[i]), want[i], rel, abs) {
			if bad < 5 {
				t.Errorf("%s[%d] = %.7g, want %.7g", name, i, got[i], want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values differ", name, bad, len(got))
	}
}

func TestLossAndGradMatchPyTorch(t *testing.T) {
	ref := loadReference(t)
	for _, c := range ref.Loss {
		for _, path := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/path%d", c.Name, path), func(t *testing.T) {
				s := c.sae()
				g := newGrads(s.Config)
				var w workspace
				o := c.options()
				o.path = path
				parts, err := lossAndGrad(s, f32(c.X), c.N, o, &w, g)
				if err != nil {
					t.Fatal(err)
				}
				if w.dense != (path == 2) {
					t.Fatalf("dense = %v", w.dense)
				}
				for _, p := range []struct {
					name      string
					got, want float64
				}{{"total", parts.Total, c.Total}, {"mse", parts.MSE, c.MSE}, {"l1", parts.L1, c.L1Loss},
					{"aux", parts.Aux, c.Aux}, {"l0", parts.L0, c.L0}} {
					if !closeRel(p.got, p.want, 1e-5, 1e-5) {
						t.Errorf("%s = %.8g, PyTorch %.8g", p.name, p.got, p.want)
					}
				}
				compareSlices(t, "dW_enc", g.WEnc, c.GradWEnc, 1e-4, 1e-5)
				compareSlices(t, "db_enc", g.BEnc, c.GradBEnc, 1e-4, 1e-5)
				compareSlices(t, "dW_dec", g.WDec, c.GradWDec, 1e-4, 1e-5)
				compareSlices(t, "db_dec", g.BDec, c.GradBDec, 1e-4, 1e-5)
			})
		}
	}
}

// agLoss builds the same loss with spago's autodiff in float64, with the
// TopK/aux selections taken from our forward pass (they are piecewise
// constant), and returns the loss and the gradients.
func agLoss(t *testing.T, s *SAE, x []float32, n int, o lossOptions, w *workspace) (float64, *grads) {
	t.Helper()
	c := s.Config
	d64 := func(v []float32) []float64 {
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	param := func(v []float32, r, cols int) *mat.Dense[float64] {
		return mat.NewDense[float64](mat.WithShape(r, cols), mat.WithBacking(d64(v)), mat.WithGrad(true))
	}
	constant := func(v []float64, r, cols int) *mat.Dense[float64] {
		return mat.NewDense[float64](mat.WithShape(r, cols), mat.WithBacking(v))
	}
	fill := func(m int, v float64) []float64 {
		out := make([]float64, m)
		for i := range out {
			out[i] = v
		}
		return out
	}
	wEnc, bEnc := param(s.WEnc, c.DIn, c.DSAE), param(s.BEnc, 1, c.DSAE)
	wDec, bDec := param(s.WDec, c.DSAE, c.DIn), param(s.BDec, 1, c.DIn)
	X := constant(d64(x), n, c.DIn)
	ones := constant(fill(n, 1), n, 1)

	// The forward pass in w tells which entries TopK kept and which the aux
	// loss selected.
	keep := make([]float64, n*c.DSAE)
	auxMask := make([]float64, n*c.DSAE)
	if c.Architecture == TopK {
		for r := 0; r < n; r++ {
			for i := r * c.K; i < (r+1)*c.K; i++ {
				keep[r*c.DSAE+int(w.topIdx[i])] = 1
			}
			for p := w.aux.ptr[r]; p < w.aux.ptr[r+1]; p++ {
				auxMask[r*c.DSAE+int(w.aux.idx[p])] = 1
			}
		}
	} else {
		keep = fill(n*c.DSAE, 1)
	}

	var saeIn mat.Tensor = X
	if c.ApplyBDecToInput {
		saeIn = ag.Sub(X, ag.Mul(ones, bDec))
	}
	pre := ag.Add(ag.Mul(saeIn, wEnc), ag.Mul(ones, bEnc))
	acts := ag.ReLU(ag.Prod(pre, constant(keep, n, c.DSAE)))
	out := ag.Add(ag.Mul(acts, wDec), ag.Mul(ones, bDec))
	// sumAll is 1ᵀ·M·1: spago's ReduceSum hands a flat gradient back to
	// matrix operators, which then reject its shape.
	sumAll := func(m mat.Tensor, rows, cols int) mat.Tensor {
		return ag.Mul(ag.Mul(constant(fill(rows, 1), 1, rows), m), constant(fill(cols, 1), cols, 1))
	}
	invN := mat.Scalar(1 / float64(n))
	loss := ag.ProdScalar(sumAll(ag.Square(ag.Sub(out, X)), n, c.DIn), invN)
	if c.Architecture == Standard && o.L1 != 0 {
		norms := ag.Sqrt(ag.Mul(ag.Square(wDec), constant(fill(c.DIn, 1), c.DIn, 1)))
		l1 := ag.ProdScalar(sumAll(ag.Mul(acts, norms), n, 1), mat.Scalar(o.L1/float64(n)))
		loss = ag.Add(loss, l1)
	}
	if c.Architecture == TopK && o.DeadMask != nil {
		nDead := 0
		for _, d := range o.DeadMask {
			if d {
				nDead++
			}
		}
		if nDead > 0 {
			scale := math.Min(float64(nDead)/float64(c.DIn/2), 1) * o.AuxCoeff
			resid := make([]float64, n*c.DIn)
			outV := out.Value().Data().F64()
			for i := range resid {
				resid[i] = float64(x[i]) - outV[i]
			}
			auxActs := ag.Prod(pre, constant(auxMask, n, c.DSAE))
			recons := ag.Add(ag.Mul(auxActs, wDec), ag.Mul(ones, bDec))
			aux := ag.ProdScalar(sumAll(ag.Square(ag.Sub(recons, constant(resid, n, c.DIn))), n, c.DIn), mat.Scalar(scale/float64(n)))
			loss = ag.Add(loss, aux)
		}
	}
	if err := ag.Backward(loss); err != nil {
		t.Fatal(err)
	}
	g32 := func(p *mat.Dense[float64]) []float32 {
		gr := p.Grad()
		if gr == nil {
			return make([]float32, p.Size())
		}
		return f32(gr.(*mat.Dense[float64]).Data().F64())
	}
	return loss.Value().Item().F64(), &grads{WEnc: g32(wEnc), BEnc: g32(bEnc), WDec: g32(wDec), BDec: g32(bDec)}
}

func TestLossAndGradMatchSpagoAutodiff(t *testing.T) {
	ref := loadReference(t)
	for _, c := range ref.Loss {
		t.Run(c.Name, func(t *testing.T) {
			s := c.sae()
			g := newGrads(s.Config)
			var w workspace
			parts, err := lossAndGrad(s, f32(c.X), c.N, c.options(), &w, g)
			if err != nil {
				t.Fatal(err)
			}
			loss, want := agLoss(t, s, f32(c.X), c.N, c.options(), &w)
			if !closeRel(parts.Total, loss, 1e-5, 1e-6) {
				t.Errorf("loss %.8g, spago %.8g", parts.Total, loss)
			}
			cmp := func(name string, got, want []float32) {
				w64 := make([]float64, len(want))
				for i, v := range want {
					w64[i] = float64(v)
				}
				compareSlices(t, name, got, w64, 1e-4, 1e-5)
			}
			cmp("dW_enc", g.WEnc, want.WEnc)
			cmp("db_enc", g.BEnc, want.BEnc)
			cmp("dW_dec", g.WDec, want.WDec)
			cmp("db_dec", g.BDec, want.BDec)
		})
	}
}

// TestLossAndGradFiniteDifferences checks random coordinates of every
// parameter against central differences of our own loss, skipping
// perturbations that change which latents are active (the loss has kinks
// there).
func TestLossAndGradFiniteDifferences(t *testing.T) {
	ref := loadReference(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range ref.Loss {
		t.Run(c.Name, func(t *testing.T) {
			s := c.sae()
			x := f32(c.X)
			o := c.options()
			g := newGrads(s.Config)
			var w workspace
			if _, err := lossAndGrad(s, x, c.N, o, &w, g); err != nil {
				t.Fatal(err)
			}
			o.auxResidual = make([]float32, len(x))
			for i := range x {
				o.auxResidual[i] = x[i] - w.xhat[i]
			}
			baseActive := slices.Clone(w.acts.idx)
			baseAux := slices.Clone(w.aux.idx)
			params := []struct {
				name string
				p, g []float32
			}{{"W_enc", s.WEnc, g.WEnc}, {"b_enc", s.BEnc, g.BEnc}, {"W_dec", s.WDec, g.WDec}, {"b_dec", s.BDec, g.BDec}}
			checked := 0
			for _, p := range params {
				for trial := 0; trial < 12; trial++ {
					i := rng.IntN(len(p.p))
					orig := p.p[i]
					const h = 1e-2
					eval := func(v float32) (float64, bool) {
						p.p[i] = v
						var w2 workspace
						parts, err := lossAndGrad(s, x, c.N, o, &w2, nil)
						if err != nil {
							t.Fatal(err)
						}
						same := slices.Equal(w2.acts.idx, baseActive) && slices.Equal(w2.aux.idx, baseAux)
						return parts.Total, same
					}
					lp, ok1 := eval(orig + h)
					lm, ok2 := eval(orig - h)
					p.p[i] = orig
					if !ok1 || !ok2 {
						continue
					}
					fd := (lp - lm) / (2 * h)
					if !closeRel(float64(p.g[i]), fd, 2e-2, 2e-3) {
						t.Errorf("%s[%d]: gradient %.6g, finite difference %.6g", p.name, i, p.g[i], fd)
					}
					checked++
				}
			}
			if checked < 24 {
				t.Errorf("only %d coordinates checked", checked)
			}
		})
	}
}

func TestAdamMatchesPyTorch(t *testing.T) {
	ref := loadReference(t).Adam
	p := f32(ref.P0)
	a := newAdam(0.9, 0.999, 1e-8, len(p))
	for i, g := range ref.Grads {
		a.update(ref.LRs[i], [][]float32{p}, [][]float32{f32(g)})
	}
	compareSlices(t, "params", p, ref.P, 1e-5, 1e-6)
}

func TestLRSchedule(t *testing.T) {
	// SAELens' constant scheduler with warm-up 4 and decay 3 over 10 steps:
	// LinearLR(1/4 → 1 over 3 iterations), then LinearLR(1 → 0 over 3).
	want := []float64{0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 2.0 / 3, 1.0 / 3}
	for s, w := range want {
		if got := lrFactor(s, 10, 4, 3); math.Abs(got-w) > 1e-12 {
			t.Errorf("step %d: factor %v, want %v", s, got, w)
		}
	}
	if got := l1Factor(0, 5); got != 0.2 {
		t.Errorf("l1 warm-up step 0: %v", got)
	}
}

func ExampleTopFeatures() {
	acts := []float32{0, 2, 0, 5, 1, 0}
	fmt.Println(TopFeatures(acts, 1, 6, 2))
	// Output: [[{3 5} {1 2}]]
}
