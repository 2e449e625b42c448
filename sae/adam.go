package sae

import "math"

// adam is torch.optim.Adam (no weight decay, no amsgrad) over a fixed list of
// float32 parameters:
//
//	m ← β1·m + (1−β1)·g,  v ← β2·v + (1−β2)·g²
//	p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)
//
// spago's optimizers/adam adds ε to √v before bias correction and allocates
// several matrices per step, so it neither matches PyTorch nor keeps up with a
// 12288×3072 decoder; this one updates in place, split across cores.
type adam struct {
	Beta1, Beta2, Eps float64
	Step              int         // number of updates done
	M, V              [][]float32 // per parameter
}

func newAdam(beta1, beta2, eps float64, sizes ...int) *adam {
	a := &adam{Beta1: beta1, Beta2: beta2, Eps: eps}
	for _, n := range sizes {
		a.M = append(a.M, make([]float32, n))
		a.V = append(a.V, make([]float32, n))
	}
	return a
}

// update applies one step with learning rate lr to params given grads (same
// order and sizes as at construction).
func (a *adam) update(lr float64, params, grads [][]float32) {
	a.Step++
	t := float64(a.Step)
	bc1 := 1 - math.Pow(a.Beta1, t)
	bc2 := 1 - math.Pow(a.Beta2, t)
	stepSize := float32(lr / bc1)
	invSqrtBC2 := float32(1 / math.Sqrt(bc2))
	b1, b2 := float32(a.Beta1), float32(a.Beta2)
	eps := float32(a.Eps)
	for k, p := range params {
		g, m, v := grads[k], a.M[k], a.V[k]
		parallelRows(len(p), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				gi := g[i]
				mi := b1*m[i] + (1-b1)*gi
				vi := b2*v[i] + (1-b2)*gi*gi
				m[i], v[i] = mi, vi
				denom := float32(math.Sqrt(float64(vi)))*invSqrtBC2 + eps
				p[i] -= stepSize * mi / denom
			}
		})
	}
}

// lrFactor is SAELens' learning-rate multiplier at a 0-based step with the
// constant scheduler: linear warm-up (step+1)/warmUp, then 1, then a linear
// decay to 0 over the last decay steps.
func lrFactor(step, total, warmUp, decay int) float64 {
	f := 1.0
	if warmUp > 0 && step < warmUp {
		f = float64(step+1) / float64(warmUp)
	}
	if decay > 0 && step >= total-decay {
		f = math.Min(f, float64(total-step)/float64(decay))
	}
	return math.Max(f, 0)
}

// l1Factor is the L1 warm-up multiplier min(1, (step+1)/warmUp).
func l1Factor(step, warmUp int) float64 {
	if warmUp <= 0 || step >= warmUp {
		return 1
	}
	return float64(step+1) / float64(warmUp)
}
