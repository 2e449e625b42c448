package analysis

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/factlens/factlens/gpt2"
)

// probeGolden is testdata/probe_golden.json, made by make_probe_golden.py
// with scikit-learn (see the script for the command).
type probeGolden struct {
	Logistic []struct {
		Name      string      `json:"name"`
		L2        float64     `json:"l2"`
		X         [][]float32 `json:"X"`
		Y         []int       `json:"y"`
		Coef      []float64   `json:"coef"`
		Intercept float64     `json:"intercept"`
		Ranking   []int       `json:"ranking"`
	} `json:"logistic"`
	F1 []struct {
		Classes int      `json:"classes"`
		Truth   []int    `json:"truth"`
		Pred    []int    `json:"pred"`
		Macro   float64  `json:"macro"`
		Binary  *float64 `json:"binary"`
	} `json:"f1"`
}

func loadProbeGolden(t *testing.T) *probeGolden {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "probe_golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g probeGolden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

func TestLogisticRegressionMatchesScikitLearn(t *testing.T) {
	g := loadProbeGolden(t)
	for _, c := range g.Logistic {
		t.Run(c.Name, func(t *testing.T) {
			all := make([]int, len(c.X))
			cols := make([]int, len(c.X[0]))
			for i := range all {
				all[i] = i
			}
			for j := range cols {
				cols[j] = j
			}
			y := make([]float64, len(c.Y))
			for i, v := range c.Y {
				y[i] = float64(v)
			}
			w, b, err := fitLogistic(subMatrix(c.X, all, cols), y, c.L2, 100)
			if err != nil {
				t.Fatal(err)
			}
			for j := range w {
				if math.Abs(w[j]-c.Coef[j]) > 1e-7*max(1, math.Abs(c.Coef[j])) {
					t.Errorf("w[%d] = %.8f, scikit-learn %.8f", j, w[j], c.Coef[j])
				}
			}
			if math.Abs(b-c.Intercept) > 1e-7*max(1, math.Abs(c.Intercept)) {
				t.Errorf("bias %.8f, scikit-learn %.8f", b, c.Intercept)
			}
			if got := meanDiffRanking(c.X, c.Y, all, 1); !slices.Equal(got, c.Ranking) {
				t.Errorf("mean-difference ranking %v, numpy %v", got, c.Ranking)
			}
		})
	}
}

func TestF1MatchesScikitLearn(t *testing.T) {
	g := loadProbeGolden(t)
	for _, c := range g.F1 {
		if got := macroF1(c.Truth, c.Pred, c.Classes); math.Abs(got-c.Macro) > 1e-12 {
			t.Errorf("%d classes: macro-F1 %.12f, scikit-learn %.12f", c.Classes, got, c.Macro)
		}
		if c.Binary != nil {
			if got := f1Score(c.Truth, c.Pred, 1); math.Abs(got-*c.Binary) > 1e-12 {
				t.Errorf("binary F1 %.12f, scikit-learn %.12f", got, *c.Binary)
			}
		}
	}
}

// TestSparseProbeFindsDetector probes the toy model's layer-0 neurons at the
// last name token for "the last name is X": the single-token detector
// neuron alone separates it, so k = 1 must choose it with F1 = 1.
func TestSparseProbeFindsDetector(t *testing.T) {
	ctx := context.Background()
	m := toyModel(t, gpt2.Processing{})
	var prompts [][]int
	var positions, labels []int
	for fill := 0; fill < 4; fill++ {
		for _, f := range []int{toyA, toyB, toyC} {
			for _, l := range []int{toyX, toyY, toyZ} {
				p := slices.Repeat([]int{toyT}, fill+1)
				p = append(p, f, l, toyP)
				prompts = append(prompts, p)
				positions = append(positions, fill+2)
				labels = append(labels, map[bool]int{true: 1, false: 0}[l == toyX])
			}
		}
	}
	X, err := ActivationsAt(ctx, m, prompts, positions, "mlp.hook_post", []int{0})
	if err != nil {
		t.Fatal(err)
	}
	r, err := SparseProbe(X, labels, []string{"not X", "X"}, ProbeOptions{Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 2, 4, 8}; len(r.PerK) != len(want) {
		t.Fatalf("ks %v, want 1, 2, 4, 8 (8 features)", r.PerK)
	}
	k1 := r.PerK[0]
	if k1.Features[0][0] != toyDetect || k1.F1 != 1 || k1.Accuracy != 1 {
		t.Errorf("k=1: neuron %v, F1 %.3f, accuracy %.3f; want the detector %d with F1 1", k1.Features, k1.F1, k1.Accuracy, toyDetect)
	}
	if r.Train+r.Test != len(prompts) || r.Test == 0 {
		t.Errorf("split %d + %d of %d", r.Train, r.Test, len(prompts))
	}
}

// TestSparseProbeMultiClass plants one informative feature per class among
// noise features: one-vs-rest probes at k = 1 must each choose their own.
func TestSparseProbeMultiClass(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	const n, f = 300, 40
	planted := []int{7, 19, 33}
	var X [][]float32
	var y []int
	for i := 0; i < n; i++ {
		c := i % 3
		row := make([]float32, f)
		for j := range row {
			row[j] = float32(rng.NormFloat64())
		}
		row[planted[c]] += 4
		X, y = append(X, row), append(y, c)
	}
	r, err := SparseProbe(X, y, []string{"baseball", "basketball", "football"}, ProbeOptions{Ks: []int{1, 4}, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	for c, feats := range r.PerK[0].Features {
		if feats[0] != planted[c] {
			t.Errorf("class %d: k=1 chose feature %d, planted %d", c, feats[0], planted[c])
		}
	}
	if r.PerK[0].F1 < 0.9 || r.PerK[1].F1 < 0.9 {
		t.Errorf("macro-F1 %.3f (k=1), %.3f (k=4); want > 0.9", r.PerK[0].F1, r.PerK[1].F1)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Error(err)
	}
	for _, bad := range []struct {
		name string
		X    [][]float32
		y    []int
		o    ProbeOptions
	}{
		{"no examples", nil, nil, ProbeOptions{}},
		{"label out of range", X[:5], []int{0, 1, 2, 3, 0}, ProbeOptions{}},
		{"k too large", X, y, ProbeOptions{Ks: []int{41}}},
		{"bad fraction", X, y, ProbeOptions{TestFraction: 1.5}},
	} {
		if _, err := SparseProbe(bad.X, bad.y, []string{"a", "b", "c"}, bad.o); err == nil {
			t.Errorf("%s: no error", bad.name)
		}
	}
}

func TestStratifiedSplit(t *testing.T) {
	y := []int{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2}
	train, test := stratifiedSplit(y, 3, 0.3, 1)
	count := func(idx []int, c int) int {
		n := 0
		for _, i := range idx {
			if y[i] == c {
				n++
			}
		}
		return n
	}
	if count(test, 0) != 3 || count(test, 1) != 1 || count(test, 2) != 1 || len(train)+len(test) != len(y) {
		t.Errorf("test %v train %v", test, train)
	}
	train2, test2 := stratifiedSplit(y, 3, 0.3, 1)
	if !slices.Equal(train, train2) || !slices.Equal(test, test2) {
		t.Error("same seed, different split")
	}
}
