package analysis

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// ProbeOptions control SparseProbe.
type ProbeOptions struct {
	// Ks are the sparsity levels; nil means 1, 2, 4, …, 64 (those not above
	// the number of features).
	Ks []int
	// L2 is λ in the objective mean log-loss + λ/2·‖w‖² (intercept not
	// penalised); 0 means 1e-3. Negative means no penalty.
	L2 float64
	// TestFraction of each class held out; 0 means 0.3.
	TestFraction float64
	// Seed for the train/test split; 0 means 1.
	Seed uint64
	// MaxIter bounds Newton's method; 0 means 100.
	MaxIter int
}

// ProbeK is the probe with k features: its held-out F1 (binary: of the
// positive class; multi-class: macro-F1 over classes) and accuracy, and per
// probe (one for binary, one per class for one-vs-rest) the chosen features
// with their weights and the bias.
type ProbeK struct {
	K        int         `json:"k"`
	F1       float64     `json:"f1"`
	Accuracy float64     `json:"accuracy"`
	Features [][]int     `json:"features"`
	Weights  [][]float64 `json:"weights"`
	Bias     []float64   `json:"bias"`
}

// ProbeResult is a sparse-probing sweep over k.
type ProbeResult struct {
	Classes  []string `json:"classes"`
	Features int      `json:"features"`
	Train    int      `json:"train"`
	Test     int      `json:"test"`
	L2       float64  `json:"l2"`
	Seed     uint64   `json:"seed"`
	PerK     []ProbeK `json:"per_k"`
}

// SparseProbe fits k-sparse logistic probes as Gurnee et al. do: on a
// stratified, seeded train split, rank features by |mean over the class −
// mean over the rest| (the mean-difference heuristic), keep the top k, and
// fit L2-regularised logistic regression on them by Newton's method;
// report held-out F1. Two classes give one probe for class 1; more classes
// give one-vs-rest probes (each with its own k features), predicting the
// most probable class, scored by macro-F1. X holds one row of features per
// example (e.g. a layer's neurons at one position, see ActivationsAt); y its
// class index into classes.
func SparseProbe(X [][]float32, y []int, classes []string, opts ProbeOptions) (*ProbeResult, error) {
	n := len(X)
	if n == 0 || len(y) != n {
		return nil, fmt.Errorf("analysis: probe: %d examples and %d labels", n, len(y))
	}
	if len(classes) < 2 {
		return nil, fmt.Errorf("analysis: probe: need at least 2 classes, got %d", len(classes))
	}
	f := len(X[0])
	for i, row := range X {
		if len(row) != f {
			return nil, fmt.Errorf("analysis: probe: example %d has %d features, example 0 has %d", i, len(row), f)
		}
		if y[i] < 0 || y[i] >= len(classes) {
			return nil, fmt.Errorf("analysis: probe: label %d of example %d outside %d classes", y[i], i, len(classes))
		}
	}
	l2, frac, seed, maxIter := opts.L2, opts.TestFraction, opts.Seed, opts.MaxIter
	if l2 == 0 {
		l2 = 1e-3
	}
	l2 = max(l2, 0)
	if frac == 0 {
		frac = 0.3
	}
	if frac <= 0 || frac >= 1 {
		return nil, fmt.Errorf("analysis: probe: test fraction %v outside (0, 1)", frac)
	}
	if seed == 0 {
		seed = 1
	}
	if maxIter <= 0 {
		maxIter = 100
	}
	ks := opts.Ks
	if ks == nil {
		for k := 1; k <= 64 && k <= f; k *= 2 {
			ks = append(ks, k)
		}
	}
	for _, k := range ks {
		if k < 1 || k > f {
			return nil, fmt.Errorf("analysis: probe: k = %d outside [1, %d features]", k, f)
		}
	}
	train, test := stratifiedSplit(y, len(classes), frac, seed)
	if len(train) == 0 || len(test) == 0 {
		return nil, fmt.Errorf("analysis: probe: %d examples are too few to split", n)
	}
	for c := range classes {
		has := false
		for _, i := range train {
			has = has || y[i] == c
		}
		if !has {
			return nil, fmt.Errorf("analysis: probe: class %q has no training example", classes[c])
		}
	}
	binary := len(classes) == 2
	probes := len(classes)
	if binary {
		probes = 1
	}
	// One-vs-rest targets: probe c separates class c (class 1 when binary).
	posClass := func(p int) int {
		if binary {
			return 1
		}
		return p
	}
	rankings := make([][]int, probes)
	for p := range rankings {
		rankings[p] = meanDiffRanking(X, y, train, posClass(p))
	}
	out := &ProbeResult{Classes: classes, Features: f, Train: len(train), Test: len(test), L2: l2, Seed: seed}
	for _, k := range ks {
		pk := ProbeK{K: k}
		scores := make([][]float64, probes) // [probe][test example]
		for p := 0; p < probes; p++ {
			feats := slices.Clone(rankings[p][:k])
			xs, ys := subMatrix(X, train, feats), make([]float64, len(train))
			for j, i := range train {
				if y[i] == posClass(p) {
					ys[j] = 1
				}
			}
			w, b, err := fitLogistic(xs, ys, l2, maxIter)
			if err != nil {
				return nil, fmt.Errorf("analysis: probe k=%d (%s): %w", k, classes[posClass(p)], err)
			}
			pk.Features, pk.Weights, pk.Bias = append(pk.Features, feats), append(pk.Weights, w), append(pk.Bias, b)
			xt := subMatrix(X, test, feats)
			scores[p] = make([]float64, len(test))
			for j, row := range xt {
				z := b
				for q, v := range row {
					z += w[q] * v
				}
				scores[p][j] = z
			}
		}
		pred, truth := make([]int, len(test)), make([]int, len(test))
		for j, i := range test {
			truth[j] = y[i]
			if binary {
				if scores[0][j] > 0 {
					pred[j] = 1
				}
				continue
			}
			best := 0
			for p := range scores {
				if scores[p][j] > scores[best][j] {
					best = p
				}
			}
			pred[j] = best
		}
		if binary {
			pk.F1 = f1Score(truth, pred, 1)
		} else {
			pk.F1 = macroF1(truth, pred, len(classes))
		}
		correct := 0
		for j := range pred {
			if pred[j] == truth[j] {
				correct++
			}
		}
		pk.Accuracy = float64(correct) / float64(len(pred))
		out.PerK = append(out.PerK, pk)
	}
	return out, nil
}

// stratifiedSplit shuffles each class's examples (seeded) and holds out
// round(frac·count) of them, at least one when the class has two or more.
func stratifiedSplit(y []int, classes int, frac float64, seed uint64) (train, test []int) {
	rng := rand.New(rand.NewPCG(seed, 0x5b1))
	for c := 0; c < classes; c++ {
		var idx []int
		for i, v := range y {
			if v == c {
				idx = append(idx, i)
			}
		}
		rng.Shuffle(len(idx), func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })
		nt := int(math.Round(frac * float64(len(idx))))
		if nt == 0 && len(idx) >= 2 {
			nt = 1
		}
		if nt == len(idx) && len(idx) >= 2 {
			nt--
		}
		test = append(test, idx[:nt]...)
		train = append(train, idx[nt:]...)
	}
	slices.Sort(train)
	slices.Sort(test)
	return train, test
}

// meanDiffRanking orders features by |mean over rows of class pos − mean
// over the other rows|, largest first (ties by index), using rows idx.
func meanDiffRanking(X [][]float32, y []int, idx []int, pos int) []int {
	f := len(X[0])
	sumP, sumN := make([]float64, f), make([]float64, f)
	var nP, nN float64
	for _, i := range idx {
		s := sumN
		if y[i] == pos {
			s, nP = sumP, nP+1
		} else {
			nN++
		}
		for j, v := range X[i] {
			s[j] += float64(v)
		}
	}
	diff := make([]float64, f)
	for j := range diff {
		var a, b float64
		if nP > 0 {
			a = sumP[j] / nP
		}
		if nN > 0 {
			b = sumN[j] / nN
		}
		diff[j] = math.Abs(a - b)
	}
	return topIndices(f, f, func(j int) float64 { return diff[j] })
}

func subMatrix(X [][]float32, rows, cols []int) [][]float64 {
	out := make([][]float64, len(rows))
	for r, i := range rows {
		out[r] = make([]float64, len(cols))
		for c, j := range cols {
			out[r][c] = float64(X[i][j])
		}
	}
	return out
}

// fitLogistic minimises (1/n)·Σ log(1 + e^{z_i}) − y_i·z_i + (λ/2)·‖w‖²,
// z = X·w + b, by Newton's method with a backtracking line search. It
// returns when the largest gradient entry is below 1e-10 (or the objective
// stops decreasing).
func fitLogistic(X [][]float64, y []float64, l2 float64, maxIter int) ([]float64, float64, error) {
	n := len(X)
	if n == 0 {
		return nil, 0, fmt.Errorf("no training examples")
	}
	k := len(X[0])
	dim := k + 1 // weights, then bias
	theta := make([]float64, dim)
	z := make([]float64, n)
	objective := func(th []float64) float64 {
		var s float64
		for i, row := range X {
			zi := th[k]
			for j, v := range row {
				zi += th[j] * v
			}
			z[i] = zi
			s += softplus(zi) - y[i]*zi
		}
		var r float64
		for _, w := range th[:k] {
			r += w * w
		}
		return s/float64(n) + l2/2*r
	}
	obj := objective(theta)
	grad := make([]float64, dim)
	hess := make([]float64, dim*dim)
	trial := make([]float64, dim)
	for iter := 0; iter < maxIter; iter++ {
		clear(grad)
		clear(hess)
		for i, row := range X {
			p := sigmoid(z[i])
			r, s := (p-y[i])/float64(n), p*(1-p)/float64(n)
			for a := 0; a < dim; a++ {
				xa := 1.0
				if a < k {
					xa = row[a]
				}
				grad[a] += r * xa
				for b := 0; b <= a; b++ {
					xb := 1.0
					if b < k {
						xb = row[b]
					}
					hess[a*dim+b] += s * xa * xb
				}
			}
		}
		gmax := 0.0
		for a := 0; a < k; a++ {
			grad[a] += l2 * theta[a]
			hess[a*dim+a] += l2
		}
		for a := range grad {
			gmax = max(gmax, math.Abs(grad[a]))
		}
		if gmax < 1e-10 {
			break
		}
		for a := 0; a < dim; a++ {
			for b := 0; b < a; b++ {
				hess[b*dim+a] = hess[a*dim+b]
			}
		}
		step, err := solveSPD(hess, grad, dim)
		if err != nil {
			return nil, 0, err
		}
		t, improved := 1.0, false
		for try := 0; try < 50; try++ {
			for a := range trial {
				trial[a] = theta[a] - t*step[a]
			}
			if o := objective(trial); o <= obj {
				copy(theta, trial)
				improved = o < obj
				obj = o
				break
			}
			t /= 2
		}
		objective(theta) // leave z at theta
		if !improved {
			break
		}
	}
	return theta[:k], theta[k], nil
}

func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

func softplus(z float64) float64 {
	if z > 0 {
		return z + math.Log1p(math.Exp(-z))
	}
	return math.Log1p(math.Exp(z))
}

// solveSPD solves A·x = b for a symmetric positive definite A (n×n, row
// major) by Cholesky, adding a small ridge if A is numerically singular.
func solveSPD(A, b []float64, n int) ([]float64, error) {
	L := make([]float64, n*n)
	for jitter := 0.0; ; {
		ok := true
		for i := 0; i < n && ok; i++ {
			for j := 0; j <= i; j++ {
				s := A[i*n+j]
				if i == j {
					s += jitter
				}
				for q := 0; q < j; q++ {
					s -= L[i*n+q] * L[j*n+q]
				}
				if i == j {
					if s <= 0 {
						ok = false
						break
					}
					L[i*n+i] = math.Sqrt(s)
				} else {
					L[i*n+j] = s / L[j*n+j]
				}
			}
		}
		if ok {
			break
		}
		switch {
		case jitter == 0:
			jitter = 1e-12
		case jitter > 1:
			return nil, fmt.Errorf("logistic regression Hessian is not positive definite")
		default:
			jitter *= 100
		}
	}
	x := slices.Clone(b)
	for i := 0; i < n; i++ {
		for q := 0; q < i; q++ {
			x[i] -= L[i*n+q] * x[q]
		}
		x[i] /= L[i*n+i]
	}
	for i := n - 1; i >= 0; i-- {
		for q := i + 1; q < n; q++ {
			x[i] -= L[q*n+i] * x[q]
		}
		x[i] /= L[i*n+i]
	}
	return x, nil
}

// f1Score is the F1 of class pos: 2·TP/(2·TP + FP + FN); 0 when undefined
// (as scikit-learn's zero_division=0).
func f1Score(truth, pred []int, pos int) float64 {
	var tp, fp, fn float64
	for i := range truth {
		switch {
		case pred[i] == pos && truth[i] == pos:
			tp++
		case pred[i] == pos:
			fp++
		case truth[i] == pos:
			fn++
		}
	}
	if tp == 0 {
		return 0
	}
	return 2 * tp / (2*tp + fp + fn)
}

// macroF1 is the unweighted mean of the F1 of every class that occurs in
// truth or pred (scikit-learn's average="macro").
func macroF1(truth, pred []int, classes int) float64 {
	var s float64
	var used int
	for c := 0; c < classes; c++ {
		if !slices.Contains(truth, c) && !slices.Contains(pred, c) {
			continue
		}
		s += f1Score(truth, pred, c)
		used++
	}
	if used == 0 {
		return 0
	}
	return s / float64(used)
}
