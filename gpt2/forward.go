package gpt2

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/factlens/factlens/gpt2/kernels"
	"github.com/factlens/factlens/weights"
)

// LogitsMode says which logits Run computes.
type LogitsMode int

const (
	LogitsAll  LogitsMode = iota // every position: [batch, pos, vocab]
	LogitsLast                   // each row's last position only: [batch, 1, vocab]
	LogitsNone                   // none; the forward stops after the last hook point it needs
)

// RunOptions control one forward pass. The zero value runs the whole model
// and returns all logits.
type RunOptions struct {
	// Hooks run in the order given at every hook point they match. A hook
	// that matches no hook point of the model is an error (a typo would
	// otherwise be a silent no-op); see Model.CheckHookName.
	Hooks []Hook
	// Cache selects the hook points whose values (after hooks) Result.Cache
	// gets a copy of; nil caches nothing.
	Cache Matcher
	// Mask marks real tokens (true) in left-padded rows: each row must be
	// zero or more false entries followed by at least one true. nil means no
	// padding. See the package documentation for what pad positions hold.
	Mask [][]bool
	// Logits chooses which logits to compute. When StopAtLayer is set there
	// are none.
	Logits LogitsMode
	// StopAtLayer n > 0 runs blocks 0..n-1 only and returns their output in
	// Result.Residual, like TransformerLens' stop_at_layer; 0 runs all.
	StopAtLayer int
	// PrependBOS puts the config's bos_token_id before each row's first real
	// token (TransformerLens' default_prepend_bos); Result.Tokens shows it.
	PrependBOS bool
}

// Result is what Run returns. Every Activation in it is owned by the caller.
type Result struct {
	Logits   *Activation            // name "logits"; nil under LogitsNone or StopAtLayer
	Cache    map[string]*Activation // the hook points RunOptions.Cache selected that the run reached
	Tokens   [][]int                // the token ids run, after PrependBOS
	Mask     [][]bool               // the mask used, after PrependBOS; nil when unpadded
	Residual *Activation            // blocks.{n-1}.hook_resid_post under StopAtLayer n, else nil
}

// Run runs the model on a batch of token rows of equal length (left-padded
// with opts.Mask if they differ), firing hooks and filling the cache at every
// hook point. It computes only what the requested outputs, hooks and cache
// need: with LogitsNone it stops after the last hook point a hook or the
// cache selects.
func (m *Model) Run(ctx context.Context, tokens [][]int, opts RunOptions) (*Result, error) {
	in, err := m.prepareInput(tokens, opts.Mask, opts.PrependBOS)
	if err != nil {
		return nil, err
	}
	r := &run{m: m, in: in, b: len(in.tokens), p: len(in.tokens[0]), d: m.DModel(),
		h: m.NHead(), dh: m.DHead(), dm: m.DMLP(), v: m.VocabSize()}
	r.bp = r.b * r.p
	if err := r.plan(opts); err != nil {
		return nil, err
	}
	res := &Result{Tokens: in.tokens, Mask: in.mask}
	if r.last < 0 {
		return res, nil
	}
	r.w = m.getWorkspace()
	defer m.putWorkspace(r.w)
	r.w.size(r)
	if r.cacheAny {
		r.cache = map[string]*Activation{}
	}

	if err := r.forward(ctx); err != nil {
		return nil, err
	}
	res.Cache = r.cache
	res.Logits = r.logits
	if opts.StopAtLayer > 0 {
		res.Residual = &Activation{Name: m.points[blockPoint(opts.StopAtLayer-1)+ptResidPost],
			Shape: []int{r.b, r.p, r.d}, Data: slices.Clone(r.w.resid)}
	}
	return res, nil
}

// input is a validated batch.
type input struct {
	tokens [][]int
	mask   [][]bool // nil when unpadded
	pos    []int    // [b·p] position ids; pad positions get 0
	real   []bool   // [b·p]; nil when no row has padding
}

func (m *Model) prepareInput(tokens [][]int, mask [][]bool, bos bool) (*input, error) {
	if len(tokens) == 0 || len(tokens[0]) == 0 {
		return nil, fmt.Errorf("gpt2: empty batch")
	}
	if mask != nil && len(mask) != len(tokens) {
		return nil, fmt.Errorf("gpt2: mask has %d rows, tokens %d", len(mask), len(tokens))
	}
	bosID := m.Config.BOSTokenID
	if bos && (bosID < 0 || bosID >= m.VocabSize()) {
		return nil, fmt.Errorf("gpt2: bos_token_id %d is out of range [0, %d)", bosID, m.VocabSize())
	}
	p := len(tokens[0])
	if bos {
		p++
	}
	if p > m.NCtx() {
		return nil, fmt.Errorf("gpt2: sequence of %d tokens exceeds n_positions %d", p, m.NCtx())
	}
	in := &input{pos: make([]int, len(tokens)*p)}
	padded := false
	for b, row := range tokens {
		if len(row) != len(tokens[0]) {
			return nil, fmt.Errorf("gpt2: token row %d has %d tokens, row 0 has %d; pad on the left and pass a mask", b, len(row), len(tokens[0]))
		}
		for t, id := range row {
			if id < 0 || id >= m.VocabSize() {
				return nil, fmt.Errorf("gpt2: token [%d][%d] = %d is out of range [0, %d)", b, t, id, m.VocabSize())
			}
		}
		first := 0 // first real token
		if mask != nil {
			if len(mask[b]) != len(row) {
				return nil, fmt.Errorf("gpt2: mask row %d has %d entries, tokens %d", b, len(mask[b]), len(row))
			}
			first = slices.Index(mask[b], true)
			if first < 0 {
				return nil, fmt.Errorf("gpt2: mask row %d has no real token", b)
			}
			if i := slices.Index(mask[b][first:], false); i >= 0 {
				return nil, fmt.Errorf("gpt2: mask row %d has padding at position %d after a real token; only left padding is supported", b, first+i)
			}
			padded = padded || first > 0
		}
		row = slices.Clone(row)
		if bos {
			row = slices.Insert(row, first, bosID)
		}
		in.tokens = append(in.tokens, row)
		if mask != nil {
			realRow := make([]bool, p)
			for t := first; t < p; t++ {
				realRow[t] = true
			}
			in.mask = append(in.mask, realRow)
		}
		// Position ids count from the first real token; pads get 0.
		for t := first; t < p; t++ {
			in.pos[b*p+t] = t - first
		}
	}
	if padded {
		in.real = slices.Concat(in.mask...)
	}
	return in, nil
}

// run is the state of one forward pass.
type run struct {
	m  *Model
	w  *workspace
	in *input

	b, p, bp, d, h, dh, dm, v int

	fns      [][]func(*Activation) error // per hook point
	cached   []bool                      // per hook point
	cacheAny bool
	last     int // last hook point to compute; -1 for none
	nBlocks  int
	logitsOf LogitsMode

	cache  map[string]*Activation
	logits *Activation
	err    error // first hook error; the forward stops at the next check
}

// plan resolves hooks and cache selection to hook point indices and finds
// the last point the run needs.
func (r *run) plan(opts RunOptions) error {
	m := r.m
	n := len(m.points)
	r.fns = make([][]func(*Activation) error, n)
	r.cached = make([]bool, n)
	r.last = -1
	r.nBlocks = m.NLayer()
	r.logitsOf = opts.Logits
	if opts.Logits < LogitsAll || opts.Logits > LogitsNone {
		return fmt.Errorf("gpt2: unknown logits mode %d", opts.Logits)
	}
	if opts.StopAtLayer < 0 || opts.StopAtLayer > m.NLayer() {
		return fmt.Errorf("gpt2: StopAtLayer %d out of range [0, %d]", opts.StopAtLayer, m.NLayer())
	}
	for i, h := range opts.Hooks {
		if h.Match == nil || h.Fn == nil {
			return fmt.Errorf("gpt2: hook %d has a nil Match or Fn", i)
		}
		matched := false
		for pt, name := range m.points {
			if h.Match(name) {
				r.fns[pt] = append(r.fns[pt], h.Fn)
				matched = true
			}
		}
		if !matched {
			return fmt.Errorf("gpt2: hook %d matches no hook point (check names with Model.CheckHookName)", i)
		}
	}
	if opts.Cache != nil {
		for pt, name := range m.points {
			if opts.Cache(name) {
				r.cached[pt], r.cacheAny = true, true
			}
		}
		if !r.cacheAny {
			return fmt.Errorf("gpt2: the cache selection matches no hook point (check names with Model.CheckHookName)")
		}
	}
	for pt := n - 1; pt >= 0; pt-- {
		if r.needed(pt) {
			r.last = pt
			break
		}
	}
	switch {
	case opts.StopAtLayer > 0:
		r.nBlocks = opts.StopAtLayer
		r.logitsOf = LogitsNone
		r.last = blockPoint(opts.StopAtLayer-1) + ptResidPost
	case opts.Logits != LogitsNone:
		r.last = n - 1
	}
	return nil
}

func (r *run) needed(pt int) bool { return r.cached[pt] || len(r.fns[pt]) > 0 }

// modified reports whether a hook may change the activation at pt.
func (r *run) modified(pt int) bool { return len(r.fns[pt]) > 0 }

// done reports whether the run has nothing left to do after hook point pt.
func (r *run) done(pt int) bool { return r.err != nil || pt >= r.last }

// hook fires the hooks of point pt on data, then caches it if selected.
func (r *run) hook(pt int, data []float32, shape ...int) {
	if r.err != nil || !r.needed(pt) {
		return
	}
	a := &Activation{Name: r.m.points[pt], Shape: slices.Clone(shape), Data: data}
	for _, fn := range r.fns[pt] {
		if err := fn(a); err != nil {
			r.err = fmt.Errorf("gpt2: hook on %s: %w", a.Name, err)
			return
		}
		if len(a.Data) != len(data) || (len(data) > 0 && &a.Data[0] != &data[0]) {
			r.err = fmt.Errorf("gpt2: hook on %s replaced Data; modify it in place instead", a.Name)
			return
		}
	}
	if r.cached[pt] {
		r.cache[a.Name] = &Activation{Name: a.Name, Shape: slices.Clone(shape), Data: slices.Clone(data)}
	}
}

// forward runs the embedding, the blocks and the unembedding, like llm.c's
// gpt2_forward: one small function per layer kind, every hook point fired on
// the line after its activation is made.
func (r *run) forward(ctx context.Context) error {
	r.embed()
	for l := 0; l < r.nBlocks && !r.done(blockPoint(l)-1); l++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.block(l)
	}
	if !r.done(blockPoint(r.nBlocks) - 1) {
		r.unembed()
	}
	return r.err
}

// embed: resid = wte[token] + wpe[position].
func (r *run) embed() {
	w, p, d := r.w, &r.m.p, r.d
	for b, row := range r.in.tokens {
		for t, tok := range row {
			i := b*r.p + t
			copy(w.embed[i*d:(i+1)*d], p.wte[tok*d:(tok+1)*d])
			if r.in.real != nil && !r.in.real[i] {
				clear(w.posEmbed[i*d : (i+1)*d]) // as TransformerLens does for pads
				continue
			}
			pos := r.in.pos[i]
			copy(w.posEmbed[i*d:(i+1)*d], p.wpe[pos*d:(pos+1)*d])
		}
	}
	r.hook(ptEmbed, w.embed, r.b, r.p, d)
	r.hook(ptPosEmbed, w.posEmbed, r.b, r.p, d)
	for i := range w.resid {
		w.resid[i] = w.embed[i] + w.posEmbed[i]
	}
}

// block runs transformer block l on the residual stream in place.
func (r *run) block(l int) {
	w, lp, pt := r.w, &r.m.p.layers[l], blockPoint(l)
	b, p, d := r.b, r.p, r.d
	r.hook(pt+ptResidPre, w.resid, b, p, d)

	layerNormStats(w.ln, w.scale, w.resid, d, r.m.eps)
	r.hook(pt+ptLn1Scale, w.scale, b, p, 1)
	layerNormApply(w.ln, w.scale, lp.ln1W, lp.ln1B, d)
	r.hook(pt+ptLn1Normalized, w.ln, b, p, d)
	if r.done(pt + ptLn1Normalized) {
		return
	}

	r.attention(l, lp, pt) // hook_q … hook_attn_out
	if r.done(pt + ptAttnOut) {
		return
	}
	addInto(w.resid, w.attnOut)
	r.hook(pt+ptResidMid, w.resid, b, p, d)

	layerNormStats(w.ln, w.scale, w.resid, d, r.m.eps)
	r.hook(pt+ptLn2Scale, w.scale, b, p, 1)
	layerNormApply(w.ln, w.scale, lp.ln2W, lp.ln2B, d)
	r.hook(pt+ptLn2Normalized, w.ln, b, p, d)

	linear(w.mlp, w.ln, lp.fcW, lp.fcB, r.bp, d, r.dm)
	r.hook(pt+ptMLPPre, w.mlp, b, p, r.dm)
	r.activate(w.mlp)
	r.hook(pt+ptMLPPost, w.mlp, b, p, r.dm)
	if r.done(pt + ptMLPPost) {
		return
	}
	linear(w.mlpOut, w.mlp, lp.outW, lp.outB, r.bp, r.dm, d)
	r.hook(pt+ptMLPOut, w.mlpOut, b, p, d)

	addInto(w.resid, w.mlpOut)
	r.hook(pt+ptResidPost, w.resid, b, p, d)
}

// attention computes attn_out = Σ_h softmax(mask(q_h·k_hᵀ·scale))·v_h·W_O[h] + b_O
// from w.ln into w.attnOut.
func (r *run) attention(l int, lp *layerParams, pt int) {
	w := r.w
	b, p, h, dh, d := r.b, r.p, r.h, r.dh, r.d
	linear(w.qkv, w.ln, lp.attnW, lp.attnB, r.bp, d, 3*d)
	splitQKV(w.q, w.k, w.v, w.qkv, d)
	r.hook(pt+ptQ, w.q, b, p, h, dh)
	r.hook(pt+ptK, w.k, b, p, h, dh)
	r.hook(pt+ptV, w.v, b, p, h, dh)
	if r.done(pt + ptV) {
		return
	}

	// Per (batch, head) the work is three small matrix products over
	// contiguous [p, d_head] blocks: head-major copies of q, k and v.
	toHeadMajor(w.qh, w.q, b, p, h, dh)
	toHeadMajor(w.kh, w.k, b, p, h, dh)
	toHeadMajor(w.vh, w.v, b, p, h, dh)
	scale, pp := r.m.attnScale[l], p*p
	if r.needed(pt+ptAttnScores) || r.needed(pt+ptPattern) {
		// Materialize [b, h, q, k] so hooks can see and change it.
		parallelFor(b*h, func(_, bh int) { r.headScores(bh, w.att[bh*pp:(bh+1)*pp], scale) })
		r.hook(pt+ptAttnScores, w.att, b, h, p, p)
		hooked := r.modified(pt + ptAttnScores)
		parallelFor(b*h, func(_, bh int) { r.headSoftmax(bh, w.att[bh*pp:(bh+1)*pp], hooked) })
		r.hook(pt+ptPattern, w.att, b, h, p, p)
		if r.done(pt + ptPattern) {
			return
		}
		parallelFor(b*h, func(_, bh int) { r.headMix(bh, w.att[bh*pp:(bh+1)*pp]) })
	} else {
		parallelFor(b*h, func(worker, bh int) {
			s := w.scores[worker][:pp]
			r.headScores(bh, s, scale)
			r.headSoftmax(bh, s, false)
			r.headMix(bh, s)
		})
	}
	fromHeadMajor(w.z, w.zh, b, p, h, dh)
	r.hook(pt+ptZ, w.z, b, p, h, dh)
	if r.done(pt + ptZ) {
		return
	}

	if r.needed(pt + ptResult) {
		r.headResults(lp)
		r.hook(pt+ptResult, w.result, b, p, h, d)
		if r.done(pt + ptResult) {
			return
		}
	}
	if r.modified(pt + ptResult) {
		sumHeads(w.attnOut, w.result, lp.projB, r.bp, h, d)
	} else {
		// Also when hook_result is only cached: one product, so that caching
		// never changes a number downstream.
		linear(w.attnOut, w.z, lp.projW, lp.projB, r.bp, d, d)
	}
	r.hook(pt+ptAttnOut, w.attnOut, b, p, d)
}

// unembed applies ln_final and the unembedding.
func (r *run) unembed() {
	w, pm := r.w, &r.m.p
	b, p, d := r.b, r.p, r.d
	scalePt, normPt := finalPoints(r.m.NLayer())
	layerNormStats(w.ln, w.scale, w.resid, d, r.m.eps)
	r.hook(scalePt, w.scale, b, p, 1)
	layerNormApply(w.ln, w.scale, pm.lnfW, pm.lnfB, d)
	r.hook(normPt, w.ln, b, p, d)
	if r.err != nil || r.logitsOf == LogitsNone {
		return
	}

	x, rows, shape := w.ln, r.bp, []int{b, p, r.v}
	if r.logitsOf == LogitsLast {
		for i := 0; i < b; i++ {
			last := (i*p + p - 1) * d
			copy(w.last[i*d:(i+1)*d], w.ln[last:last+d])
		}
		x, rows, shape = w.last, b, []int{b, 1, r.v}
	}
	logits := make([]float32, rows*r.v)
	if pm.unembedB != nil {
		fillRows(logits, pm.unembedB, rows)
	}
	kernels.MatMulTransB(logits, x, pm.unembed, rows, d, r.v, pm.unembedB != nil)
	r.logits = &Activation{Name: "logits", Shape: shape, Data: logits}
}

// linear computes y[rows×out] = x[rows×in]·W + bias (Conv1D layout).
func linear(y, x, W, bias []float32, rows, in, out int) {
	fillRows(y, bias, rows)
	kernels.MatMul(y, x, W, rows, in, out, true)
}

// fillRows sets each of the rows of y to v.
func fillRows(y, v []float32, rows int) {
	n := len(v)
	for i := 0; i < rows; i++ {
		copy(y[i*n:(i+1)*n], v)
	}
}

func addInto(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}

// layerNormStats writes each row of x minus its mean into out and the row's
// sqrt(biased variance + eps) into scale — TransformerLens' hook_scale.
func layerNormStats(out, scale, x []float32, d int, eps float64) {
	for i := range scale {
		row, o := x[i*d:(i+1)*d], out[i*d:(i+1)*d]
		var sum float64
		for _, v := range row {
			sum += float64(v)
		}
		mean := sum / float64(d)
		var ss float64
		for j, v := range row {
			c := float64(v) - mean
			o[j] = float32(c)
			ss += c * c
		}
		scale[i] = float32(math.Sqrt(ss/float64(d) + eps))
	}
}

// layerNormApply turns the centred rows in x into (x/scale)·w + b, in place;
// with w nil (folded) it only divides.
func layerNormApply(x, scale, w, b []float32, d int) {
	for i, s := range scale {
		row := x[i*d : (i+1)*d]
		inv := 1 / s
		if w == nil {
			for j := range row {
				row[j] *= inv
			}
			continue
		}
		w, b := w[:d], b[:d]
		for j := range row {
			row[j] = row[j]*inv*w[j] + b[j]
		}
	}
}

// splitQKV copies the q|k|v column blocks of qkv [rows, 3d] into q, k, v
// [rows, d]; head-major columns make each of them [b, p, h, d_head].
func splitQKV(q, k, v, qkv []float32, d int) {
	rows := len(q) / d
	for i := 0; i < rows; i++ {
		src := qkv[i*3*d : (i+1)*3*d]
		copy(q[i*d:(i+1)*d], src[:d])
		copy(k[i*d:(i+1)*d], src[d:2*d])
		copy(v[i*d:(i+1)*d], src[2*d:])
	}
}

// toHeadMajor copies x [b, p, h, dh] into xh [b, h, p, dh].
func toHeadMajor(xh, x []float32, b, p, h, dh int) {
	for bi := 0; bi < b; bi++ {
		for t := 0; t < p; t++ {
			row := x[(bi*p+t)*h*dh:][:h*dh]
			for hi := 0; hi < h; hi++ {
				copy(xh[((bi*h+hi)*p+t)*dh:][:dh], row[hi*dh:(hi+1)*dh])
			}
		}
	}
}

// fromHeadMajor copies xh [b, h, p, dh] into x [b, p, h, dh].
func fromHeadMajor(x, xh []float32, b, p, h, dh int) {
	for bi := 0; bi < b; bi++ {
		for t := 0; t < p; t++ {
			row := x[(bi*p+t)*h*dh:][:h*dh]
			for hi := 0; hi < h; hi++ {
				copy(row[hi*dh:(hi+1)*dh], xh[((bi*h+hi)*p+t)*dh:][:dh])
			}
		}
	}
}

// headScores fills s [q, k] for one (batch, head) with q·k·scale, and -Inf
// where the causal or padding mask hides the key.
func (r *run) headScores(bh int, s []float32, scale float32) {
	bi, p, dh := bh/r.h, r.p, r.dh
	kernels.MatMulTransB(s, r.w.qh[bh*p*dh:(bh+1)*p*dh], r.w.kh[bh*p*dh:(bh+1)*p*dh], p, dh, p, false)
	negInf := float32(math.Inf(-1))
	for t := 0; t < p; t++ {
		row := s[t*p : (t+1)*p]
		for j := range row[:t+1] {
			if r.in.real != nil && !r.in.real[bi*p+j] {
				row[j] = negInf
			} else {
				row[j] *= scale
			}
		}
		for j := t + 1; j < p; j++ {
			row[j] = negInf
		}
	}
}

// headSoftmax turns one (batch, head) of scores into the pattern in place.
// Unless a hook may have changed the scores (hooked), only the causal part
// of each row is live; the rest is set to 0.
func (r *run) headSoftmax(bh int, s []float32, hooked bool) {
	p := r.p
	if !hooked && r.in.real == nil {
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

// headMix computes z = pattern·v for one (batch, head), over every key: a
// hook may have given weight to future positions.
func (r *run) headMix(bh int, s []float32) {
	p, dh := r.p, r.dh
	kernels.MatMul(r.w.zh[bh*p*dh:(bh+1)*p*dh], s, r.w.vh[bh*p*dh:(bh+1)*p*dh], p, p, dh, false)
}

// headResults computes each head's output z_h·W_O[h] into w.result
// [b, p, h, d] — TransformerLens' hook_result, h times the memory of attn_out.
func (r *run) headResults(lp *layerParams) {
	w := r.w
	h, dh, d, bp := r.h, r.dh, r.d, r.bp
	for hi := 0; hi < h; hi++ {
		for i := 0; i < bp; i++ {
			copy(w.headZ[i*dh:(i+1)*dh], w.z[i*d+hi*dh:][:dh])
		}
		kernels.MatMul(w.headOut, w.headZ, lp.projW[hi*dh*d:(hi+1)*dh*d], bp, dh, d, false)
		for i := 0; i < bp; i++ {
			copy(w.result[(i*h+hi)*d:][:d], w.headOut[i*d:(i+1)*d])
		}
	}
}

// sumHeads sets out[i] = b_O + Σ_h result[i, h].
func sumHeads(out, result, bO []float32, rows, h, d int) {
	fillRows(out, bO, rows)
	for i := 0; i < rows; i++ {
		o := out[i*d : (i+1)*d]
		for hi := 0; hi < h; hi++ {
			addInto(o, result[(i*h+hi)*d:][:d])
		}
	}
}

// softmax normalizes row in place. -Inf entries get probability 0; a row
// with no finite entry (a pad query that may attend to nothing) becomes all
// zeros, as TransformerLens' NaN→0 does.
func softmax(row []float32) {
	maxV := float32(math.Inf(-1))
	for _, v := range row {
		if v > maxV {
			maxV = v
		}
	}
	if math.IsInf(float64(maxV), -1) {
		clear(row)
		return
	}
	var sum float64
	for i, v := range row {
		e := math.Exp(float64(v - maxV))
		row[i] = float32(e)
		sum += e
	}
	inv := float32(1 / sum)
	for i := range row {
		row[i] *= inv
	}
}

// activate applies the MLP nonlinearity to x in place, split over cores.
func (r *run) activate(x []float32) {
	f := r.m.activation()
	const chunk = 16384
	parallelFor((len(x)+chunk-1)/chunk, func(_, c int) {
		f(x[c*chunk : min((c+1)*chunk, len(x))])
	})
}

// activation returns the config's MLP nonlinearity, which works in place.
func (m *Model) activation() func([]float32) {
	switch m.act {
	case weights.ActivationGELUTanh:
		return kernels.GELU
	case weights.ActivationGELUErf:
		return geluErf
	}
	return relu
}

// geluErf is the exact GELU, 0.5·x·(1 + erf(x/√2)).
func geluErf(x []float32) {
	for i, v := range x {
		u := float64(v)
		x[i] = float32(0.5 * u * (1 + math.Erf(u/math.Sqrt2)))
	}
}

func relu(x []float32) {
	for i, v := range x {
		x[i] = max(v, 0)
	}
}

// parallelFor calls fn(worker, i) for i in [0, n) on up to GOMAXPROCS
// goroutines; worker < GOMAXPROCS identifies the goroutine (for scratch).
func parallelFor(n int, fn func(worker, i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for wk := 0; wk < workers; wk++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(wk, i)
			}
		}()
	}
	wg.Wait()
}

// workspace holds a forward pass's activation buffers. Model keeps a pool of
// them; each is used by one Run at a time and grows to the largest batch seen.
type workspace struct {
	embed, posEmbed, resid, ln, q, k, v, z, attnOut, mlpOut []float32   // [b·p·d]
	qh, kh, vh, zh                                          []float32   // head-major [b·h·p·d_head]
	scale                                                   []float32   // [b·p]
	qkv                                                     []float32   // [b·p·3d]
	mlp                                                     []float32   // [b·p·d_mlp]: hook_pre, then hook_post in place
	att                                                     []float32   // [b·h·p·p], only when a hook needs scores or pattern
	scores                                                  [][]float32 // per worker [p·p], when att is not needed
	result                                                  []float32   // [b·p·h·d], only when hook_result is needed
	headZ, headOut                                          []float32   // one head's z [b·p·d_head] and output [b·p·d]
	last                                                    []float32   // [b·d]: final rows for LogitsLast
}

func (m *Model) getWorkspace() *workspace {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := len(m.free); n > 0 {
		w := m.free[n-1]
		m.free = m.free[:n-1]
		return w
	}
	return &workspace{}
}

func (m *Model) putWorkspace(w *workspace) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.free = append(m.free, w)
}

// grow returns s resliced to n elements, reallocated if too small.
func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// size fits the buffers to r's batch, allocating only what r will use.
func (w *workspace) size(r *run) {
	n := r.bp * r.d
	for _, s := range []*[]float32{&w.embed, &w.posEmbed, &w.resid, &w.ln, &w.q, &w.k, &w.v, &w.z, &w.attnOut, &w.mlpOut, &w.qh, &w.kh, &w.vh, &w.zh} {
		*s = grow(*s, n)
	}
	w.scale = grow(w.scale, r.bp)
	w.qkv = grow(w.qkv, 3*n)
	w.mlp = grow(w.mlp, r.bp*r.dm)
	w.last = grow(w.last, r.b*r.d)
	needAtt, needResult := false, false
	for l := 0; l < r.nBlocks; l++ {
		pt := blockPoint(l)
		needAtt = needAtt || r.needed(pt+ptAttnScores) || r.needed(pt+ptPattern)
		needResult = needResult || r.needed(pt+ptResult)
	}
	if needAtt {
		w.att = grow(w.att, r.b*r.h*r.p*r.p)
	}
	if needResult {
		w.result = grow(w.result, r.bp*r.h*r.d)
		w.headZ = grow(w.headZ, r.bp*r.dh)
		w.headOut = grow(w.headOut, n)
	}
	for len(w.scores) < runtime.GOMAXPROCS(0) {
		w.scores = append(w.scores, nil)
	}
	for i := range w.scores {
		w.scores[i] = grow(w.scores[i], r.p*r.p)
	}
}
