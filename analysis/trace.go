package analysis

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/factlens/factlens/gpt2"
)

// TraceKind is what causal tracing restores: a block's output (the residual
// stream after it), or the MLP or attention outputs of a window of layers.
type TraceKind string

// The three kinds of ROME's causal traces.
const (
	TraceHidden TraceKind = "hidden" // blocks.L.hook_resid_post
	TraceMLP    TraceKind = "mlp"    // blocks.L.hook_mlp_out, window of layers
	TraceAttn   TraceKind = "attn"   // blocks.L.hook_attn_out, window of layers
)

func (k TraceKind) point() (string, error) {
	switch k {
	case TraceHidden:
		return "hook_resid_post", nil
	case TraceMLP:
		return "hook_mlp_out", nil
	case TraceAttn:
		return "hook_attn_out", nil
	}
	return "", fmt.Errorf("analysis: unknown trace kind %q (want hidden, mlp or attn)", k)
}

// TraceOptions control CausalTrace. Zero values give ROME's settings, except
// the window, which ROME fixes at 10 layers for 48-layer GPT-2 XL.
type TraceOptions struct {
	// Noise is ν, the standard deviation of the Gaussian noise added to the
	// subject's token embeddings; ROME uses 3σ, see EmbeddingStd. Required.
	Noise float64
	// Samples is the number of corrupted runs averaged; 0 means 10.
	Samples int
	// Seed seeds the noise, drawn once and reused for every restoration
	// (common random numbers, like ROME's RandomState(1) per trace); 0 means 1.
	Seed uint64
	// Window is how many consecutive layers' MLP or attention outputs are
	// restored together, centred as ROME centres them ([l − w/2, l + ⌈w/2⌉)
	// clipped); 0 means DefaultWindow(n_layer).
	Window int
	// Kinds to trace; nil means all three.
	Kinds []TraceKind
	// Tokenizer, if set, fills token text fields.
	Tokenizer *gpt2.Tokenizer
}

// DefaultWindow scales ROME's 10-of-48-layer window to n layers: 3 for GPT-2
// small's 12, 5 for medium's 24, 8 for large's 36, 10 for XL's 48.
func DefaultWindow(n int) int {
	return max(1, int(math.Round(float64(n)*10/48)))
}

// TraceResult is one prompt's causal trace. Scores[kind][pos][layer] is the
// target's probability at the last position, averaged over the corrupted
// runs, with the clean state (kind, layer window, pos) restored — ROME's
// "scores"; its indirect effect is that minus CorruptedProb.
type TraceResult struct {
	Tokens        []int    `json:"tokens"`
	Strs          []string `json:"strs,omitempty"`
	SubjectStart  int      `json:"subject_start"`
	SubjectEnd    int      `json:"subject_end"`
	Target        int      `json:"target"`
	TargetToken   string   `json:"target_token,omitempty"`
	CleanTop      int      `json:"clean_top"`
	Correct       bool     `json:"correct"` // the clean run's top token is Target
	CleanProb     float64  `json:"clean_prob"`
	CorruptedProb float64  `json:"corrupted_prob"`
	Noise         float64  `json:"noise"`
	Samples       int      `json:"samples"`
	Seed          uint64   `json:"seed"`
	Window        int      `json:"window"`
	Processing    string   `json:"processing"`

	Scores map[TraceKind][][]float64 `json:"scores"`
}

// TotalEffect is P(target) clean minus corrupted (ROME's TE).
func (r *TraceResult) TotalEffect() float64 { return r.CleanProb - r.CorruptedProb }

// IndirectEffect is Scores[kind][pos][layer] − CorruptedProb (ROME's IE).
func (r *TraceResult) IndirectEffect(kind TraceKind, pos, layer int) float64 {
	return r.Scores[kind][pos][layer] - r.CorruptedProb
}

// traceLayers returns the layers restored for centre layer l: all of
// [l − w/2, l + ⌈w/2⌉) within the model (ROME's trace_important_window).
func traceLayers(kind TraceKind, l, window, nLayer int) []int {
	if kind == TraceHidden {
		return []int{l}
	}
	var ls []int
	for x := max(0, l-window/2); x < min(nLayer, l+(window+1)/2); x++ {
		ls = append(ls, x)
	}
	return ls
}

// CausalTrace runs ROME's causal tracing of P(target) at the last position
// (target < 0: the clean run's top token, as ROME does) on one prompt whose
// subject is tokens [subjectStart, subjectEnd): Samples runs with Gaussian noise of
// standard deviation Noise added to the subject's token embeddings
// (hook_embed, before the position embeddings are added), then, for every
// kind, position and layer, the same noisy runs with that clean state
// restored. Two kinds of cell provably equal the corrupted probability and
// are filled in without running: states before the subject (the noise
// cannot reach them) and the last block's outputs at positions before the
// last (nothing reads them on the way to the last position's logits).
func CausalTrace(ctx context.Context, m *gpt2.Model, tokens []int, subjectStart, subjectEnd, target int, opts TraceOptions) (*TraceResult, error) {
	if err := checkTokens(m, tokens); err != nil {
		return nil, err
	}
	P, L, d := len(tokens), m.NLayer(), m.DModel()
	if subjectStart < 0 || subjectEnd > P || subjectStart >= subjectEnd {
		return nil, fmt.Errorf("analysis: subject span [%d, %d) is not inside the %d tokens", subjectStart, subjectEnd, P)
	}
	if !(opts.Noise > 0) || math.IsInf(opts.Noise, 0) {
		return nil, fmt.Errorf("analysis: causal trace needs a positive noise level, got %v", opts.Noise)
	}
	samples, seed, window := opts.Samples, opts.Seed, opts.Window
	if samples <= 0 {
		samples = 10
	}
	if seed == 0 {
		seed = 1
	}
	if window <= 0 {
		window = DefaultWindow(L)
	}
	kinds := opts.Kinds
	if kinds == nil {
		kinds = []TraceKind{TraceHidden, TraceMLP, TraceAttn}
	}
	var cacheNames []string
	for _, k := range kinds {
		pt, err := k.point()
		if err != nil {
			return nil, err
		}
		cacheNames = append(cacheNames, perLayer(L, pt)...)
	}

	clean, err := m.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Cache: matchNames(cacheNames...), Logits: gpt2.LogitsLast})
	if err != nil {
		return nil, fmt.Errorf("analysis: causal trace: clean run: %w", err)
	}
	cleanRow := clean.Logits.At(0, 0)
	if target < 0 {
		target = argmax(cleanRow)
	} else if err := checkToken(m, "target", target); err != nil {
		return nil, err
	}
	out := &TraceResult{
		Tokens: slices.Clone(tokens), SubjectStart: subjectStart, SubjectEnd: subjectEnd,
		Target: target, TargetToken: tokenText(opts.Tokenizer, target), CleanTop: argmax(cleanRow),
		CleanProb: prob(cleanRow, target), Noise: opts.Noise, Samples: samples, Seed: seed, Window: window,
		Processing: m.Processing.String(), Scores: map[TraceKind][][]float64{},
	}
	out.Correct = out.CleanTop == target
	if opts.Tokenizer != nil {
		for _, t := range tokens {
			out.Strs = append(out.Strs, opts.Tokenizer.Token(t))
		}
	}

	span := subjectEnd - subjectStart
	noise := &embedNoise{}
	for p := subjectStart; p < subjectEnd; p++ {
		noise.positions = append(noise.positions, p)
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	for s := 0; s < samples; s++ {
		ns := make([]float32, span*d)
		for i := range ns {
			ns[i] = float32(rng.NormFloat64() * opts.Noise)
		}
		noise.samples = append(noise.samples, ns)
	}
	br := &batchRunner{m: m, tokens: tokens, noise: noise, logits: gpt2.LogitsLast}

	// The corrupted baseline, then every (kind, pos ≥ subjectStart, layer)
	// restoration, each as `samples` rows.
	type cell struct {
		kind       TraceKind
		pos, layer int
	}
	cells := []cell{{}}
	for _, k := range kinds {
		grid := make([][]float64, P)
		for p := range grid {
			grid[p] = make([]float64, L)
		}
		out.Scores[k] = grid
		for p := subjectStart; p < P; p++ {
			for l := 0; l < L; l++ {
				if p < P-1 && traceLayers(k, l, window, L)[0] == L-1 {
					continue // the last block's outputs at p reach no later position
				}
				cells = append(cells, cell{k, p, l})
			}
		}
	}
	var specs []rowSpec
	for ci, c := range cells {
		var edits []edit
		if ci > 0 {
			pt, _ := c.kind.point()
			for _, l := range traceLayers(c.kind, c.layer, window, L) {
				name := blockHook(l, pt)
				edits = append(edits, edit{name: name, pos: c.pos, vals: vectorAt(clean.Cache[name], 0, c.pos)})
			}
		}
		for s := 0; s < samples; s++ {
			specs = append(specs, rowSpec{edits: edits, noisy: s + 1})
		}
	}
	scores := make([]float64, len(cells))
	err = br.run(ctx, specs, func(i int, res *gpt2.Result, row int) error {
		scores[i/samples] += prob(res.Logits.At(row, 0), target) / float64(samples)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("analysis: causal trace: %w", err)
	}
	out.CorruptedProb = scores[0]
	for _, k := range kinds {
		for p := range out.Scores[k] {
			for l := range out.Scores[k][p] {
				out.Scores[k][p][l] = out.CorruptedProb
			}
		}
	}
	for ci, c := range cells[1:] {
		out.Scores[c.kind][c.pos][c.layer] = scores[ci+1]
	}
	return out, nil
}

// TracePrompt is CausalTrace on a Prompt, tracing its target token.
func TracePrompt(ctx context.Context, m *gpt2.Model, p *Prompt, opts TraceOptions) (*TraceResult, error) {
	return CausalTrace(ctx, m, p.Tokens, p.SubjectStart, p.SubjectEnd, p.Target, opts)
}

// EmbeddingStd is ROME's collect_embedding_std: the standard deviation
// (n−1 normalised, as torch.std) of every element of the token embeddings
// of every subject, each tokenized alone without BOS. The embeddings are the
// model's hook_embed values (wte rows, in the model's processing's
// coordinates). Causal tracing uses ν = 3·EmbeddingStd.
func EmbeddingStd(m *gpt2.Model, tok *gpt2.Tokenizer, subjects []string) (float64, error) {
	wte, err := weight(m, "wte.weight")
	if err != nil {
		return 0, err
	}
	d := m.DModel()
	var n int
	var s, ss float64
	for _, subj := range subjects {
		for _, id := range tok.Encode(subj) {
			if err := checkToken(m, "subject", id); err != nil {
				return 0, err
			}
			for _, v := range wte[id*d : (id+1)*d] {
				s += float64(v)
				n++
			}
		}
	}
	if n < 2 {
		return 0, fmt.Errorf("analysis: embedding std needs at least one subject token")
	}
	mu := s / float64(n)
	for _, subj := range subjects {
		for _, id := range tok.Encode(subj) {
			for _, v := range wte[id*d : (id+1)*d] {
				ss += (float64(v) - mu) * (float64(v) - mu)
			}
		}
	}
	return math.Sqrt(ss / float64(n-1)), nil
}

// traceBuckets are the token-role buckets of ROME's average_causal_effects,
// in its order; TraceSummary.Buckets names them.
var traceBuckets = []string{"first subject token", "middle subject tokens", "last subject token", "first subsequent token", "further tokens", "last token"}

// TraceSummary averages causal traces over a dataset as ROME's
// average_causal_effects notebook does: only facts the model predicts
// correctly (unless asked otherwise), each position of each fact assigned to
// the token-role buckets (a position can fall in two, e.g. a one-token
// subject is both first and last subject token), every (fact, position)
// sample weighted equally within a bucket.
type TraceSummary struct {
	Buckets       []string `json:"buckets"`
	Facts         int      `json:"facts"`   // traces averaged
	Skipped       int      `json:"skipped"` // incorrect predictions left out
	MeanClean     float64  `json:"mean_clean_prob"`
	MeanCorrupted float64  `json:"mean_corrupted_prob"`
	ATE           float64  `json:"ate"` // MeanClean − MeanCorrupted
	// Counts[bucket] is the number of (fact, position) samples in the bucket.
	Counts []int `json:"counts"`
	// Scores[kind][bucket][layer] is the mean restored probability (0 for an
	// empty bucket); AIE the same minus MeanCorrupted.
	Scores map[TraceKind][][]float64 `json:"scores"`
	AIE    map[TraceKind][][]float64 `json:"aie"`
	// Peak AIE per kind: the largest bucket-layer cell.
	Peak map[TraceKind]TracePeak `json:"peak"`
}

// TracePeak is the largest average indirect effect of one kind.
type TracePeak struct {
	Bucket string  `json:"bucket"`
	Layer  int     `json:"layer"`
	AIE    float64 `json:"aie"`
}

// SummarizeTraces averages traces into ROME's token-role buckets. With
// onlyCorrect, traces whose clean top token is not the target are skipped.
func SummarizeTraces(traces []*TraceResult, onlyCorrect bool) (*TraceSummary, error) {
	sum := &TraceSummary{Buckets: slices.Clone(traceBuckets), Scores: map[TraceKind][][]float64{}, AIE: map[TraceKind][][]float64{}, Peak: map[TraceKind]TracePeak{}}
	var used []*TraceResult
	for _, t := range traces {
		if onlyCorrect && !t.Correct {
			sum.Skipped++
			continue
		}
		used = append(used, t)
	}
	if len(used) == 0 {
		return nil, fmt.Errorf("analysis: no traces to summarize (%d skipped as incorrect)", sum.Skipped)
	}
	sum.Facts = len(used)
	var clean, corrupt []float64
	for _, t := range used {
		clean = append(clean, t.CleanProb)
		corrupt = append(corrupt, t.CorruptedProb)
	}
	sum.MeanClean, sum.MeanCorrupted = mean(clean), mean(corrupt)
	sum.ATE = sum.MeanClean - sum.MeanCorrupted
	sum.Counts = make([]int, len(traceBuckets))
	for _, t := range used {
		for b, positions := range bucketPositions(t.SubjectStart, t.SubjectEnd, len(t.Tokens)) {
			sum.Counts[b] += len(positions)
		}
	}
	for _, kind := range []TraceKind{TraceHidden, TraceMLP, TraceAttn} {
		var nLayer int
		for _, t := range used {
			if g, ok := t.Scores[kind]; ok && len(g) > 0 {
				nLayer = len(g[0])
				break
			}
		}
		if nLayer == 0 {
			continue
		}
		acc := make([][][]float64, len(traceBuckets)) // [bucket][layer] samples
		for b := range acc {
			acc[b] = make([][]float64, nLayer)
		}
		for _, t := range used {
			g, ok := t.Scores[kind]
			if !ok {
				return nil, fmt.Errorf("analysis: summarize: a trace lacks kind %q that others have", kind)
			}
			if len(g) == 0 || len(g[0]) != nLayer {
				return nil, fmt.Errorf("analysis: summarize: traces of models with different layer counts")
			}
			for b, positions := range bucketPositions(t.SubjectStart, t.SubjectEnd, len(t.Tokens)) {
				for _, p := range positions {
					for l := 0; l < nLayer; l++ {
						acc[b][l] = append(acc[b][l], g[p][l])
					}
				}
			}
		}
		scores := make([][]float64, len(traceBuckets))
		aie := make([][]float64, len(traceBuckets))
		peak := TracePeak{AIE: math.Inf(-1)}
		for b := range scores {
			scores[b] = make([]float64, nLayer)
			aie[b] = make([]float64, nLayer)
			if sum.Counts[b] == 0 {
				continue
			}
			for l := range scores[b] {
				scores[b][l] = mean(acc[b][l])
				aie[b][l] = scores[b][l] - sum.MeanCorrupted
				if aie[b][l] > peak.AIE {
					peak = TracePeak{Bucket: traceBuckets[b], Layer: l, AIE: aie[b][l]}
				}
			}
		}
		sum.Scores[kind], sum.AIE[kind], sum.Peak[kind] = scores, aie, peak
	}
	return sum, nil
}

// bucketPositions lists each bucket's positions for a prompt of n tokens with
// subject [s, e): ROME's first_e, first_e+1 … last_e−1, last_e, first_a,
// first_a+1 … last_a−1, last_a.
func bucketPositions(s, e, n int) [][]int {
	rng := func(a, b int) []int {
		var r []int
		for i := a; i < b; i++ {
			r = append(r, i)
		}
		return r
	}
	lastE, firstA, lastA := e-1, e, n-1
	b := [][]int{{s}, rng(s+1, lastE), {lastE}, nil, rng(firstA+1, lastA), {lastA}}
	if firstA < n {
		b[3] = []int{firstA}
	}
	return b
}

// TraceFactsResult is causal tracing over a dataset.
type TraceFactsResult struct {
	Noise   float64        `json:"noise"` // ν used for every trace
	Traces  []*TraceResult `json:"traces"`
	Summary *TraceSummary  `json:"summary"`
}

// TraceFacts traces every prompt's target and summarizes the traces of the
// prompts the model gets right (ROME's filter; Summary is nil if there are
// none). With opts.Noise 0, ν is
// 3·EmbeddingStd over the prompts' subjects, as ROME's --noise_level s3.
// progress, if not nil, is called after each prompt.
func TraceFacts(ctx context.Context, m *gpt2.Model, tok *gpt2.Tokenizer, prompts []*Prompt, opts TraceOptions, progress func(done, total int)) (*TraceFactsResult, error) {
	if len(prompts) == 0 {
		return nil, fmt.Errorf("analysis: no prompts to trace")
	}
	if opts.Noise == 0 {
		var subjects []string
		for _, p := range prompts {
			subjects = append(subjects, p.Fact.Subject)
		}
		std, err := EmbeddingStd(m, tok, subjects)
		if err != nil {
			return nil, err
		}
		opts.Noise = 3 * std
	}
	out := &TraceFactsResult{Noise: opts.Noise}
	for i, p := range prompts {
		r, err := TracePrompt(ctx, m, p, opts)
		if err != nil {
			return nil, fmt.Errorf("analysis: fact %s: %w", p.Fact.ID, err)
		}
		out.Traces = append(out.Traces, r)
		if progress != nil {
			progress(i+1, len(prompts))
		}
	}
	for _, t := range out.Traces {
		if t.Correct {
			var err error
			out.Summary, err = SummarizeTraces(out.Traces, true)
			return out, err
		}
	}
	return out, nil
}
