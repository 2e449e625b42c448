package analysis

import (
	"context"
	"math"
	"testing"

	"github.com/factlens/factlens/gpt2"
)

// TestAttributionFindsPlantedNeuron: on the toy model the AND neuron's path
// to the answer (its output dim, copied by the mover head whose attention
// does not read that dim, then unembedded) is linear up to LayerNorm
// scales, so attribution patching must agree with exact patching.
func TestAttributionFindsPlantedNeuron(t *testing.T) {
	ctx := context.Background()
	m := toyModel(t, gpt2.Processing{})
	clean := []int{toyT, toyA, toyX, toyP}
	corrupted := []int{toyT, toyC, toyX, toyP}
	attr, err := NeuronAttribution(ctx, m, clean, corrupted, toyQ, toyR, AttributionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	exact, err := NeuronPatchEffects(ctx, m, clean, corrupted, toyQ, toyR, AllNeurons(m, 0, 1, 2, 3))
	if err != nil {
		t.Fatal(err)
	}
	want := NeuronRef{0, toyAND, 2}
	if a := attr.Scores[0]; (NeuronRef{a.Layer, a.Neuron, a.Pos}) != want {
		t.Errorf("top attribution %+v, want %+v", a, want)
	}
	if e := exact[0]; (NeuronRef{e.Layer, e.Neuron, e.Pos}) != want || e.Value < 0.8*(attr.CleanLogitDiff-attr.CorruptedLogitDiff) {
		t.Errorf("top exact patch %+v (clean %.3f, corrupted %.3f)", e, attr.CleanLogitDiff, attr.CorruptedLogitDiff)
	}
	if a, e := attr.Scores[0].Value, exact[0].Value; math.Abs(a-e) > 0.15*math.Abs(e) {
		t.Errorf("AND neuron: attribution %.4f, exact %.4f", a, e)
	}
	if len(attr.Scores) != 2*8*4 {
		t.Errorf("%d scores, want every neuron at every position (64)", len(attr.Scores))
	}
}

// TestAttributionMatchesExactNearLinear compares attribution with exact
// patching on a random model for last-layer neurons at the last position:
// only ln_final lies between them and the logits, and clean and corrupted
// differ in one early token, so the first-order estimate must be close.
func TestAttributionMatchesExactNearLinear(t *testing.T) {
	ctx := context.Background()
	m := smallModel(t, gpt2.TransformerLensProcessing())
	clean := []int{5, 17, 42, 8, 63, 11}
	corrupted := []int{5, 17, 90, 8, 63, 11}
	last := m.NLayer() - 1
	attr, err := NeuronAttribution(ctx, m, clean, corrupted, 30, 71, AttributionOptions{Layers: []int{last}, Positions: []int{5}})
	if err != nil {
		t.Fatal(err)
	}
	var neurons []NeuronRef
	for n := 0; n < m.DMLP(); n++ {
		neurons = append(neurons, NeuronRef{last, n, 5})
	}
	exact, err := NeuronPatchEffects(ctx, m, clean, corrupted, 30, 71, neurons)
	if err != nil {
		t.Fatal(err)
	}
	byNeuron := map[int]float64{}
	for _, e := range exact {
		byNeuron[e.Neuron] = e.Value
	}
	var maxAbs, sumErr float64
	for _, a := range attr.Scores {
		maxAbs = max(maxAbs, math.Abs(byNeuron[a.Neuron]))
		sumErr = max(sumErr, math.Abs(a.Value-byNeuron[a.Neuron]))
	}
	if maxAbs < 1e-3 {
		t.Fatalf("exact effects are all below %.2g: nothing to compare", maxAbs)
	}
	if sumErr > 0.1*maxAbs {
		t.Errorf("attribution differs from exact patching by up to %.4g (largest effect %.4g)", sumErr, maxAbs)
	}
	// The estimate is the directional derivative: patching only a fraction
	// α of the way from corrupted to clean changes the logit difference by
	// α·attribution + O(α²).
	const alpha = 1e-2
	cleanRes, err := m.Run(ctx, [][]int{clean}, gpt2.RunOptions{Cache: gpt2.HookName(blockHook(last, "mlp.hook_post")), Logits: gpt2.LogitsNone})
	if err != nil {
		t.Fatal(err)
	}
	ld := func(hooks ...gpt2.Hook) float64 {
		res, err := m.Run(ctx, [][]int{corrupted}, gpt2.RunOptions{Hooks: hooks, Logits: gpt2.LogitsLast})
		if err != nil {
			t.Fatal(err)
		}
		l := res.Logits.At(0, 0)
		return float64(l[30]) - float64(l[71])
	}
	base := ld()
	for _, a := range attr.Scores[:3] {
		c := cleanRes.Cache[blockHook(last, "mlp.hook_post")].At(0, 5)[a.Neuron]
		got := (ld(gpt2.Hook{Match: gpt2.HookName(blockHook(last, "mlp.hook_post")), Fn: func(x *gpt2.Activation) error {
			v := &x.At(0, 5)[a.Neuron]
			*v += alpha * (c - *v)
			return nil
		}}) - base) / alpha
		if math.Abs(got-a.Value) > 0.02*math.Abs(a.Value) {
			t.Errorf("L%dN%d: (LD(corrupted + α·Δ) − LD)/α = %.5f, attribution %.5f", last, a.Neuron, got, a.Value)
		}
	}
}
