package analysis

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/factlens/factlens/gpt2"
)

// NeuronRef names one MLP neuron (element Neuron of blocks.Layer.mlp.hook_post)
// at token position Pos.
type NeuronRef struct {
	Layer  int `json:"layer"`
	Neuron int `json:"neuron"`
	Pos    int `json:"pos"`
}

// AllNeurons lists every neuron of every layer at each of the positions.
func AllNeurons(m *gpt2.Model, positions ...int) []NeuronRef {
	var refs []NeuronRef
	for _, p := range positions {
		for l := 0; l < m.NLayer(); l++ {
			for n := 0; n < m.DMLP(); n++ {
				refs = append(refs, NeuronRef{l, n, p})
			}
		}
	}
	return refs
}

// AblationMethod says what an ablated neuron's activation becomes.
type AblationMethod string

// Ablation methods.
const (
	AblateZero     AblationMethod = "zero"     // 0
	AblateMean     AblationMethod = "mean"     // its mean over the reference set
	AblateResample AblationMethod = "resample" // its value on a random reference prompt
)

// AblationOptions control neuron ablations.
type AblationOptions struct {
	// Method; "" means zero.
	Method AblationMethod
	// Reference prompts for mean and resample ablation, and the position in
	// each whose activations are used (RefPositions nil: each one's last
	// token). For a neuron at the last subject token, pass the last subject
	// token of other facts.
	Reference    [][]int
	RefPositions []int
	// Draws is how many resampled values are averaged per ablation; 0 means 5.
	Draws int
	// Seed for resampling; 0 means 1.
	Seed uint64
}

// ablator produces replacement values for neurons.
type ablator struct {
	method AblationMethod
	draws  int
	mean   [][]float32   // [layer][neuron]
	refs   [][][]float32 // [ref][layer][neuron]
	rng    *rand.Rand
}

func newAblator(ctx context.Context, m *gpt2.Model, opts AblationOptions) (*ablator, error) {
	a := &ablator{method: opts.Method, draws: 1}
	if a.method == "" {
		a.method = AblateZero
	}
	seed := opts.Seed
	if seed == 0 {
		seed = 1
	}
	a.rng = rand.New(rand.NewPCG(seed, 0xab1a7e))
	switch a.method {
	case AblateZero:
		return a, nil
	case AblateMean, AblateResample:
	default:
		return nil, fmt.Errorf("analysis: unknown ablation method %q (want zero, mean or resample)", opts.Method)
	}
	if len(opts.Reference) == 0 {
		return nil, fmt.Errorf("analysis: %s ablation needs reference prompts", a.method)
	}
	if opts.RefPositions != nil && len(opts.RefPositions) != len(opts.Reference) {
		return nil, fmt.Errorf("analysis: %d reference positions for %d reference prompts", len(opts.RefPositions), len(opts.Reference))
	}
	L, dm := m.NLayer(), m.DMLP()
	names := perLayer(L, "mlp.hook_post")
	a.refs = make([][][]float32, len(opts.Reference))
	for i, toks := range opts.Reference {
		if err := checkTokens(m, toks); err != nil {
			return nil, fmt.Errorf("%w (reference prompt %d)", err, i)
		}
		pos := len(toks) - 1
		if opts.RefPositions != nil {
			pos = opts.RefPositions[i]
		}
		if pos < 0 || pos >= len(toks) {
			return nil, fmt.Errorf("analysis: reference prompt %d: position %d outside its %d tokens", i, pos, len(toks))
		}
		res, err := m.Run(ctx, [][]int{toks}, gpt2.RunOptions{Cache: matchNames(names...), Logits: gpt2.LogitsNone})
		if err != nil {
			return nil, fmt.Errorf("analysis: reference prompt %d: %w", i, err)
		}
		a.refs[i] = make([][]float32, L)
		for l, n := range names {
			a.refs[i][l] = slices.Clone(res.Cache[n].At(0, pos))
		}
	}
	a.mean = make([][]float32, L)
	for l := range a.mean {
		a.mean[l] = make([]float32, dm)
		for n := range a.mean[l] {
			var s float64
			for _, r := range a.refs {
				s += float64(r[l][n])
			}
			a.mean[l][n] = float32(s / float64(len(a.refs)))
		}
	}
	if a.method == AblateResample {
		a.draws = opts.Draws
		if a.draws <= 0 {
			a.draws = 5
		}
	}
	return a, nil
}

// edits returns, for each of the ablator's draws, the edits ablating set.
func (a *ablator) edits(set []NeuronRef) [][]edit {
	out := make([][]edit, a.draws)
	for d := range out {
		r := 0
		if a.method == AblateResample {
			r = a.rng.IntN(len(a.refs))
		}
		for _, n := range set {
			var v float32
			switch a.method {
			case AblateMean:
				v = a.mean[n.Layer][n.Neuron]
			case AblateResample:
				v = a.refs[r][n.Layer][n.Neuron]
			}
			out[d] = append(out[d], edit{name: blockHook(n.Layer, "mlp.hook_post"), pos: n.Pos, lo: n.Neuron, vals: []float32{v}})
		}
	}
	return out
}

func checkNeurons(m *gpt2.Model, tokens []int, refs []NeuronRef) error {
	for _, n := range refs {
		if n.Layer < 0 || n.Layer >= m.NLayer() || n.Neuron < 0 || n.Neuron >= m.DMLP() || n.Pos < 0 || n.Pos >= len(tokens) {
			return fmt.Errorf("analysis: neuron L%dN%d at position %d is outside the model (%d layers × %d neurons) or the %d-token prompt", n.Layer, n.Neuron, n.Pos, m.NLayer(), m.DMLP(), len(tokens))
		}
	}
	return nil
}

// ablationSets measures the logit difference at the last position with each
// set of neurons ablated (averaged over resample draws).
func ablationSets(ctx context.Context, m *gpt2.Model, a *ablator, tokens []int, target, contrast int, sets [][]NeuronRef) ([]float64, error) {
	var specs []rowSpec
	for _, set := range sets {
		for _, e := range a.edits(set) {
			specs = append(specs, rowSpec{edits: e})
		}
	}
	lds := make([]float64, len(sets))
	br := &batchRunner{m: m, tokens: tokens, logits: gpt2.LogitsLast}
	err := br.run(ctx, specs, func(i int, res *gpt2.Result, row int) error {
		l := res.Logits.At(row, 0)
		lds[i/a.draws] += (float64(l[target]) - float64(l[contrast])) / float64(a.draws)
		return nil
	})
	return lds, err
}

func logitDiffOf(ctx context.Context, m *gpt2.Model, tokens []int, target, contrast int) (float64, error) {
	res, err := m.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Logits: gpt2.LogitsLast})
	if err != nil {
		return 0, err
	}
	l := res.Logits.At(0, 0)
	return float64(l[target]) - float64(l[contrast]), nil
}

// AblationEffects is the exact effect of ablating each neuron alone.
type AblationEffects struct {
	Method         AblationMethod `json:"method"`
	CleanLogitDiff float64        `json:"clean_logit_diff"`
	// Effects are LD_clean − LD_ablated (positive: the neuron supports the
	// target over the contrast), largest first.
	Effects []NeuronScore `json:"effects"`
}

// NeuronAblationEffects ablates each neuron alone (one batch row per neuron)
// and measures how much logit(target) − logit(contrast) at the last position
// drops. This is exact, and costs a forward pass per neuron.
func NeuronAblationEffects(ctx context.Context, m *gpt2.Model, tokens []int, target, contrast int, neurons []NeuronRef, opts AblationOptions) (*AblationEffects, error) {
	if err := checkAblationArgs(m, tokens, target, contrast, neurons); err != nil {
		return nil, err
	}
	a, err := newAblator(ctx, m, opts)
	if err != nil {
		return nil, err
	}
	clean, err := logitDiffOf(ctx, m, tokens, target, contrast)
	if err != nil {
		return nil, fmt.Errorf("analysis: neuron ablation: %w", err)
	}
	sets := make([][]NeuronRef, len(neurons))
	for i, n := range neurons {
		sets[i] = []NeuronRef{n}
	}
	lds, err := ablationSets(ctx, m, a, tokens, target, contrast, sets)
	if err != nil {
		return nil, fmt.Errorf("analysis: neuron ablation: %w", err)
	}
	out := &AblationEffects{Method: a.method, CleanLogitDiff: clean}
	for i, n := range neurons {
		out.Effects = append(out.Effects, NeuronScore{Layer: n.Layer, Neuron: n.Neuron, Pos: n.Pos, Value: clean - lds[i]})
	}
	slices.SortStableFunc(out.Effects, func(x, y NeuronScore) int { return cmp.Compare(y.Value, x.Value) })
	return out, nil
}

func checkAblationArgs(m *gpt2.Model, tokens []int, target, contrast int, neurons []NeuronRef) error {
	if err := checkTokens(m, tokens); err != nil {
		return err
	}
	if err := checkToken(m, "target", target); err != nil {
		return err
	}
	if err := checkToken(m, "contrast", contrast); err != nil {
		return err
	}
	if len(neurons) == 0 {
		return fmt.Errorf("analysis: no neurons to ablate")
	}
	return checkNeurons(m, tokens, neurons)
}

// AblationSetOptions control MinimalAblationSet.
type AblationSetOptions struct {
	AblationOptions
	// Fraction of the clean logit difference the set's ablation must remove;
	// 0 means 0.5.
	Fraction float64
	// Pool is how many candidates (the largest single-neuron effects) the
	// greedy search chooses from; 0 means 64.
	Pool int
	// MaxSize stops the search; 0 means Pool.
	MaxSize int
}

// AblationSet is the result of MinimalAblationSet.
type AblationSet struct {
	Method         AblationMethod `json:"method"`
	CleanLogitDiff float64        `json:"clean_logit_diff"`
	Goal           float64        `json:"goal"` // the logit difference to get at or below
	// Neurons in the order the greedy search added them, with LogitDiffs[i]
	// the logit difference with Neurons[:i+1] ablated.
	Neurons    []NeuronRef `json:"neurons"`
	LogitDiffs []float64   `json:"logit_diffs"`
	Reached    bool        `json:"reached"`
	// Pool lists the candidates' single-neuron effects, largest first.
	Pool []NeuronScore `json:"pool"`
}

// MinimalAblationSet searches for a small set of neurons whose joint
// ablation removes Fraction of logit(target) − logit(contrast): it measures
// every candidate's single-neuron ablation effect, keeps the Pool largest,
// then greedily adds, at each step, the pool neuron whose addition lowers
// the logit difference most (every step one batched pass), until the goal
// is met. Greedy search gives an upper bound on the smallest set, not a
// proof of minimality.
func MinimalAblationSet(ctx context.Context, m *gpt2.Model, tokens []int, target, contrast int, candidates []NeuronRef, opts AblationSetOptions) (*AblationSet, error) {
	eff, err := NeuronAblationEffects(ctx, m, tokens, target, contrast, candidates, opts.AblationOptions)
	if err != nil {
		return nil, err
	}
	if !(eff.CleanLogitDiff > 0) {
		return nil, fmt.Errorf("analysis: the clean logit difference is %.4g; removing a fraction of it needs a positive one", eff.CleanLogitDiff)
	}
	frac := opts.Fraction
	if frac == 0 {
		frac = 0.5
	}
	if frac < 0 || frac > 1 {
		return nil, fmt.Errorf("analysis: ablation fraction %v outside (0, 1]", frac)
	}
	poolSize := opts.Pool
	if poolSize <= 0 {
		poolSize = 64
	}
	maxSize := opts.MaxSize
	if maxSize <= 0 {
		maxSize = poolSize
	}
	out := &AblationSet{Method: eff.Method, CleanLogitDiff: eff.CleanLogitDiff, Goal: eff.CleanLogitDiff * (1 - frac)}
	out.Pool = eff.Effects[:min(poolSize, len(eff.Effects))]
	a, err := newAblator(ctx, m, opts.AblationOptions)
	if err != nil {
		return nil, err
	}
	remaining := make([]NeuronRef, len(out.Pool))
	for i, s := range out.Pool {
		remaining[i] = NeuronRef{s.Layer, s.Neuron, s.Pos}
	}
	for len(out.Neurons) < maxSize && len(remaining) > 0 {
		sets := make([][]NeuronRef, len(remaining))
		for i, c := range remaining {
			sets[i] = append(slices.Clone(out.Neurons), c)
		}
		lds, err := ablationSets(ctx, m, a, tokens, target, contrast, sets)
		if err != nil {
			return nil, fmt.Errorf("analysis: minimal ablation set: %w", err)
		}
		best := 0
		for i, v := range lds {
			if v < lds[best] {
				best = i
			}
		}
		out.Neurons = append(out.Neurons, remaining[best])
		out.LogitDiffs = append(out.LogitDiffs, lds[best])
		remaining = slices.Delete(remaining, best, best+1)
		if lds[best] <= out.Goal {
			out.Reached = true
			break
		}
	}
	return out, nil
}
