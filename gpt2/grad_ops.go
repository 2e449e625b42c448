package gpt2

import (
	"math"
	"runtime"
	"slices"

	"github.com/factlens/factlens/gpt2/kernels"
	"github.com/factlens/factlens/weights"
	"github.com/nlpodyssey/spago/mat"
)

// The ops of gradient mode. Each computes its value like the fast forward
// (same kernels, same rounding wherever the order of work allows) and
// returns a node that is not yet a spago operator: graph.point or node.run
// makes it one. Backward closures send the gradient of every operand that
// wants one; parameter gradients are added straight into the leaf's buffer.

// weightRef is a parameter, or a column block of one: columns off… of a
// row-major matrix with leading dimension ld (a bias when ld is 0).
type weightRef struct {
	t       mat.Tensor // the leaf; nil when the parameter was folded away
	data    []float32
	ld, off int
}

// embed makes hook_embed (wte rows) and hook_pos_embed (wpe rows, zero at
// pads).
func (g *graph) embed() (embed, pos *node) {
	pm, d := &g.m.p, g.d
	E := make([]float32, g.bp*d)
	P := make([]float32, g.bp*d)
	var toks []int
	for _, row := range g.in.tokens {
		toks = append(toks, row...)
	}
	for i, tok := range toks {
		copy(E[i*d:(i+1)*d], pm.wte[tok*d:(tok+1)*d])
		if g.isReal(i) {
			p := g.in.pos[i]
			copy(P[i*d:(i+1)*d], pm.wpe[p*d:(p+1)*d])
		}
	}
	wte, wpe := g.leaf(pm.wte), g.leaf(pm.wpe)
	embed = g.newNode(E, g.bp, d, func(n *node, gy []float32) {
		n.accParam(wte, func(grad []float32) {
			for i, tok := range toks {
				addInto(grad[tok*d:(tok+1)*d], gy[i*d:(i+1)*d])
			}
		})
	}, wte)
	pos = g.newNode(P, g.bp, d, func(n *node, gy []float32) {
		n.accParam(wpe, func(grad []float32) {
			for i := range toks {
				if g.isReal(i) {
					p := g.in.pos[i]
					addInto(grad[p*d:(p+1)*d], gy[i*d:(i+1)*d])
				}
			}
		})
	}, wpe)
	return embed, pos
}

// isReal reports whether flat position i holds a real token (not padding).
func (g *graph) isReal(i int) bool { return g.in.real == nil || g.in.real[i] }

// visible reports whether query t of batch row bi may attend to key j.
func (g *graph) visible(bi, t, j int) bool {
	return j <= t && (g.in.real == nil || g.in.real[bi*g.p+j])
}

func (g *graph) add(a, b *node) *node {
	out := slices.Clone(a.data)
	addInto(out, b.data)
	return g.newNode(out, g.bp, g.d, func(n *node, gy []float32) {
		n.acc(a.op, gy)
		n.acc(b.op, gy)
	}, a.op, b.op)
}

// identity shares a's data: a hook on the new node may change it in place,
// but nothing reads a's value any more (its cache copy is taken, and no
// backward pass reads the output of an add).
func (g *graph) identity(a *node) *node {
	return g.newNode(a.data, g.bp, g.d, func(n *node, gy []float32) {
		n.acc(a.op, gy)
	}, a.op)
}

// lnScale is a LayerNorm's hook_scale: s = √(mean((x − mean x)²) + eps).
// It also returns x − mean x, which the LayerNorm's other node and both
// backward passes reuse (x never changes once its hooks have run).
// ds/dx_j = (x_j − mean x)/(d·s); the mean's own derivative cancels.
func (g *graph) lnScale(x *node) (*node, []float32) {
	d, eps := g.d, g.m.eps
	s := make([]float32, g.bp)
	c := make([]float32, len(x.data))
	layerNormStats(c, s, x.data, d, eps)
	s0 := slices.Clone(s) // s itself may be changed by a hook
	return g.newNode(s, g.bp, 1, func(n *node, gy []float32) {
		if !needs(x.op) {
			return
		}
		dx := g.buf(len(c))
		rowBlocks(g.bp, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				f := gy[i] / (float32(d) * s0[i])
				for j, v := range c[i*d : (i+1)*d] {
					dx[i*d+j] = v * f
				}
			}
		})
		n.acc(x.op, dx)
		g.release(dx)
	}, x.op), c
}

// lnNorm is a LayerNorm's hook_normalized: y = c/s·w + b with c = x − mean x
// and s the (possibly hooked) hook_scale; no w, b once folded.
func (g *graph) lnNorm(x, s *node, c, w, b []float32) *node {
	d := g.d
	out := slices.Clone(c)
	layerNormApply(out, s.data, w, b, d)
	wT, bT := g.leaf(w), g.leaf(b)
	return g.newNode(out, g.bp, d, func(n *node, gy []float32) {
		if needs(wT) || needs(bT) {
			dw, db := make([]float64, d), make([]float64, d)
			for i := 0; i < g.bp; i++ {
				inv := 1 / float64(s.data[i])
				for j, gv := range gy[i*d : (i+1)*d] {
					dw[j] += float64(gv) * float64(c[i*d+j]) * inv
					db[j] += float64(gv)
				}
			}
			n.accParam(wT, func(grad []float32) { addFloat64(grad, dw) })
			n.accParam(bT, func(grad []float32) { addFloat64(grad, db) })
		}
		ds := g.buf(g.bp)
		dx := g.buf(len(c))
		rowBlocks(g.bp, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				inv := 1 / float64(s.data[i])
				gr, cr, dr := gy[i*d:(i+1)*d], c[i*d:(i+1)*d], dx[i*d:(i+1)*d]
				var sumGC, sumGWC float64
				for j := range gr {
					gw := float64(gr[j])
					if w != nil {
						gw *= float64(w[j])
					}
					gc := gw * inv
					dr[j] = float32(gc)
					sumGC += gc
					sumGWC += gw * float64(cr[j])
				}
				mean := float32(sumGC / float64(d))
				for j := range dr {
					dr[j] -= mean
				}
				ds[i] = float32(-sumGWC * inv * inv)
			}
		})
		n.acc(s.op, ds)
		n.acc(x.op, dx)
		g.release(ds, dx)
	}, x.op, s.op, wT, bT)
}

// rowBlocks runs fn over [0, rows) in blocks of 32 rows on all cores.
func rowBlocks(rows int, fn func(lo, hi int)) {
	const size = 32
	parallelFor((rows+size-1)/size, func(_, blk int) { fn(blk*size, min((blk+1)*size, rows)) })
}

func addFloat64(dst []float32, src []float64) {
	for i, v := range src {
		dst[i] += float32(v)
	}
}

// linear is a Conv1D: y[rows×out] = x[rows×in]·W + bias, where W is the
// column block w (e.g. c_attn's q, k or v third).
func (g *graph) linear(x *node, w, bias weightRef, in, out int) *node {
	rows := len(x.data) / in
	plain := w.off == 0 && w.ld == out
	y := make([]float32, rows*out)
	fillRows(y, bias.data[bias.off:bias.off+out], rows)
	if plain {
		kernels.MatMul(y, x.data, w.data, rows, in, out, true)
	} else {
		kernels.GEMM(false, false, rows, out, in, x.data, in, w.data[w.off:], w.ld, y, out, true)
	}
	return g.newNode(y, rows, out, func(n *node, gy []float32) {
		n.accParam(w.t, func(grad []float32) {
			if plain {
				kernels.MatMulTransA(grad, x.data, gy, in, rows, out, true)
			} else {
				kernels.GEMM(true, false, in, out, rows, x.data, in, gy, out, grad[w.off:], w.ld, true)
			}
		})
		n.accParam(bias.t, func(grad []float32) { addColumnSums(grad[bias.off:bias.off+out], gy, rows) })
		if needs(x.op) {
			dx := g.buf(rows * in)
			if plain {
				kernels.MatMulTransB(dx, gy, w.data, rows, out, in, false)
			} else {
				kernels.GEMM(false, true, rows, in, out, gy, out, w.data[w.off:], w.ld, dx, in, false)
			}
			n.acc(x.op, dx)
			g.release(dx)
		}
	}, x.op, w.t, bias.t)
}

// addColumnSums adds the column sums of m [rows×len(dst)] to dst.
func addColumnSums(dst, m []float32, rows int) {
	cols := len(dst)
	acc := make([]float64, cols)
	for i := 0; i < rows; i++ {
		for j, v := range m[i*cols : (i+1)*cols] {
			acc[j] += float64(v)
		}
	}
	addFloat64(dst, acc)
}

// headOff is where (batch row, head) bh = bi·h + hi starts in a
// [b, p, h, d_head] tensor; that head's [p, d_head] block has leading
// dimension d.
func (g *graph) headOff(bh int) int {
	bi, hi := bh/g.h, bh%g.h
	return bi*g.p*g.d + hi*g.dh
}

// headScores fills s [p×p] with q_h·k_hᵀ·scale for one (batch, head), -Inf
// where the causal or padding mask hides the key.
func (g *graph) headScores(bh int, s, q, k []float32, scale float32) {
	p, d, off := g.p, g.d, g.headOff(bh)
	kernels.GEMM(false, true, p, p, g.dh, q[off:], d, k[off:], d, s, p, false)
	bi, negInf := bh/g.h, float32(math.Inf(-1))
	for t := 0; t < p; t++ {
		row := s[t*p : (t+1)*p]
		for j := range row {
			if g.visible(bi, t, j) {
				row[j] *= scale
			} else {
				row[j] = negInf
			}
		}
	}
}

// headSoftmax turns one (batch, head) of scores into its pattern in place,
// as the fast forward does: over the whole row when a hook may have changed
// the scores, else over the causal part, with rows of pad queries all zero.
func (g *graph) headSoftmax(s []float32, hooked bool) {
	p := g.p
	if !hooked && g.in.real == nil {
		kernels.CausalSoftmaxRows(s, p, p, 0)
		return
	}
	for t := 0; t < p; t++ {
		row := s[t*p : (t+1)*p]
		if hooked {
			softmax(row)
			continue
		}
		softmax(row[:t+1])
		clear(row[t+1:])
	}
}

// softmaxBackward turns dP into dS = P⊙(dP − Σ P⊙dP) row by row, in place,
// times scale.
func softmaxBackward(dP, P []float32, p int, scale float32) {
	for t := 0; t < len(P)/p; t++ {
		pr, gr := P[t*p:(t+1)*p], dP[t*p:(t+1)*p]
		var dot float64
		for j, x := range pr {
			dot += float64(x) * float64(gr[j])
		}
		dt := float32(dot)
		for j, x := range pr {
			gr[j] = x * (gr[j] - dt) * scale
		}
	}
}

// scratch returns per-worker buffers of n floats for parallelFor.
func scratch(n int) [][]float32 {
	s := make([][]float32, runtime.GOMAXPROCS(0))
	for i := range s {
		s[i] = make([]float32, n)
	}
	return s
}

// scores is hook_attn_scores [b, h, q, k] from q and k.
func (g *graph) scores(q, k *node, scale float32) *node {
	pp := g.p * g.p
	S := make([]float32, g.b*g.h*pp)
	parallelFor(g.b*g.h, func(_, bh int) { g.headScores(bh, S[bh*pp:(bh+1)*pp], q.data, k.data, scale) })
	return g.newNode(S, g.b*g.h*g.p, g.p, func(n *node, gy []float32) {
		g.scoresBackward(n, gy, q, k, scale)
	}, q.op, k.op)
}

// scoresBackward sends dq = dS·k·scale and dk = dSᵀ·q·scale, ignoring
// masked entries (constants as far as q and k go).
func (g *graph) scoresBackward(n *node, dS []float32, q, k *node, scale float32) {
	if !needs(q.op) && !needs(k.op) {
		return
	}
	p, pp := g.p, g.p*g.p
	dq, dk := g.buf(len(q.data)), g.buf(len(k.data))
	bufs := scratch(pp)
	parallelFor(g.b*g.h, func(worker, bh int) {
		ds, bi := bufs[worker], bh/g.h
		copy(ds, dS[bh*pp:(bh+1)*pp])
		for t := 0; t < p; t++ {
			for j := 0; j < p; j++ {
				if g.visible(bi, t, j) {
					ds[t*p+j] *= scale
				} else {
					ds[t*p+j] = 0
				}
			}
		}
		g.scoresToQK(bh, ds, q.data, k.data, dq, dk)
	})
	n.acc(q.op, dq)
	n.acc(k.op, dk)
	g.release(dq, dk)
}

// scoresToQK writes one head's dq = dS·k and dk = dSᵀ·q (dS already scaled).
func (g *graph) scoresToQK(bh int, ds, q, k, dq, dk []float32) {
	p, d, off := g.p, g.d, g.headOff(bh)
	kernels.GEMM(false, false, p, g.dh, p, ds, p, k[off:], d, dq[off:], d, false)
	kernels.GEMM(true, false, p, g.dh, p, ds, p, q[off:], d, dk[off:], d, false)
}

// softmax is hook_pattern from hook_attn_scores.
func (g *graph) softmax(s *node, hooked bool) *node {
	pp := g.p * g.p
	P := slices.Clone(s.data)
	parallelFor(g.b*g.h, func(_, bh int) { g.headSoftmax(P[bh*pp:(bh+1)*pp], hooked) })
	return g.newNode(P, g.b*g.h*g.p, g.p, func(n *node, gy []float32) {
		if !needs(s.op) {
			return
		}
		dS := g.buf(len(gy))
		copy(dS, gy)
		parallelFor(g.b*g.h, func(_, bh int) {
			softmaxBackward(dS[bh*pp:(bh+1)*pp], P[bh*pp:(bh+1)*pp], g.p, 1)
		})
		n.acc(s.op, dS)
		g.release(dS)
	}, s.op)
}

// headMix computes one head's z = P·v.
func (g *graph) headMix(bh int, P, v, z []float32) {
	p, d, off := g.p, g.d, g.headOff(bh)
	kernels.GEMM(false, false, p, g.dh, p, P, p, v[off:], d, z[off:], d, false)
}

// mix is hook_z [b, p, h, d_head] = pattern·v per head.
func (g *graph) mix(pat, v *node) *node {
	pp := g.p * g.p
	z := make([]float32, g.bp*g.d)
	parallelFor(g.b*g.h, func(_, bh int) { g.headMix(bh, pat.data[bh*pp:(bh+1)*pp], v.data, z) })
	return g.newNode(z, g.bp, g.d, func(n *node, gy []float32) {
		p, d := g.p, g.d
		var dP, dv []float32
		if needs(pat.op) {
			dP = g.buf(len(pat.data))
		}
		if needs(v.op) {
			dv = g.buf(len(v.data))
		}
		parallelFor(g.b*g.h, func(_, bh int) {
			off, P := g.headOff(bh), pat.data[bh*pp:(bh+1)*pp]
			if dP != nil {
				kernels.GEMM(false, true, p, p, g.dh, gy[off:], d, v.data[off:], d, dP[bh*pp:], p, false)
			}
			if dv != nil {
				kernels.GEMM(true, false, p, g.dh, p, P, p, gy[off:], d, dv[off:], d, false)
			}
		})
		n.acc(pat.op, dP)
		n.acc(v.op, dv)
		g.release(dP, dv)
	}, pat.op, v.op)
}

// attention is hook_z straight from q, k, v when no hook point in between
// is needed: one node per layer that keeps the pattern for its backward.
func (g *graph) attention(q, k, v *node, scale float32) *node {
	p, pp := g.p, g.p*g.p
	P := make([]float32, g.b*g.h*pp)
	z := make([]float32, g.bp*g.d)
	parallelFor(g.b*g.h, func(_, bh int) {
		s := P[bh*pp : (bh+1)*pp]
		g.headScores(bh, s, q.data, k.data, scale)
		g.headSoftmax(s, false)
		g.headMix(bh, s, v.data, z)
	})
	return g.newNode(z, g.bp, g.d, func(n *node, gy []float32) {
		d := g.d
		needQK := needs(q.op) || needs(k.op)
		var dq, dk, dv []float32
		if needQK {
			dq, dk = g.buf(len(q.data)), g.buf(len(k.data))
		}
		if needs(v.op) {
			dv = g.buf(len(v.data))
		}
		bufs := scratch(pp)
		parallelFor(g.b*g.h, func(worker, bh int) {
			off, Pb := g.headOff(bh), P[bh*pp:(bh+1)*pp]
			if dv != nil {
				kernels.GEMM(true, false, p, g.dh, p, Pb, p, gy[off:], d, dv[off:], d, false)
			}
			if needQK {
				ds := bufs[worker]
				kernels.GEMM(false, true, p, p, g.dh, gy[off:], d, v.data[off:], d, ds, p, false)
				softmaxBackward(ds, Pb, p, scale)
				g.scoresToQK(bh, ds, q.data, k.data, dq, dk)
			}
		})
		n.acc(q.op, dq)
		n.acc(k.op, dk)
		n.acc(v.op, dv)
		g.release(dq, dk, dv)
	}, q.op, k.op, v.op)
}

// headResults is hook_result [b, p, h, d_model]: each head's z_h·W_O[h].
func (g *graph) headResults(z *node, w weightRef) *node {
	bp, d, h, dh := g.bp, g.d, g.h, g.dh
	res := make([]float32, bp*h*d)
	for hi := 0; hi < h; hi++ {
		kernels.GEMM(false, false, bp, d, dh, z.data[hi*dh:], d, w.data[hi*dh*d:], d, res[hi*d:], h*d, false)
	}
	return g.newNode(res, bp*h, d, func(n *node, gy []float32) {
		n.accParam(w.t, func(grad []float32) {
			for hi := 0; hi < h; hi++ {
				kernels.GEMM(true, false, dh, d, bp, z.data[hi*dh:], d, gy[hi*d:], h*d, grad[hi*dh*d:], d, true)
			}
		})
		if needs(z.op) {
			dz := g.buf(len(z.data))
			for hi := 0; hi < h; hi++ {
				kernels.GEMM(false, true, bp, dh, d, gy[hi*d:], h*d, w.data[hi*dh*d:], d, dz[hi*dh:], d, false)
			}
			n.acc(z.op, dz)
			g.release(dz)
		}
	}, z.op, w.t)
}

// sumHeads is hook_attn_out = b_O + Σ_h hook_result.
func (g *graph) sumHeads(r *node, bias weightRef) *node {
	out := make([]float32, g.bp*g.d)
	sumHeads(out, r.data, bias.data, g.bp, g.h, g.d)
	return g.newNode(out, g.bp, g.d, func(n *node, gy []float32) {
		n.accParam(bias.t, func(grad []float32) { addColumnSums(grad, gy, g.bp) })
		if needs(r.op) {
			dr := g.buf(len(r.data))
			d := g.d
			for i := 0; i < g.bp; i++ {
				for hi := 0; hi < g.h; hi++ {
					copy(dr[(i*g.h+hi)*d:][:d], gy[i*d:(i+1)*d])
				}
			}
			n.acc(r.op, dr)
			g.release(dr)
		}
	}, r.op, bias.t)
}

// activation is mlp.hook_post from mlp.hook_pre.
func (g *graph) activation(pre *node) *node {
	act := g.m.act
	out := slices.Clone(pre.data)
	var f func([]float32)
	switch act {
	case weights.ActivationGELUTanh:
		f = kernels.GELU
	case weights.ActivationGELUErf:
		f = geluErf
	default:
		f = relu
	}
	chunks(len(out), func(lo, hi int) { f(out[lo:hi]) })
	return g.newNode(out, g.bp, g.dm, func(n *node, gy []float32) {
		if !needs(pre.op) {
			return
		}
		// The fast GELU derivative reads the output: only valid where no hook
		// changed it.
		fromOutput := act == weights.ActivationGELUTanh && len(n.changed) == 0
		dx := g.buf(len(gy))
		chunks(len(dx), func(lo, hi int) {
			if fromOutput {
				geluTanhBackward(dx[lo:hi], gy[lo:hi], pre.data[lo:hi], out[lo:hi])
			} else {
				activationBackward(act, dx[lo:hi], gy[lo:hi], pre.data[lo:hi])
			}
		})
		n.acc(pre.op, dx)
		g.release(dx)
	}, pre.op)
}

// chunks splits [0, n) into pieces of 16384 run on all cores.
func chunks(n int, fn func(lo, hi int)) {
	const size = 16384
	parallelFor((n+size-1)/size, func(_, c int) { fn(c*size, min((c+1)*size, n)) })
}

// geluTanhBackward sets dx = gy·f'(x) for f = gelu_new given y = f(x),
// without an exponential: r = 2y/x = 1 + tanh u and 1 − tanh² u = (2 − r)·r,
// so f' = ½r + ½x·(2 − r)·r·c(1 + 3a x²), free of cancellation. Near x = 0
// it falls back to activationBackward.
func geluTanhBackward(dx, gy, x, y []float32) {
	const c, a = 0.7978845608028654, 0.044715
	for i, v := range x {
		u := float64(v)
		if math.Abs(u) < 1e-20 {
			activationBackward(weights.ActivationGELUTanh, dx[i:i+1], gy[i:i+1], x[i:i+1])
			continue
		}
		r := 2 * float64(y[i]) / u
		dx[i] = gy[i] * float32(0.5*r+0.5*u*(2-r)*r*c*(1+3*a*u*u))
	}
}

// activationBackward sets dx = gy·f'(x) for the activation act.
func activationBackward(act string, dx, gy, x []float32) {
	switch act {
	case weights.ActivationGELUTanh:
		// f = ½x(1 + tanh u), u = c(x + a x³):
		// f' = ½(1 + tanh u) + ½x(1 − tanh² u)·c(1 + 3a x²),
		// with tanh u = 1 − 2/(e^{2u} + 1), which saturates correctly.
		const c, a = 0.7978845608028654, 0.044715
		for i, v := range x {
			u := float64(v)
			th := 1 - 2/(math.Exp(2*c*(u+a*u*u*u))+1)
			dx[i] = gy[i] * float32(0.5*(1+th)+0.5*u*(1-th*th)*c*(1+3*a*u*u))
		}
	case weights.ActivationGELUErf:
		// f = xΦ(x): f' = Φ(x) + xφ(x).
		for i, v := range x {
			u := float64(v)
			dx[i] = gy[i] * float32(0.5*(1+math.Erf(u/math.Sqrt2))+u*math.Exp(-0.5*u*u)/math.Sqrt(2*math.Pi))
		}
	default:
		for i, v := range x {
			if v > 0 {
				dx[i] = gy[i]
			}
		}
	}
}

// unembed applies the unembedding to every position (LogitsAll) or to each
// row's last one (LogitsLast). Its backward works only on the rows whose
// logits have a nonzero gradient (one, for a logit difference).
func (g *graph) unembed(x *node) *node {
	pm, d, v := &g.m.p, g.d, g.v
	var sel []int // rows of x used
	for bi := 0; bi < g.b; bi++ {
		for t := 0; t < g.p; t++ {
			if g.logitsOf == LogitsAll || t == g.p-1 {
				sel = append(sel, bi*g.p+t)
			}
		}
	}
	xs := gatherRows(x.data, sel, d)
	logits := make([]float32, len(sel)*v)
	if pm.unembedB != nil {
		fillRows(logits, pm.unembedB, len(sel))
	}
	kernels.MatMulTransB(logits, xs, pm.unembed, len(sel), d, v, pm.unembedB != nil)
	U, uB := g.leaf(pm.unembed), g.leaf(pm.unembedB)
	return g.newNode(logits, len(sel), v, func(n *node, gy []float32) {
		var live, rows []int // indices into sel, rows of x
		for r := range sel {
			if slices.ContainsFunc(gy[r*v:(r+1)*v], func(x float32) bool { return x != 0 }) {
				live = append(live, r)
				rows = append(rows, sel[r])
			}
		}
		if len(live) == 0 {
			return
		}
		gyc := gatherRows(gy, live, v)
		xr := gatherRows(x.data, rows, d)
		nz := sparseColumns(gyc, len(live), v)
		n.accParam(U, func(grad []float32) {
			if nz == nil {
				kernels.MatMulTransA(grad, gyc, xr, v, len(live), d, true)
				return
			}
			for _, j := range nz {
				for r := range live {
					if a := gyc[r*v+j]; a != 0 {
						kernels.Axpy(a, xr[r*d:(r+1)*d], grad[j*d:(j+1)*d])
					}
				}
			}
		})
		n.accParam(uB, func(grad []float32) { addColumnSums(grad, gyc, len(live)) })
		if needs(x.op) {
			dxc := make([]float32, len(live)*d)
			if nz == nil {
				kernels.MatMul(dxc, gyc, pm.unembed, len(live), v, d, false)
			} else {
				for r := range live {
					for _, j := range nz {
						if a := gyc[r*v+j]; a != 0 {
							kernels.Axpy(a, pm.unembed[j*d:(j+1)*d], dxc[r*d:(r+1)*d])
						}
					}
				}
			}
			dx := g.buf(len(x.data))
			for i, r := range rows {
				copy(dx[r*d:(r+1)*d], dxc[i*d:(i+1)*d])
			}
			n.acc(x.op, dx)
			g.release(dx)
		}
	}, x.op, U, uB)
}

// sparseColumns returns the columns of m [rows×cols] holding a nonzero,
// in order, or nil when more than 1/8 of them do. A logit difference's
// gradient has two: its products with the unembedding then touch two rows
// of wte instead of all 50,257 (154 MB read, and written for its gradient);
// skipped terms are exact zeros, as in the dense product of finite values.
func sparseColumns(m []float32, rows, cols int) []int {
	var nz []int
	for j := 0; j < cols; j++ {
		for r := 0; r < rows; r++ {
			if m[r*cols+j] != 0 {
				nz = append(nz, j)
				break
			}
		}
		if len(nz) > cols/8 {
			return nil
		}
	}
	return nz
}

// gatherRows copies rows idx of m (rows of n floats) into a new slice.
func gatherRows(m []float32, idx []int, n int) []float32 {
	out := make([]float32, len(idx)*n)
	for i, r := range idx {
		copy(out[i*n:(i+1)*n], m[r*n:(r+1)*n])
	}
	return out
}
