package sae

import "github.com/factlens/factlens/gpt2/kernels"

// TopK SAEs keep the k largest pre-activations of each token and apply ReLU
// to them (SAELens' TopK module). Dead latents are revived by the aux-k loss
// of Gao et al. 2024 (appendix B.1) as SAELens implements it
// (topk_sae.py:calculate_topk_aux_loss): the k_aux = d_in/2 largest raw
// pre-activations among dead latents reconstruct the detached residual
// x − x̂ through the decoder (including b_dec), scaled by min(n_dead/k_aux, 1).

// selectTopK builds acts from the k largest pre-activations of each row,
// keeping only the positive ones.
func (w *workspace) selectTopK(k int) {
	n, dSAE := w.n, w.sae.Config.DSAE
	if cap(w.topIdx) < n*k {
		w.topIdx = make([]int32, n*k)
		w.topVal = make([]float32, n*k)
	}
	w.topIdx, w.topVal = w.topIdx[:n*k], w.topVal[:n*k]
	parallelRows(n, func(lo, hi int) {
		var h topKHeap
		for r := lo; r < hi; r++ {
			h.selectTop(w.pre[r*dSAE:(r+1)*dSAE], k, nil)
			var cnt int32
			for i, j := range h.idx {
				w.topIdx[r*k+i] = j
				w.topVal[r*k+i] = h.val[i]
				if h.val[i] > 0 {
					cnt++
				}
			}
			w.counts[r+1] = cnt
		}
	})
	w.fillCSR(&w.acts, func(r int, emit func(int32, float32)) {
		for i := r * k; i < (r+1)*k; i++ {
			if w.topVal[i] > 0 {
				emit(w.topIdx[i], w.topVal[i])
			}
		}
	})
}

// selectAux builds the aux CSR: per row, the kAux largest raw pre-activations
// among the dead latents.
func (w *workspace) selectAux(dead []int32, kAux int) {
	n, dSAE := w.n, w.sae.Config.DSAE
	w.aux.reset(n, dSAE)
	total := n * kAux
	if cap(w.aux.idx) < total {
		w.aux.idx = make([]int32, total)
		w.aux.val = make([]float32, total)
	}
	w.aux.idx, w.aux.val = w.aux.idx[:total], w.aux.val[:total]
	for r := 0; r <= n; r++ {
		w.aux.ptr[r] = int32(r * kAux)
	}
	parallelRows(n, func(lo, hi int) {
		var h topKHeap
		for r := lo; r < hi; r++ {
			h.selectTop(w.pre[r*dSAE:(r+1)*dSAE], kAux, dead)
			copy(w.aux.idx[r*kAux:(r+1)*kAux], h.idx)
			copy(w.aux.val[r*kAux:(r+1)*kAux], h.val)
		}
	})
}

// auxForward computes the aux-k loss
// scale·mean_b ‖aux_b·W_dec + b_dec − (x_b − x̂_b)‖² on the dead latents'
// own columns, leaving dLoss/d(aux reconstruction) in w.gAux. The products
// are dense over the dead latents only: k_aux = d_in/2 of them per row is far
// too many for sparse loops.
func (w *workspace) auxForward(x []float32, scale float64, residual []float32) float64 {
	s := w.sae
	n, dIn, dSAE := w.n, s.Config.DIn, s.Config.DSAE
	nd := len(w.dead)
	grow := func(b []float32, m int) []float32 {
		if cap(b) < m {
			return make([]float32, m)
		}
		return b[:m]
	}
	if cap(w.deadPos) < dSAE {
		w.deadPos = make([]int32, dSAE)
	}
	w.deadPos = w.deadPos[:dSAE]
	for j := range w.deadPos {
		w.deadPos[j] = -1
	}
	w.wDead = grow(w.wDead, nd*dIn)
	for k, j := range w.dead {
		w.deadPos[j] = int32(k)
		copy(w.wDead[k*dIn:(k+1)*dIn], s.WDec[int(j)*dIn:int(j+1)*dIn])
	}
	w.auxC = grow(w.auxC, n*nd)
	parallelRows(n, func(lo, hi int) {
		clear(w.auxC[lo*nd : hi*nd])
		for r := lo; r < hi; r++ {
			for p := w.aux.ptr[r]; p < w.aux.ptr[r+1]; p++ {
				w.auxC[r*nd+int(w.deadPos[w.aux.idx[p]])] = w.aux.val[p]
			}
		}
	})
	decodeDenseKernel(w.gAux, w.auxC, w.wDead, s.BDec, n, nd, dIn)
	rowSS := make([]float64, n)
	g := float32(2 * scale / float64(n))
	parallelRows(n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			a := w.gAux[r*dIn : (r+1)*dIn]
			xr := x[r*dIn : (r+1)*dIn]
			xh := w.xhat[r*dIn : (r+1)*dIn]
			var ss float64
			for i := range a {
				var f float32
				if residual != nil {
					f = a[i] - residual[r*dIn+i]
				} else {
					f = a[i] - (xr[i] - xh[i])
				}
				ss += float64(f) * float64(f)
				a[i] = g * f
			}
			rowSS[r] = ss
		}
	})
	var sum float64
	for _, v := range rowSS {
		sum += v
	}
	return scale * sum / float64(n)
}

// auxBackward adds the aux-k loss's gradients to W_dec (dead rows), b_enc
// and W_enc (dead columns); b_dec's share is added by the caller.
func (w *workspace) auxBackward(g *grads) {
	s := w.sae
	n, dIn, dSAE := w.n, s.Config.DIn, s.Config.DSAE
	nd := len(w.dead)
	if cap(w.gWDead) < nd*dIn {
		w.gWDead = make([]float32, nd*dIn)
	}
	gw := w.gWDead[:nd*dIn]
	// W_dec rows: auxᵀ·gAux.
	kernels.MatMulTransA(gw, w.auxC, w.gAux, nd, n, dIn, false)
	parallelRows(nd, func(lo, hi int) {
		for k := lo; k < hi; k++ {
			j := int(w.dead[k])
			kernels.Axpy(1, gw[k*dIn:(k+1)*dIn], g.WDec[j*dIn:(j+1)*dIn])
		}
	})
	// dpre at the aux entries: gAux·W_deadᵀ, kept where aux selected.
	if cap(w.dAuxC) < n*nd {
		w.dAuxC = make([]float32, n*nd)
	}
	d := w.dAuxC[:n*nd]
	kernels.MatMulTransB(d, w.gAux, w.wDead, n, dIn, nd, false)
	parallelRows(n, func(lo, hi int) {
		var keep []float32
		for r := lo; r < hi; r++ {
			row := d[r*nd : (r+1)*nd]
			keep = keep[:0]
			for p := w.aux.ptr[r]; p < w.aux.ptr[r+1]; p++ {
				keep = append(keep, row[w.deadPos[w.aux.idx[p]]])
			}
			clear(row)
			for i, p := 0, w.aux.ptr[r]; p < w.aux.ptr[r+1]; i, p = i+1, p+1 {
				row[w.deadPos[w.aux.idx[p]]] = keep[i]
			}
		}
	})
	colSums := make([]float32, nd)
	parallelRows(nd, func(lo, hi int) {
		for r := 0; r < n; r++ {
			kernels.Axpy(1, d[r*nd+lo:r*nd+hi], colSums[lo:hi])
		}
	})
	for k, j := range w.dead {
		g.BEnc[j] += colSums[k]
	}
	// W_enc columns: sae_inᵀ·dAux, [d_in × n_dead].
	gw = gw[:dIn*nd]
	kernels.MatMulTransA(gw, w.saeIn, d, dIn, n, nd, false)
	parallelRows(dIn, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := g.WEnc[i*dSAE : (i+1)*dSAE]
			for k, j := range w.dead {
				row[j] += gw[i*nd+k]
			}
		}
	})
}
