package sae

import (
	"fmt"
	"math"

	"github.com/factlens/factlens/gpt2/kernels"
)

// lossOptions are the per-step coefficients of the training loss.
type lossOptions struct {
	L1       float64 // Standard: current (warmed-up) L1 coefficient
	DeadMask []bool  // TopK: latents counted as dead for the aux-k loss; nil for none
	AuxCoeff float64 // TopK: aux-k loss coefficient (SAELens aux_loss_coefficient, default 1)

	// auxResidual, when set, replaces the detached residual x − x̂ of the
	// aux-k loss, so that finite differences see the same stop-gradient.
	auxResidual []float32
	// path forces the sparse (1) or dense (2) products; 0 chooses by density.
	path int
}

// denseDensity is the fraction of nonzero activations above which the
// decoder and gradient products run as dense matrix products on the fast
// kernels instead of sparse row loops: the kernels run roughly a hundred
// times more FLOP/s than the scalar sparse loops.
const denseDensity = 0.01

// lossParts are the loss terms of one batch, each a mean over the batch.
type lossParts struct {
	Total, MSE, L1, Aux float64
	L0                  float64 // mean active latents per row
	NDead               int     // latents in the dead mask
}

// grads has one slice per parameter, in the parameter's layout.
type grads struct {
	WEnc, BEnc, WDec, BDec []float32
}

func newGrads(c Config) *grads {
	return &grads{
		WEnc: make([]float32, c.DIn*c.DSAE),
		BEnc: make([]float32, c.DSAE),
		WDec: make([]float32, c.DSAE*c.DIn),
		BDec: make([]float32, c.DIn),
	}
}

// workspace holds the buffers of one training step so that steps allocate
// nothing once sized.
type workspace struct {
	n       int
	sae     *SAE
	saeIn   []float32 // n×d_in: x − b_dec
	pre     []float32 // n×d_sae pre-activations
	xhat    []float32 // n×d_in
	gOut    []float32 // n×d_in: dLoss/dxhat
	gAux    []float32 // n×d_in: dLoss/d(aux reconstruction)
	decNorm []float32 // d_sae: ‖W_dec row‖
	acts    csr       // active latents (value > 0)
	aux     csr       // TopK aux-k latents (raw pre-activations)
	dpre    csr       // dLoss/dpre at active entries
	actsT   csr
	dpreT   csr
	gWEncT  []float32 // d_sae×d_in
	topIdx  []int32   // n×k scratch for TopK selection
	topVal  []float32
	counts  []int32
	fired   []bool    // latents active anywhere in the batch
	dense   bool      // this step runs the dense products
	actsD   []float32 // n×d_sae dense activations (dense path)
	actSum  []float32 // d_sae: Σ_b acts_bj

	// The aux-k loss works on the dead latents only, as dense matrices.
	dead    []int32   // dead latents
	deadPos []int32   // d_sae: position in dead, or -1
	wDead   []float32 // n_dead×d_in: their decoder rows
	auxC    []float32 // n×n_dead: aux activations
	dAuxC   []float32 // n×n_dead: dLoss/dpre at aux entries
	gWDead  []float32 // n_dead×d_in and d_in×n_dead gradient scratch
}

func (w *workspace) size(s *SAE, n int) {
	c := s.Config
	w.sae = s
	grow := func(b []float32, m int) []float32 {
		if cap(b) < m {
			return make([]float32, m)
		}
		return b[:m]
	}
	w.n = n
	w.saeIn = grow(w.saeIn, n*c.DIn)
	w.pre = grow(w.pre, n*c.DSAE)
	w.xhat = grow(w.xhat, n*c.DIn)
	w.gOut = grow(w.gOut, n*c.DIn)
	w.gAux = grow(w.gAux, n*c.DIn)
	w.decNorm = grow(w.decNorm, c.DSAE)
	w.actSum = grow(w.actSum, c.DSAE)
	w.gWEncT = grow(w.gWEncT, c.DSAE*c.DIn)
	if cap(w.counts) < n+1 {
		w.counts = make([]int32, n+1)
	}
	w.counts = w.counts[:n+1]
	if cap(w.fired) < c.DSAE {
		w.fired = make([]bool, c.DSAE)
	}
	w.fired = w.fired[:c.DSAE]
}

// lossAndGrad runs the SAELens training forward pass on x [n, d_in] (already
// scaled by any normalization factor), returns the loss terms and, when g is
// non-nil, writes the gradient of the total loss into g:
//
//	sae_in = x − b_dec·apply_b_dec_to_input
//	pre    = sae_in·W_enc + b_enc
//	acts   = ReLU(pre) (Standard) | ReLU(TopK(pre)) (TopK)
//	x̂      = acts·W_dec + b_dec
//	MSE    = mean_b Σ_i (x̂ − x)²
//	L1     = l1 · mean_b Σ_j acts_bj·‖W_dec_j‖                       (Standard)
//	Aux    = c·min(n_dead/k_aux, 1)·mean_b ‖aux·W_dec + b_dec − (x − x̂)‖²  (TopK)
//
// where aux keeps, per row, the k_aux = min(d_in/2, n_dead) largest raw
// pre-activations among dead latents and (x − x̂) is treated as a constant.
func lossAndGrad(s *SAE, x []float32, n int, o lossOptions, w *workspace, g *grads) (lossParts, error) {
	c := s.Config
	if len(x) != n*c.DIn || n == 0 {
		return lossParts{}, fmt.Errorf("sae: batch has %d values, want %d rows of d_in %d", len(x), n, c.DIn)
	}
	if c.Architecture != Standard && c.Architecture != TopK {
		return lossParts{}, fmt.Errorf("sae: training %s SAEs is not implemented (standard and topk are)", c.Architecture)
	}
	w.size(s, n)
	dIn, dSAE := c.DIn, c.DSAE

	// Forward.
	copy(w.saeIn, x)
	if c.ApplyBDecToInput {
		parallelRows(n, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				row := w.saeIn[r*dIn : (r+1)*dIn]
				for i, b := range s.BDec {
					row[i] -= b
				}
			}
		})
	}
	matMul(w.pre, w.saeIn, s.WEnc, n, dIn, dSAE)
	parallelRows(n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := w.pre[r*dSAE : (r+1)*dSAE]
			for j, b := range s.BEnc {
				row[j] += b
			}
		}
	})
	if c.Architecture == TopK {
		w.selectTopK(c.K)
	} else {
		w.selectPositive()
	}
	w.aux.reset(n, dSAE)
	dead := w.dead[:0]
	auxScale := 0.0
	if c.Architecture == TopK && o.DeadMask != nil && o.AuxCoeff != 0 {
		for j, d := range o.DeadMask {
			if d {
				dead = append(dead, int32(j))
			}
		}
		if len(dead) > 0 {
			kAux := dIn / 2
			auxScale = math.Min(float64(len(dead))/float64(kAux), 1) * o.AuxCoeff
			w.selectAux(dead, min(kAux, len(dead)))
		}
	}
	w.dead = dead
	density := float64(w.acts.nnz()) / float64(n*dSAE)
	w.dense = o.path == 2 || (o.path == 0 && density > denseDensity)
	if w.dense {
		w.actsD = scatterDense(w.actsD, &w.acts)
		decodeDenseKernel(w.xhat, w.actsD, s.WDec, s.BDec, n, dSAE, dIn)
	} else {
		decodeCSR(w.xhat, &w.acts, s.WDec, s.BDec, dIn)
	}

	parts := lossParts{L0: float64(w.acts.nnz()) / float64(n), NDead: len(dead)}
	invN := 1 / float64(n)
	// gOut = dMSE/dx̂ = 2(x̂ − x)/n; the per-row sums are reduced in row order
	// so the result does not depend on the number of cores.
	rowSSE := make([]float64, n)
	parallelRows(n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xh := w.xhat[r*dIn : (r+1)*dIn]
			xr := x[r*dIn : (r+1)*dIn]
			go_ := w.gOut[r*dIn : (r+1)*dIn]
			var ss float64
			for i := range xh {
				e := xh[i] - xr[i]
				ss += float64(e) * float64(e)
				go_[i] = float32(2*invN) * e
			}
			rowSSE[r] = ss
		}
	})
	for _, v := range rowSSE {
		parts.MSE += v
	}
	parts.MSE *= invN

	rowNorms(w.decNorm, s.WDec, dSAE, dIn)
	if c.Architecture == Standard && o.L1 != 0 {
		var l1 float64
		for r := 0; r < n; r++ {
			for p := w.acts.ptr[r]; p < w.acts.ptr[r+1]; p++ {
				l1 += float64(w.acts.val[p]) * float64(w.decNorm[w.acts.idx[p]])
			}
		}
		parts.L1 = o.L1 * l1 * invN
	}

	if auxScale != 0 {
		parts.Aux = w.auxForward(x, auxScale, o.auxResidual)
	}
	parts.Total = parts.MSE + parts.L1 + parts.Aux
	for j := range w.fired {
		w.fired[j] = false
	}
	for _, j := range w.acts.idx {
		w.fired[j] = true
	}
	if g == nil {
		return parts, nil
	}

	// Backward.
	l1PerAct := float32(o.L1 * invN)
	if c.Architecture != Standard {
		l1PerAct = 0
	}
	clear(w.actSum)
	for p, j := range w.acts.idx {
		w.actSum[j] += w.acts.val[p]
	}
	if w.dense {
		w.backwardDense(g, l1PerAct)
	} else {
		w.backwardSparse(g, l1PerAct)
	}
	if auxScale != 0 {
		w.auxBackward(g)
	}
	if c.Architecture == Standard && l1PerAct != 0 {
		// The penalty's share of dW_dec: l1/n·(Σ_b acts_bj)·W_dec_j/‖W_dec_j‖.
		parallelRows(dSAE, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				if w.actSum[j] != 0 && w.decNorm[j] > 0 {
					kernels.Axpy(l1PerAct*w.actSum[j]/w.decNorm[j], s.WDec[j*dIn:(j+1)*dIn], g.WDec[j*dIn:(j+1)*dIn])
				}
			}
		})
	}

	// b_dec: the decoder bias of x̂ and of the aux reconstruction, minus the
	// encoder input's share W_enc·Σ_b dpre_b.
	clear(g.BDec)
	for r := 0; r < n; r++ {
		kernels.Axpy(1, w.gOut[r*dIn:(r+1)*dIn], g.BDec)
		if auxScale != 0 {
			kernels.Axpy(1, w.gAux[r*dIn:(r+1)*dIn], g.BDec)
		}
	}
	if c.ApplyBDecToInput {
		for i := 0; i < dIn; i++ {
			g.BDec[i] -= kernels.Dot(s.WEnc[i*dSAE:(i+1)*dSAE], g.BEnc)
		}
	}
	return parts, nil
}

// backwardSparse computes the gradients of W_enc, b_enc and W_dec with
// per-row and per-latent loops over the active entries only.
func (w *workspace) backwardSparse(g *grads, l1PerAct float32) {
	s := w.sae
	dIn, dSAE := s.Config.DIn, s.Config.DSAE
	w.buildDpre(l1PerAct)
	clear(g.BEnc)
	for p, j := range w.dpre.idx {
		g.BEnc[j] += w.dpre.val[p]
	}
	// dW_encᵀ[j] = Σ_b dpre_bj·sae_in_b, one latent per task.
	w.dpre.transpose(&w.dpreT)
	parallelRows(dSAE, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			gj := w.gWEncT[j*dIn : (j+1)*dIn]
			clear(gj)
			for p := w.dpreT.ptr[j]; p < w.dpreT.ptr[j+1]; p++ {
				b := w.dpreT.idx[p]
				kernels.Axpy(w.dpreT.val[p], w.saeIn[int(b)*dIn:int(b+1)*dIn], gj)
			}
		}
	})
	transposeInto(g.WEnc, w.gWEncT, dSAE, dIn)

	// dW_dec[j] = Σ_b acts_bj·gOut_b.
	w.acts.transpose(&w.actsT)
	parallelRows(dSAE, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			gj := g.WDec[j*dIn : (j+1)*dIn]
			clear(gj)
			for p := w.actsT.ptr[j]; p < w.actsT.ptr[j+1]; p++ {
				b := w.actsT.idx[p]
				kernels.Axpy(w.actsT.val[p], w.gOut[int(b)*dIn:int(b+1)*dIn], gj)
			}
		}
	})
}

// backwardDense computes the same gradients with dense products on the
// kernels; w.pre is overwritten with dLoss/dpre.
func (w *workspace) backwardDense(g *grads, l1PerAct float32) {
	s := w.sae
	n, dIn, dSAE := w.n, s.Config.DIn, s.Config.DSAE
	kernels.MatMulTransA(g.WDec, w.actsD, w.gOut, dSAE, n, dIn, false)
	dpre := w.pre
	kernels.MatMulTransB(dpre, w.gOut, s.WDec, n, dIn, dSAE, false)
	// Keep dActs only where the latent is active (ReLU/TopK pass nothing
	// elsewhere) and add the L1 penalty's l1/n·‖W_dec_j‖.
	parallelRows(n, func(lo, hi int) {
		var keep []float32
		for r := lo; r < hi; r++ {
			row := dpre[r*dSAE : (r+1)*dSAE]
			keep = keep[:0]
			for p := w.acts.ptr[r]; p < w.acts.ptr[r+1]; p++ {
				j := w.acts.idx[p]
				keep = append(keep, row[j]+l1PerAct*w.decNorm[j])
			}
			clear(row)
			for i, p := 0, w.acts.ptr[r]; p < w.acts.ptr[r+1]; i, p = i+1, p+1 {
				row[w.acts.idx[p]] = keep[i]
			}
		}
	})
	// b_enc: column sums of dpre, by column ranges.
	parallelRows(dSAE, func(lo, hi int) {
		col := g.BEnc[lo:hi]
		clear(col)
		for r := 0; r < n; r++ {
			kernels.Axpy(1, dpre[r*dSAE+lo:r*dSAE+hi], col)
		}
	})
	kernels.MatMulTransA(g.WEnc, w.saeIn, dpre, dIn, n, dSAE, false)
}

// scatterDense writes a CSR matrix into a dense buffer (resized as needed).
func scatterDense(buf []float32, m *csr) []float32 {
	size := m.rows * m.cols
	if cap(buf) < size {
		buf = make([]float32, size)
	}
	buf = buf[:size]
	parallelRows(m.rows, func(lo, hi int) {
		clear(buf[lo*m.cols : hi*m.cols])
		for r := lo; r < hi; r++ {
			for p := m.ptr[r]; p < m.ptr[r+1]; p++ {
				buf[r*m.cols+int(m.idx[p])] = m.val[p]
			}
		}
	})
	return buf
}

// decodeDenseKernel computes out = acts·wDec + bDec with the kernels.
func decodeDenseKernel(out, acts, wDec, bDec []float32, n, dSAE, dIn int) {
	for r := 0; r < n; r++ {
		copy(out[r*dIn:(r+1)*dIn], bDec)
	}
	kernels.MatMul(out, acts, wDec, n, dSAE, dIn, true)
}

// selectPositive builds acts from the positive pre-activations (ReLU).
func (w *workspace) selectPositive() {
	n, dSAE := w.n, w.sae.Config.DSAE
	parallelRows(n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			var cnt int32
			for _, v := range w.pre[r*dSAE : (r+1)*dSAE] {
				if v > 0 {
					cnt++
				}
			}
			w.counts[r+1] = cnt
		}
	})
	w.fillCSR(&w.acts, func(r int, emit func(int32, float32)) {
		for j, v := range w.pre[r*dSAE : (r+1)*dSAE] {
			if v > 0 {
				emit(int32(j), v)
			}
		}
	})
}

// fillCSR sizes m from w.counts[1:] (per-row entry counts) and fills each row
// in parallel with the entries that fill emits, in order.
func (w *workspace) fillCSR(m *csr, fill func(r int, emit func(int32, float32))) {
	n := w.n
	m.reset(n, w.sae.Config.DSAE)
	for r := 0; r < n; r++ {
		m.ptr[r+1] = m.ptr[r] + w.counts[r+1]
	}
	total := int(m.ptr[n])
	if cap(m.idx) < total {
		m.idx = make([]int32, total)
		m.val = make([]float32, total)
	}
	m.idx, m.val = m.idx[:total], m.val[:total]
	parallelRows(n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			p := m.ptr[r]
			fill(r, func(j int32, v float32) {
				m.idx[p], m.val[p] = j, v
				p++
			})
		}
	})
}

// decodeCSR computes out[n×dIn] = acts·wDec + bDec.
func decodeCSR(out []float32, acts *csr, wDec, bDec []float32, dIn int) {
	parallelRows(acts.rows, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			o := out[r*dIn : (r+1)*dIn]
			copy(o, bDec)
			for p := acts.ptr[r]; p < acts.ptr[r+1]; p++ {
				j := int(acts.idx[p])
				kernels.Axpy(acts.val[p], wDec[j*dIn:(j+1)*dIn], o)
			}
		}
	})
}

// buildDpre writes dLoss/dpre for every active entry (through the decoder and
// the L1 penalty).
func (w *workspace) buildDpre(l1PerAct float32) {
	n, dIn := w.n, w.sae.Config.DIn
	wDec := w.sae.WDec
	for r := 0; r < n; r++ {
		w.counts[r+1] = w.acts.ptr[r+1] - w.acts.ptr[r]
	}
	w.fillCSR(&w.dpre, func(r int, emit func(int32, float32)) {
		gOut := w.gOut[r*dIn : (r+1)*dIn]
		for p := w.acts.ptr[r]; p < w.acts.ptr[r+1]; p++ {
			j := w.acts.idx[p]
			v := kernels.Dot(gOut, wDec[int(j)*dIn:int(j+1)*dIn]) + l1PerAct*w.decNorm[j]
			emit(j, v)
		}
	})
}

// rowNorms writes the Euclidean norm of each of the rows of m [rows×cols].
func rowNorms(out, m []float32, rows, cols int) {
	parallelRows(rows, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			r := m[j*cols : (j+1)*cols]
			out[j] = float32(math.Sqrt(float64(kernels.Dot(r, r))))
		}
	})
}

// transposeInto writes srcᵀ [cols×rows] into dst. Each task fills whole
// destination rows, gathering 16×16 tiles so that the strided reads stay in
// cache (10× faster than tiles written along the source rows).
func transposeInto(dst, src []float32, rows, cols int) {
	const blk = 16
	parallelRows((cols+blk-1)/blk, func(lo, hi int) {
		for cb := lo * blk; cb < min(hi*blk, cols); cb += blk {
			ce := min(cb+blk, cols)
			for rb := 0; rb < rows; rb += blk {
				re := min(rb+blk, rows)
				for c := cb; c < ce; c++ {
					d := dst[c*rows+rb : c*rows+re]
					for i := range d {
						d[i] = src[(rb+i)*cols+c]
					}
				}
			}
		}
	})
}
