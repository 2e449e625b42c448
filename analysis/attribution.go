package analysis

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/factlens/factlens/gpt2"
)

// AttributionOptions control NeuronAttribution.
type AttributionOptions struct {
	// Layers whose neurons are scored; nil means all.
	Layers []int
	// Positions scored; nil means all.
	Positions []int
	// TopK scores kept, by |value|; 0 means all.
	TopK int
}

// AttributionResult is attribution patching over MLP neurons.
type AttributionResult struct {
	Target             int     `json:"target"`
	Contrast           int     `json:"contrast"`
	CleanLogitDiff     float64 `json:"clean_logit_diff"`
	CorruptedLogitDiff float64 `json:"corrupted_logit_diff"`
	Processing         string  `json:"processing"`
	// Scores estimate, per neuron and position, how much patching the clean
	// activation into the corrupted run raises logit(target) −
	// logit(contrast); largest |value| first. Divide by CleanLogitDiff −
	// CorruptedLogitDiff for TransformerLens' normalized metric.
	Scores []NeuronScore `json:"scores"`
}

// NeuronAttribution is attribution patching (Nanda; Syed, Rager & Conmy)
// over every neuron (blocks.L.mlp.hook_post) of the chosen layers at the
// chosen positions: one clean forward pass, one corrupted forward and
// backward pass, then grad · (clean − corrupted) per neuron, the first-order
// estimate of the denoising patch NeuronPatchEffects measures exactly.
func NeuronAttribution(ctx context.Context, m *gpt2.Model, clean, corrupted []int, target, contrast int, opts AttributionOptions) (*AttributionResult, error) {
	if err := checkPair(m, clean, corrupted, target, contrast); err != nil {
		return nil, err
	}
	layers := opts.Layers
	if layers == nil {
		for l := 0; l < m.NLayer(); l++ {
			layers = append(layers, l)
		}
	}
	positions := opts.Positions
	if positions == nil {
		for p := range clean {
			positions = append(positions, p)
		}
	}
	var names []string
	for _, l := range layers {
		if l < 0 || l >= m.NLayer() {
			return nil, fmt.Errorf("analysis: layer %d outside the model's %d", l, m.NLayer())
		}
		names = append(names, blockHook(l, "mlp.hook_post"))
	}
	match := matchNames(names...)
	cleanRes, err := m.Run(ctx, [][]int{clean}, gpt2.RunOptions{Cache: match, Logits: gpt2.LogitsLast})
	if err != nil {
		return nil, fmt.Errorf("analysis: attribution patching: clean run: %w", err)
	}
	g, err := m.Gradients(ctx, [][]int{corrupted}, gpt2.GradOptions{
		RunOptions: gpt2.RunOptions{Cache: match, Logits: gpt2.LogitsLast},
		Want:       match,
	}, gpt2.LogitDiffObjective(0, -1, target, contrast))
	if err != nil {
		return nil, fmt.Errorf("analysis: attribution patching: corrupted run: %w", err)
	}
	l := cleanRes.Logits.At(0, 0)
	out := &AttributionResult{Target: target, Contrast: contrast, Processing: m.Processing.String(),
		CleanLogitDiff: float64(l[target]) - float64(l[contrast]), CorruptedLogitDiff: g.Value}
	if out.Scores, err = AttributionPatching(cleanRes.Cache, g.Cache, g.Grads, layers, positions); err != nil {
		return nil, err
	}
	if opts.TopK > 0 && opts.TopK < len(out.Scores) {
		out.Scores = out.Scores[:opts.TopK]
	}
	return out, nil
}

func checkPair(m *gpt2.Model, clean, corrupted []int, target, contrast int) error {
	if err := checkTokens(m, clean); err != nil {
		return err
	}
	if err := checkTokens(m, corrupted); err != nil {
		return err
	}
	if len(clean) != len(corrupted) {
		return fmt.Errorf("analysis: clean and corrupted prompts must have equal length, got %d and %d tokens", len(clean), len(corrupted))
	}
	if err := checkToken(m, "target", target); err != nil {
		return err
	}
	return checkToken(m, "contrast", contrast)
}

// NeuronPatchEffects patches each neuron's clean activation into the
// corrupted run alone (one batch row per neuron) and returns the exact rise
// of logit(target) − logit(contrast) at the last position, largest first.
func NeuronPatchEffects(ctx context.Context, m *gpt2.Model, clean, corrupted []int, target, contrast int, neurons []NeuronRef) ([]NeuronScore, error) {
	if err := checkPair(m, clean, corrupted, target, contrast); err != nil {
		return nil, err
	}
	if err := checkNeurons(m, clean, neurons); err != nil {
		return nil, err
	}
	cleanRes, err := m.Run(ctx, [][]int{clean}, gpt2.RunOptions{Cache: gpt2.HookGlob("blocks.*.mlp.hook_post"), Logits: gpt2.LogitsNone})
	if err != nil {
		return nil, fmt.Errorf("analysis: neuron patching: clean run: %w", err)
	}
	base, err := logitDiffOf(ctx, m, corrupted, target, contrast)
	if err != nil {
		return nil, fmt.Errorf("analysis: neuron patching: corrupted run: %w", err)
	}
	specs := make([]rowSpec, len(neurons))
	for i, n := range neurons {
		name := blockHook(n.Layer, "mlp.hook_post")
		v := cleanRes.Cache[name].At(0, n.Pos)[n.Neuron]
		specs[i] = rowSpec{edits: []edit{{name: name, pos: n.Pos, lo: n.Neuron, vals: []float32{v}}}}
	}
	out := make([]NeuronScore, len(neurons))
	br := &batchRunner{m: m, tokens: corrupted, logits: gpt2.LogitsLast}
	err = br.run(ctx, specs, func(i int, res *gpt2.Result, row int) error {
		l := res.Logits.At(row, 0)
		n := neurons[i]
		out[i] = NeuronScore{Layer: n.Layer, Neuron: n.Neuron, Pos: n.Pos, Value: float64(l[target]) - float64(l[contrast]) - base}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("analysis: neuron patching: %w", err)
	}
	slices.SortStableFunc(out, func(x, y NeuronScore) int { return cmp.Compare(y.Value, x.Value) })
	return out, nil
}

// AttributionPatching is attribution patching over MLP neurons: the
// first-order estimate of patching each neuron's clean activation into the
// corrupted run, grad · (clean − corrupted), where grad is the gradient of
// the metric with respect to blocks.L.mlp.hook_post on the corrupted run.
// All three maps hold batch-1 hook_post activations for the layers given
// (nil: every layer in clean); scores are listed for the given positions,
// largest |value| first.
func AttributionPatching(clean, corrupted, grads map[string]*gpt2.Activation, layers, positions []int) ([]NeuronScore, error) {
	if layers == nil {
		for l := 0; ; l++ {
			if _, ok := clean[blockHook(l, "mlp.hook_post")]; !ok {
				break
			}
			layers = append(layers, l)
		}
	}
	var out []NeuronScore
	for _, l := range layers {
		name := blockHook(l, "mlp.hook_post")
		c, k, g := clean[name], corrupted[name], grads[name]
		if c == nil || k == nil || g == nil {
			return nil, fmt.Errorf("analysis: attribution patching: %s missing from the clean, corrupted or gradient activations", name)
		}
		if !slices.Equal(c.Shape, k.Shape) || !slices.Equal(c.Shape, g.Shape) || len(c.Shape) != 3 || c.Shape[0] != 1 {
			return nil, fmt.Errorf("analysis: attribution patching: %s shapes %v, %v, %v; want equal [1, pos, d_mlp]", name, c.Shape, k.Shape, g.Shape)
		}
		for _, p := range positions {
			if p < 0 || p >= c.Shape[1] {
				return nil, fmt.Errorf("analysis: attribution patching: position %d outside %d positions", p, c.Shape[1])
			}
			cv, kv, gv := c.At(0, p), k.At(0, p), g.At(0, p)
			for n := range cv {
				out = append(out, NeuronScore{Layer: l, Neuron: n, Pos: p, Value: float64(gv[n]) * (float64(cv[n]) - float64(kv[n]))})
			}
		}
	}
	slices.SortStableFunc(out, func(x, y NeuronScore) int { return cmp.Compare(math.Abs(y.Value), math.Abs(x.Value)) })
	return out, nil
}
