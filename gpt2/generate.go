package gpt2

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"

	"github.com/factlens/factlens/gpt2/kernels"
)

// GenerateOptions control Model.Generate. The zero value is invalid:
// MaxNewTokens must be at least 1. With Temperature 0 decoding is greedy.
type GenerateOptions struct {
	// MaxNewTokens is how many tokens to generate at most (≥ 1). The prompt,
	// the BOS token if prepended and the new tokens must fit in n_positions.
	MaxNewTokens int
	// Temperature divides the logits before sampling; 0 means greedy decoding
	// (the most likely token, the lowest id among equals), and then TopK and
	// TopP must be 0.
	Temperature float64
	// TopK > 0 samples only among the TopK most likely tokens (and any tied
	// with the TopK-th, as Hugging Face's TopKLogitsWarper keeps them).
	TopK int
	// TopP in (0, 1) samples from the nucleus: the most likely tokens, in
	// order of probability, up to and including the one at which their
	// cumulative probability reaches TopP (Hugging Face's TopPLogitsWarper).
	// 0 and 1 turn it off. It applies after TopK, to the renormalized
	// probabilities of the tokens TopK kept.
	TopP float64
	// Seed seeds the sampler (math/rand/v2's PCG, seeded with (Seed, 0)): the
	// same seed, model, prompt and options give the same tokens.
	Seed uint64
	// StopAtEOT ends generation after the model emits the config's
	// eos_token_id (<|endoftext|> for GPT-2); that token is returned.
	StopAtEOT bool
	// PrependBOS puts the config's bos_token_id before the prompt, as
	// RunOptions.PrependBOS does. An empty prompt is then allowed: the model
	// continues from BOS alone (unconditional generation).
	PrependBOS bool
	// OnToken, if set, is called after each new token is chosen, with its
	// index among the new tokens, its id and the logits it was chosen from
	// (the model's, before temperature; valid only during the call). An
	// error it returns stops generation.
	OnToken func(step, id int, logits []float32) error
}

// Generate continues one prompt (a batch of one row) and returns the new
// token ids only. It runs the prompt once through Run (the prefill), keeping
// every layer's keys and values; each new token then runs only its own
// position through the blocks, its query attending to the cached keys and
// values, so a step costs one position's work instead of the whole
// sequence's. The logits equal Run's on the whole sequence up to float32
// rounding, under the model's weight processing.
//
// Generate runs no hooks and fills no activation cache: to look inside a
// generated sequence, Run the prompt followed by the returned ids.
//
// On an error after generation started (ctx cancelled, OnToken failing) the
// ids generated so far are returned with it.
func (m *Model) Generate(ctx context.Context, prompt []int, opts GenerateOptions) ([]int, error) {
	seq, err := m.checkGenerate(prompt, opts)
	if err != nil {
		return nil, err
	}
	dec, err := m.prefill(ctx, seq, len(seq)+opts.MaxNewTokens-1)
	if err != nil {
		return nil, err
	}
	smp := newSampler(opts, m.VocabSize())
	var out []int
	for step := 0; step < opts.MaxNewTokens; step++ {
		if step > 0 {
			if err := ctx.Err(); err != nil {
				return out, fmt.Errorf("gpt2: generate: %w", err)
			}
			dec.step(out[step-1])
		}
		id := smp.next(dec.logits)
		out = append(out, id)
		if opts.OnToken != nil {
			if err := opts.OnToken(step, id, dec.logits); err != nil {
				return out, fmt.Errorf("gpt2: generate: token %d: %w", step, err)
			}
		}
		if opts.StopAtEOT && id == m.Config.EOSTokenID {
			break
		}
	}
	return out, nil
}

// checkGenerate validates a generation request and returns the sequence the
// prefill runs (the prompt, after BOS if prepended).
func (m *Model) checkGenerate(prompt []int, opts GenerateOptions) ([]int, error) {
	v := m.VocabSize()
	switch {
	case opts.MaxNewTokens < 1:
		return nil, fmt.Errorf("gpt2: generate: MaxNewTokens %d, want at least 1", opts.MaxNewTokens)
	case opts.Temperature < 0 || math.IsNaN(opts.Temperature) || math.IsInf(opts.Temperature, 0):
		return nil, fmt.Errorf("gpt2: generate: Temperature %v, want a finite value ≥ 0 (0 is greedy)", opts.Temperature)
	case opts.TopK < 0:
		return nil, fmt.Errorf("gpt2: generate: TopK %d, want ≥ 0 (0 keeps every token)", opts.TopK)
	case !(opts.TopP >= 0 && opts.TopP <= 1):
		return nil, fmt.Errorf("gpt2: generate: TopP %v, want a value in [0, 1] (0 and 1 keep every token)", opts.TopP)
	case opts.Temperature == 0 && (opts.TopK > 0 || opts.TopP > 0):
		return nil, fmt.Errorf("gpt2: generate: TopK and TopP shape sampling, but Temperature 0 decodes greedily; set a Temperature > 0")
	case opts.StopAtEOT && (m.Config.EOSTokenID < 0 || m.Config.EOSTokenID >= v):
		return nil, fmt.Errorf("gpt2: generate: StopAtEOT, but eos_token_id %d is out of range [0, %d)", m.Config.EOSTokenID, v)
	case opts.PrependBOS && (m.Config.BOSTokenID < 0 || m.Config.BOSTokenID >= v):
		return nil, fmt.Errorf("gpt2: generate: bos_token_id %d is out of range [0, %d)", m.Config.BOSTokenID, v)
	case len(prompt) == 0 && !opts.PrependBOS:
		return nil, fmt.Errorf("gpt2: generate: empty prompt (set PrependBOS to continue from BOS alone)")
	}
	for i, id := range prompt {
		if id < 0 || id >= v {
			return nil, fmt.Errorf("gpt2: generate: prompt token %d = %d is out of range [0, %d)", i, id, v)
		}
	}
	seq := slices.Clone(prompt)
	what := "prompt of " + strconv.Itoa(len(prompt)) + " tokens"
	if opts.PrependBOS {
		seq = slices.Insert(seq, 0, m.Config.BOSTokenID)
		what += " after BOS"
	}
	if n := len(seq) + opts.MaxNewTokens; n > m.NCtx() {
		return nil, fmt.Errorf("gpt2: generate: %s plus %d new tokens is %d positions, more than n_positions %d",
			what, opts.MaxNewTokens, n, m.NCtx())
	}
	return seq, nil
}

// decoder holds the key/value cache of one sequence and the buffers of a
// one-position step. The cached keys and values of layer l are [positions,
// d_model] with head-major columns, as hook_k and hook_v lay them out.
type decoder struct {
	m    *Model
	n    int         // positions cached
	k, v [][]float32 // per layer [capacity·d_model]

	x, ln, qkv, z, attnOut, mlpOut []float32 // [d_model] (qkv 3·d_model)
	mlp                            []float32 // [d_mlp]
	scores                         []float32 // [capacity]
	logits                         []float32 // [vocab]: the last position's
	scale                          [1]float32
}

// prefill runs seq through Run, copying each layer's hook_k and hook_v into
// a cache for capacity positions, and leaves the last position's logits in
// dec.logits.
func (m *Model) prefill(ctx context.Context, seq []int, capacity int) (*decoder, error) {
	d := m.DModel()
	dec := &decoder{m: m, n: len(seq),
		x: make([]float32, d), ln: make([]float32, d), qkv: make([]float32, 3*d), z: make([]float32, d),
		attnOut: make([]float32, d), mlpOut: make([]float32, d), mlp: make([]float32, m.DMLP()),
		scores: make([]float32, capacity)}
	hooks := make([]Hook, 0, 2*m.NLayer())
	for l := 0; l < m.NLayer(); l++ {
		k, v := make([]float32, capacity*d), make([]float32, capacity*d)
		dec.k, dec.v = append(dec.k, k), append(dec.v, v)
		keep := func(dst []float32) func(*Activation) error {
			return func(a *Activation) error { copy(dst, a.Data); return nil }
		}
		prefix := "blocks." + strconv.Itoa(l) + ".attn."
		hooks = append(hooks, Hook{HookName(prefix + "hook_k"), keep(k)}, Hook{HookName(prefix + "hook_v"), keep(v)})
	}
	res, err := m.Run(ctx, [][]int{seq}, RunOptions{Hooks: hooks, Logits: LogitsLast})
	if err != nil {
		return nil, fmt.Errorf("gpt2: generate: prefill: %w", err)
	}
	dec.logits = res.Logits.Data
	return dec, nil
}

// step runs token tok at the next position, attending to the cache, appends
// its keys and values, and leaves its logits in dec.logits. It does what
// Run does for one position (same kernels, same order of operations).
func (dec *decoder) step(tok int) {
	m, p := dec.m, &dec.m.p
	d, h, dh, dm, t := m.DModel(), m.NHead(), m.DHead(), m.DMLP(), dec.n
	x := dec.x
	emb, pos := p.wte[tok*d:(tok+1)*d], p.wpe[t*d:(t+1)*d]
	for i := range x {
		x[i] = emb[i] + pos[i]
	}
	act := m.activation()
	for l := range p.layers {
		lp := &p.layers[l]
		layerNormStats(dec.ln, dec.scale[:], x, d, m.eps)
		layerNormApply(dec.ln, dec.scale[:], lp.ln1W, lp.ln1B, d)
		rowLinear(dec.qkv, dec.ln, lp.attnW, lp.attnB, d, 3*d)
		keys, vals := dec.k[l][:(t+1)*d], dec.v[l][:(t+1)*d]
		copy(keys[t*d:], dec.qkv[d:2*d])
		copy(vals[t*d:], dec.qkv[2*d:])
		s, scale := dec.scores[:t+1], m.attnScale[l]
		for hi := 0; hi < h; hi++ {
			// Head hi's keys and values are columns hi·d_head… of the cache,
			// read in place with a row stride of d_model.
			kernels.GEMM(false, true, 1, t+1, dh, dec.qkv[hi*dh:], dh, keys[hi*dh:], d, s, t+1, false)
			for j := range s {
				s[j] *= scale
			}
			kernels.CausalSoftmaxRows(s, 1, t+1, t)
			kernels.GEMM(false, false, 1, dh, t+1, s, t+1, vals[hi*dh:], d, dec.z[hi*dh:], dh, false)
		}
		rowLinear(dec.attnOut, dec.z, lp.projW, lp.projB, d, d)
		addInto(x, dec.attnOut)

		layerNormStats(dec.ln, dec.scale[:], x, d, m.eps)
		layerNormApply(dec.ln, dec.scale[:], lp.ln2W, lp.ln2B, d)
		rowLinear(dec.mlp, dec.ln, lp.fcW, lp.fcB, d, dm)
		act(dec.mlp)
		rowLinear(dec.mlpOut, dec.mlp, lp.outW, lp.outB, dm, d)
		addInto(x, dec.mlpOut)
	}
	layerNormStats(dec.ln, dec.scale[:], x, d, m.eps)
	layerNormApply(dec.ln, dec.scale[:], p.lnfW, p.lnfB, d)
	if p.unembedB != nil {
		copy(dec.logits, p.unembedB)
	}
	kernels.MatMulTransB(dec.logits, dec.ln, p.unembed, 1, d, m.VocabSize(), p.unembedB != nil)
	dec.n++
}

// rowLinear computes y[out] = x[in]·W + bias for one row, splitting the
// columns over the cores. One row is a matrix-vector product bound by
// reading W, which the kernels would run on one core (it is below their
// threshold for going parallel); two cores read it faster.
func rowLinear(y, x, W, bias []float32, in, out int) {
	copy(y, bias)
	// Column chunks are a multiple of every micro-kernel's width (48, 16).
	const align = 96
	workers := min(runtime.GOMAXPROCS(0), out/align)
	if workers <= 1 {
		kernels.MatMul(y, x, W, 1, in, out, true)
		return
	}
	per := (out/workers + align - 1) / align * align
	parallelFor(workers, func(_, w int) {
		j0 := w * per
		j1 := min(j0+per, out)
		if j0 < j1 {
			kernels.GEMM(false, false, 1, j1-j0, in, x, in, W[j0:], out, y[j0:], out, true)
		}
	})
}

// sampler chooses each next token from a row of logits: the argmax when
// greedy, else a draw from the temperature-scaled, top-k and top-p filtered
// distribution, in that order (as Hugging Face's and TransformerLens'
// samplers apply them).
type sampler struct {
	temperature float64
	topK        int
	topP        float64
	rng         *rand.Rand

	ids   []int     // scratch: candidate ids
	probs []float64 // scratch: scaled logit, then probability, per id
	kept  []float64 // scratch: probabilities of ids, in their order
	heap  []float64 // scratch: the topK largest scaled logits
}

func newSampler(opts GenerateOptions, vocab int) *sampler {
	s := &sampler{temperature: opts.Temperature, topK: opts.TopK, topP: opts.TopP,
		rng: rand.New(rand.NewPCG(opts.Seed, 0))}
	if s.topK >= vocab {
		s.topK = 0
	}
	if s.topP >= 1 {
		s.topP = 0
	}
	return s
}

func (s *sampler) next(logits []float32) int {
	if s.temperature == 0 {
		return argmax(logits)
	}
	ids, probs := s.distribution(logits)
	u := s.rng.Float64()
	var cum float64
	for i, p := range probs {
		cum += p
		if u < cum {
			return ids[i]
		}
	}
	return ids[len(ids)-1] // u within rounding of 1
}

// argmax returns the index of the largest value, the first among equals.
func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// distribution returns the tokens sampling may pick and their probabilities
// (summing to 1): after top-p, in order of decreasing probability (then
// increasing id); otherwise in id order. The slices are scratch, valid until
// the next call.
func (s *sampler) distribution(logits []float32) (ids []int, probs []float64) {
	z := s.probs[:0]
	for _, v := range logits {
		z = append(z, float64(v)/s.temperature)
	}
	s.probs = z
	ids = s.ids[:0]
	if s.topK > 0 {
		kth := s.kthLargest(z, s.topK)
		for i, v := range z {
			if v >= kth {
				ids = append(ids, i)
			}
		}
	} else {
		for i := range z {
			ids = append(ids, i)
		}
	}
	s.ids = ids

	maxZ := math.Inf(-1)
	for _, i := range ids {
		maxZ = max(maxZ, z[i])
	}
	var sum float64
	for _, i := range ids {
		z[i] = math.Exp(z[i] - maxZ)
		sum += z[i]
	}
	for _, i := range ids {
		z[i] /= sum
	}
	if s.topP > 0 {
		ids = nucleus(ids, z, s.topP)
		sum = 0
		for _, i := range ids {
			sum += z[i]
		}
		for _, i := range ids {
			z[i] /= sum
		}
	}
	probs = s.kept[:0]
	for _, i := range ids {
		probs = append(probs, z[i])
	}
	s.kept = probs
	return ids, probs
}

// kthLargest returns the k-th largest of z (1 ≤ k < len(z)), with a min-heap
// of the k largest seen: O(len(z)·log k).
func (s *sampler) kthLargest(z []float64, k int) float64 {
	h := append(s.heap[:0], z[:k]...)
	for i := k/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
	for _, v := range z[k:] {
		if v > h[0] {
			h[0] = v
			siftDown(h, 0)
		}
	}
	s.heap = h
	return h[0]
}

// siftDown restores the min-heap property of h below i.
func siftDown(h []float64, i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && h[c+1] < h[c] {
			c++
		}
		if h[i] <= h[c] {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// nucleus reorders ids by decreasing prob (then increasing id) and returns
// the shortest prefix whose probability reaches topP: a token is kept when
// the tokens before it hold less than topP, so the most likely one always is.
// Only tokens at least as likely as a threshold are sorted, one that leaves
// at least topP of the mass above it: every token of the nucleus is then
// among them.
func nucleus(ids []int, prob []float64, topP float64) []int {
	maxP := 0.0
	for _, i := range ids {
		maxP = max(maxP, prob[i])
	}
	cand := ids
	for tau := maxP / 1024; tau > 1e-300; tau /= 1024 {
		var above []int
		var mass float64
		for _, i := range ids {
			if prob[i] >= tau {
				above = append(above, i)
				mass += prob[i]
			}
		}
		if mass >= topP {
			cand = above
			break
		}
	}
	slices.SortFunc(cand, func(a, b int) int {
		if c := cmp.Compare(prob[b], prob[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	var cum float64
	for n, i := range cand {
		if cum >= topP {
			return cand[:n]
		}
		cum += prob[i]
	}
	return cand
}
