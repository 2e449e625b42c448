package gpt2

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/nlpodyssey/spago/ag"
	"github.com/nlpodyssey/spago/mat"
)

// graph is the state of one gradient-mode pass: the spago nodes of every
// hook point, the parameter leaves, and what the caller asked for.
type graph struct {
	ctx context.Context
	m   *Model
	in  *input

	b, p, bp, d, h, dh, dm, v int

	fns        [][]func(*Activation) error // per hook point
	cached     []bool
	wanted     []bool
	hookCut    bool
	logitsOf   LogitsMode
	seed       *mat.Dense[float32] // requires grad; makes wanted nodes differentiable
	leaves     map[*float32]mat.Tensor
	leafLocks  map[mat.Tensor]*sync.Mutex
	leafMu     sync.Mutex // guards paramGrads and leafLocks
	ownParams  bool       // leaves made for this call: paramGrads owns their gradients
	paramGrads map[mat.Tensor][]float32
	nodeOf     map[*ag.Operator]*node

	nodes  []*node // per hook point
	cache  map[string]*Activation
	logits *node

	poolMu sync.Mutex
	pool   map[int][][]float32 // free backward temporaries by length
}

// buf returns a zeroed temporary of n floats for a backward closure.
func (g *graph) buf(n int) []float32 {
	g.poolMu.Lock()
	free := g.pool[n]
	if k := len(free); k > 0 {
		b := free[k-1]
		g.pool[n] = free[:k-1]
		g.poolMu.Unlock()
		clear(b)
		return b
	}
	g.poolMu.Unlock()
	return make([]float32, n)
}

// release returns temporaries to the pool. Gradients sent with node.acc may
// be released right after: spago copies them.
func (g *graph) release(bufs ...[]float32) {
	g.poolMu.Lock()
	defer g.poolMu.Unlock()
	for _, b := range bufs {
		if len(b) > 0 {
			g.pool[len(b)] = append(g.pool[len(b)], b)
		}
	}
}

// node is one operator of the graph: its value, its operands and the
// function that turns the gradient of the value into gradients of the
// operands. It implements ag.AutoGradFunction; the value is computed when
// the node is made, so Forward only hands it over.
type node struct {
	g        *graph
	op       *ag.Operator
	val      *mat.Dense[float32]
	data     []float32
	operands []mat.Tensor
	slots    []int // per operand node: this node's slot among its consumers
	back     func(n *node, gy []float32)
	changed  []int32 // elements a hook changed, zeroed in gy under HookGradCut

	mu   sync.Mutex
	done []bool // per operand: a gradient was sent

	// Gradients from consumers arrive from concurrent goroutines; they are
	// summed here in consumer order so that results do not depend on
	// scheduling (float addition is not associative).
	consumers []*node
	fanMu     sync.Mutex
	contrib   [][]float32
	arrived   int
	expected  int
}

func (n *node) Forward() (mat.Tensor, error) { return n.val, nil }
func (n *node) Operands() []mat.Tensor       { return n.operands }

// Backward never fails: spago stops the process on an error here. Every
// differentiable operand gets exactly one gradient from each node (zeros
// if back sent none, or the context was cancelled), or spago's scheduler
// would wait for it forever.
func (n *node) Backward(gy mat.Tensor) error {
	g := gy.Data().F32()
	if n.g.ctx.Err() == nil {
		if len(n.changed) > 0 {
			g = slices.Clone(g)
			for _, i := range n.changed {
				g[i] = 0
			}
		}
		n.back(n, g)
	}
	for i, t := range n.operands {
		if n.slots[i] >= 0 && !n.done[i] && t.RequiresGrad() {
			n.done[i] = true
			n.g.nodeOf[t.(*ag.Operator)].receive(n.slots[i], nil)
		}
	}
	return nil
}

// needs reports whether t wants a gradient.
func needs(t mat.Tensor) bool { return t != nil && t.RequiresGrad() }

// acc sends grad (laid out like operand t's value) to t, an operand node;
// grad may be reused afterwards.
func (n *node) acc(t mat.Tensor, grad []float32) {
	if !needs(t) {
		return
	}
	i := slices.Index(n.operands, t)
	n.mu.Lock()
	n.done[i] = true
	n.mu.Unlock()
	n.g.nodeOf[t.(*ag.Operator)].receive(n.slots[i], grad)
}

// receive takes the gradient of consumer slot (nil for zeros). spago wants
// one AccGrad per edge: all but the last arrival send exact zeros, and the
// last sends the sum of every slot in slot order.
func (n *node) receive(slot int, grad []float32) {
	n.fanMu.Lock()
	if n.contrib == nil {
		n.contrib = make([][]float32, len(n.consumers))
		for _, c := range n.consumers {
			if c.op.RequiresGrad() {
				n.expected++
			}
		}
	}
	if n.expected == 1 { // the common case: no copy, no sum
		n.fanMu.Unlock()
		n.send(grad)
		return
	}
	n.contrib[slot] = slices.Clone(grad)
	n.arrived++
	last := n.arrived == n.expected
	n.fanMu.Unlock()
	if !last {
		n.send(nil)
		return
	}
	var sum []float32
	for _, c := range n.contrib {
		switch {
		case c == nil:
		case sum == nil:
			sum = c
		default:
			addInto(sum, c)
		}
	}
	n.contrib = nil
	n.send(sum)
}

// send accumulates grad (nil: zeros) into the node's spago gradient.
func (n *node) send(grad []float32) {
	rows, cols := n.val.Shape()[0], n.val.Shape()[1]
	if grad == nil {
		n.op.AccGrad(mat.NewDense[float32](mat.WithShape(rows, cols)))
		return
	}
	n.op.AccGrad(dense(grad, rows, cols))
}

// accParam lets fn add to the gradient buffer of parameter leaf t, which it
// creates (zeros) on first use; fn runs under t's lock, as a tied
// embedding is written by two nodes. The leaves of a Trainable keep their
// gradient in spago's Grad() (for spago's optimizers; allocated once and
// reused across steps); the throwaway leaves of Model.Gradients keep it in
// the graph, which saves spago's copy of a zero matrix per parameter.
func (n *node) accParam(t mat.Tensor, fn func(grad []float32)) {
	if !needs(t) {
		return
	}
	g := n.g
	g.leafMu.Lock()
	buf, ok := g.paramGrads[t]
	if !ok {
		if g.ownParams {
			buf = make([]float32, t.Size())
		} else {
			if !t.HasGrad() {
				t.AccGrad(mat.NewDense[float32](mat.WithShape(t.Shape()...)))
			}
			buf = t.Grad().Data().F32()
		}
		g.paramGrads[t] = buf
		g.leafLocks[t] = &sync.Mutex{}
	}
	lock := g.leafLocks[t]
	g.leafMu.Unlock()
	lock.Lock()
	defer lock.Unlock()
	fn(buf)
}

// newNode wraps a computed value [rows, cols] as a node; run or point
// makes it a spago operator. Operands that are nil (parameters weight
// processing removed) are dropped.
func (g *graph) newNode(data []float32, rows, cols int, back func(n *node, gy []float32), operands ...mat.Tensor) *node {
	n := &node{g: g, data: data, back: back, val: dense(data, rows, cols)}
	for _, t := range operands {
		if t != nil {
			n.operands = append(n.operands, t)
		}
	}
	return n
}

// run finishes a node: it becomes a spago operator. Call it after all
// operands are known (seed included).
func (n *node) run() *node {
	n.done = make([]bool, len(n.operands))
	n.slots = make([]int, len(n.operands))
	for i, t := range n.operands {
		n.slots[i] = -1
		if op, ok := t.(*ag.Operator); ok {
			src := n.g.nodeOf[op]
			n.slots[i] = len(src.consumers)
			src.consumers = append(src.consumers, n)
		}
	}
	n.op = ag.NewOperator(n).Run()
	n.g.nodeOf[n.op] = n
	return n
}

// leaf is the graph's parameter node for data (shared by tied uses); nil for
// a parameter weight processing removed.
func (g *graph) leaf(data []float32) mat.Tensor {
	if len(data) == 0 {
		return nil
	}
	return g.leaves[&data[0]]
}

// point makes n the node of hook point pt: the seed joins its operands when
// its gradient is wanted, the hooks fire on its value (recording what they
// change under HookGradCut), and the cache gets a copy.
func (g *graph) point(pt int, n *node, shape ...int) (*node, error) {
	if g.wanted[pt] {
		n.operands = append(n.operands, g.seed)
	}
	n.run()
	g.nodes[pt] = n
	name := g.m.points[pt]
	if fns := g.fns[pt]; len(fns) > 0 {
		var before []float32
		if g.hookCut {
			before = slices.Clone(n.data)
		}
		a := &Activation{Name: name, Shape: slices.Clone(shape), Data: n.data}
		for _, fn := range fns {
			if err := fn(a); err != nil {
				return nil, fmt.Errorf("gpt2: hook on %s: %w", name, err)
			}
			if len(a.Data) != len(n.data) || (len(n.data) > 0 && &a.Data[0] != &n.data[0]) {
				return nil, fmt.Errorf("gpt2: hook on %s replaced Data; modify it in place instead", name)
			}
		}
		for i, x := range before {
			if math.Float32bits(x) != math.Float32bits(n.data[i]) {
				n.changed = append(n.changed, int32(i))
			}
		}
	}
	if g.cached[pt] {
		g.cache[name] = &Activation{Name: name, Shape: slices.Clone(shape), Data: slices.Clone(n.data)}
	}
	return n, nil
}

// dense wraps data as a [rows, cols] spago matrix.
func dense(data []float32, rows, cols int) *mat.Dense[float32] {
	return mat.NewDense[float32](mat.WithShape(rows, cols), mat.WithBacking(data))
}

func (m *Model) gradients(ctx context.Context, tokens [][]int, opts GradOptions, obj Objective, leaves map[*float32]mat.Tensor) (*GradResult, error) {
	if obj == nil {
		return nil, fmt.Errorf("gpt2: gradients: nil objective")
	}
	if opts.StopAtLayer != 0 {
		return nil, fmt.Errorf("gpt2: gradients: StopAtLayer is not supported (the objective reads logits)")
	}
	if opts.Logits != LogitsAll && opts.Logits != LogitsLast {
		return nil, fmt.Errorf("gpt2: gradients: logits mode %d; want LogitsAll or LogitsLast", opts.Logits)
	}
	if opts.HookGrad != HookGradCut && opts.HookGrad != HookGradThrough {
		return nil, fmt.Errorf("gpt2: gradients: unknown hook gradient mode %d", opts.HookGrad)
	}
	in, err := m.prepareInput(tokens, opts.Mask, opts.PrependBOS)
	if err != nil {
		return nil, err
	}
	g := &graph{ctx: ctx, m: m, in: in, b: len(in.tokens), p: len(in.tokens[0]), d: m.DModel(),
		h: m.NHead(), dh: m.DHead(), dm: m.DMLP(), v: m.VocabSize(),
		hookCut: opts.HookGrad == HookGradCut, logitsOf: opts.Logits,
		seed:      mat.Scalar[float32](0, mat.WithGrad(true)),
		leafLocks: map[mat.Tensor]*sync.Mutex{}, paramGrads: map[mat.Tensor][]float32{}, cache: map[string]*Activation{}, pool: map[int][][]float32{}, nodeOf: map[*ag.Operator]*node{}}
	g.bp = g.b * g.p
	if err := g.plan(opts.RunOptions, opts.Want); err != nil {
		return nil, err
	}
	params := m.paramList()
	if leaves == nil {
		g.ownParams = true
		leaves = map[*float32]mat.Tensor{}
		for _, p := range params {
			rows, cols := p.shape[0], 1
			if len(p.shape) == 2 {
				cols = p.shape[1]
			}
			leaves[&p.data[0]] = mat.NewDense[float32](mat.WithShape(rows, cols), mat.WithBacking(p.data), mat.WithGrad(opts.ParamGrads))
		}
	}
	g.leaves = leaves

	if err := g.forward(); err != nil {
		return nil, err
	}
	logits := &Activation{Name: "logits", Shape: []int{g.b, g.p, g.v}, Data: g.logits.data}
	if g.logitsOf == LogitsLast {
		logits.Shape[1] = 1
	}
	value, dLogits, err := obj(logits)
	if err != nil {
		return nil, err
	}
	if len(dLogits) != len(logits.Data) {
		return nil, fmt.Errorf("gpt2: objective returned %d logit gradients for %d logits", len(dLogits), len(logits.Data))
	}
	loss := g.newNode([]float32{float32(value)}, 1, 1, func(n *node, gy []float32) {
		scaled := make([]float32, len(dLogits))
		for i, x := range dLogits {
			scaled[i] = x * gy[0]
		}
		n.acc(g.logits.op, scaled)
	}, g.logits.op).run()

	if loss.op.RequiresGrad() {
		if err := ag.Backward(loss.op); err != nil {
			return nil, fmt.Errorf("gpt2: backward: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	res := &GradResult{Value: value, Logits: logits, Tokens: in.tokens, Mask: in.mask}
	if opts.Cache != nil {
		res.Cache = g.cache
	}
	if opts.Want != nil {
		res.Grads = map[string]*Activation{}
		for pt, n := range g.nodes {
			if !g.wanted[pt] || n == nil {
				continue
			}
			name := g.m.points[pt]
			var data []float32
			if gr := n.val.Grad(); gr != nil {
				data = gr.Data().F32()
			} else {
				data = make([]float32, len(n.data)) // nothing downstream depends on it
			}
			res.Grads[name] = &Activation{Name: name, Shape: g.shapeOf(pt), Data: data}
		}
	}
	if opts.ParamGrads && g.ownParams {
		res.ParamGrads = map[string][]float32{}
		for _, p := range params {
			grad, ok := g.paramGrads[leaves[&p.data[0]]]
			if !ok {
				grad = make([]float32, len(p.data)) // nothing depends on it
			}
			res.ParamGrads[p.name] = grad
		}
	}
	return res, nil
}

// plan resolves hooks, cache and want to hook point indices.
func (g *graph) plan(opts RunOptions, want Matcher) error {
	m := g.m
	n := len(m.points)
	g.fns = make([][]func(*Activation) error, n)
	g.cached = make([]bool, n)
	g.wanted = make([]bool, n)
	g.nodes = make([]*node, n)
	for i, h := range opts.Hooks {
		if h.Match == nil || h.Fn == nil {
			return fmt.Errorf("gpt2: hook %d has a nil Match or Fn", i)
		}
		matched := false
		for pt, name := range m.points {
			if h.Match(name) {
				g.fns[pt] = append(g.fns[pt], h.Fn)
				matched = true
			}
		}
		if !matched {
			return fmt.Errorf("gpt2: hook %d matches no hook point (check names with Model.CheckHookName)", i)
		}
	}
	for _, sel := range []struct {
		match Matcher
		into  []bool
		what  string
	}{{opts.Cache, g.cached, "cache selection"}, {want, g.wanted, "gradient selection"}} {
		if sel.match == nil {
			continue
		}
		any := false
		for pt, name := range m.points {
			if sel.match(name) {
				sel.into[pt], any = true, true
			}
		}
		if !any {
			return fmt.Errorf("gpt2: the %s matches no hook point (check names with Model.CheckHookName)", sel.what)
		}
	}
	return nil
}

// shapeOf is the activation shape of hook point pt.
func (g *graph) shapeOf(pt int) []int {
	b, p, d := g.b, g.p, g.d
	if pt < firstBlock {
		return []int{b, p, d}
	}
	if pt >= blockPoint(g.m.NLayer()) {
		if pt == blockPoint(g.m.NLayer()) {
			return []int{b, p, 1}
		}
		return []int{b, p, d}
	}
	switch (pt - firstBlock) % pointsPerBlock {
	case ptLn1Scale, ptLn2Scale:
		return []int{b, p, 1}
	case ptQ, ptK, ptV, ptZ:
		return []int{b, p, g.h, g.dh}
	case ptAttnScores, ptPattern:
		return []int{b, g.h, p, p}
	case ptResult:
		return []int{b, p, g.h, d}
	case ptMLPPre, ptMLPPost:
		return []int{b, p, g.dm}
	}
	return []int{b, p, d}
}

// needed reports whether anything asks for hook point pt itself.
func (g *graph) needed(pt int) bool { return g.cached[pt] || g.wanted[pt] || len(g.fns[pt]) > 0 }

// forward builds the graph, firing hooks at every hook point in Run's order.
func (g *graph) forward() error {
	pm := &g.m.p
	embed, pos := g.embed()
	if _, err := g.point(ptEmbed, embed, g.shapeOf(ptEmbed)...); err != nil {
		return err
	}
	if _, err := g.point(ptPosEmbed, pos, g.shapeOf(ptPosEmbed)...); err != nil {
		return err
	}
	resid := g.add(embed, pos)
	for l := 0; l < g.m.NLayer(); l++ {
		if err := g.ctx.Err(); err != nil {
			return err
		}
		if l > 0 {
			// blocks.l.hook_resid_pre is its own node, like TransformerLens'
			// HookPoint on blocks.(l-1).hook_resid_post.
			resid = g.identity(resid)
		}
		var err error
		if resid, err = g.block(l, resid); err != nil {
			return err
		}
	}
	scalePt, normPt := finalPoints(g.m.NLayer())
	x, err := g.layerNorm(resid, scalePt, normPt, pm.lnfW, pm.lnfB)
	if err != nil {
		return err
	}
	g.logits = g.unembed(x).run()
	return nil
}

// layerNorm adds the two nodes of a LayerNorm (hook_scale, hook_normalized).
func (g *graph) layerNorm(x *node, scalePt, normPt int, w, b []float32) (*node, error) {
	sn, c := g.lnScale(x)
	s, err := g.point(scalePt, sn, g.shapeOf(scalePt)...)
	if err != nil {
		return nil, err
	}
	return g.point(normPt, g.lnNorm(x, s, c, w, b), g.shapeOf(normPt)...)
}

// block adds transformer block l on top of the residual stream node resid
// (not yet a hook point: it becomes this block's hook_resid_pre).
func (g *graph) block(l int, resid *node) (*node, error) {
	lp, pt := &g.m.p.layers[l], blockPoint(l)
	at := func(off int, n *node) (*node, error) { return g.point(pt+off, n, g.shapeOf(pt+off)...) }
	var err error
	if resid, err = at(ptResidPre, resid); err != nil {
		return nil, err
	}
	ln, err := g.layerNorm(resid, pt+ptLn1Scale, pt+ptLn1Normalized, lp.ln1W, lp.ln1B)
	if err != nil {
		return nil, err
	}
	d := g.d
	w := weightRef{t: g.leaf(lp.attnW), data: lp.attnW, ld: 3 * d}
	bias := weightRef{t: g.leaf(lp.attnB), data: lp.attnB}
	var qkv [3]*node
	for i, off := range []int{ptQ, ptK, ptV} {
		w.off, bias.off = i*d, i*d
		if qkv[i], err = at(off, g.linear(ln, w, bias, d, d)); err != nil {
			return nil, err
		}
	}
	q, k, v := qkv[0], qkv[1], qkv[2]

	var z *node
	scale := g.m.attnScale[l]
	if g.needed(pt+ptAttnScores) || g.needed(pt+ptPattern) {
		s, err := at(ptAttnScores, g.scores(q, k, scale))
		if err != nil {
			return nil, err
		}
		pat, err := at(ptPattern, g.softmax(s, len(g.fns[pt+ptAttnScores]) > 0))
		if err != nil {
			return nil, err
		}
		z = g.mix(pat, v)
	} else {
		z = g.attention(q, k, v, scale)
	}
	if z, err = at(ptZ, z); err != nil {
		return nil, err
	}

	projW := weightRef{t: g.leaf(lp.projW), data: lp.projW, ld: d}
	projB := weightRef{t: g.leaf(lp.projB), data: lp.projB}
	var attnOut *node
	if g.needed(pt + ptResult) {
		r, err := at(ptResult, g.headResults(z, projW))
		if err != nil {
			return nil, err
		}
		attnOut = g.sumHeads(r, projB)
	} else {
		attnOut = g.linear(z, projW, projB, d, d)
	}
	if attnOut, err = at(ptAttnOut, attnOut); err != nil {
		return nil, err
	}
	mid, err := at(ptResidMid, g.add(resid, attnOut))
	if err != nil {
		return nil, err
	}

	ln2, err := g.layerNorm(mid, pt+ptLn2Scale, pt+ptLn2Normalized, lp.ln2W, lp.ln2B)
	if err != nil {
		return nil, err
	}
	fcW := weightRef{t: g.leaf(lp.fcW), data: lp.fcW, ld: g.dm}
	fcB := weightRef{t: g.leaf(lp.fcB), data: lp.fcB}
	pre, err := at(ptMLPPre, g.linear(ln2, fcW, fcB, d, g.dm))
	if err != nil {
		return nil, err
	}
	post, err := at(ptMLPPost, g.activation(pre))
	if err != nil {
		return nil, err
	}
	outW := weightRef{t: g.leaf(lp.outW), data: lp.outW, ld: d}
	outB := weightRef{t: g.leaf(lp.outB), data: lp.outB}
	mlpOut, err := at(ptMLPOut, g.linear(post, outW, outB, g.dm, d))
	if err != nil {
		return nil, err
	}
	return at(ptResidPost, g.add(mid, mlpOut))
}
