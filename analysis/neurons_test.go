package analysis

import (
	"context"
	"math"
	"testing"

	"github.com/factlens/factlens/gpt2"
)

func TestNeuronAblationFindsPlantedNeuron(t *testing.T) {
	ctx := context.Background()
	m := toyModel(t, gpt2.Processing{})
	tokens := []int{toyT, toyA, toyX, toyP}
	candidates := AllNeurons(m, 0, 1, 2, 3)
	ref := [][]int{{toyT, toyC, toyZ, toyP}, {toyT, toyB, toyX, toyP}, {toyT, toyC, toyY, toyP}, {toyT, toyA, toyZ, toyP}}
	refPos := []int{2, 2, 2, 2}
	for _, opts := range []AblationOptions{
		{},
		{Method: AblateMean, Reference: ref, RefPositions: refPos},
		{Method: AblateResample, Reference: ref, RefPositions: refPos, Draws: 3, Seed: 5},
	} {
		name := string(opts.Method)
		if name == "" {
			name = "zero"
		}
		t.Run(name, func(t *testing.T) {
			eff, err := NeuronAblationEffects(ctx, m, tokens, toyQ, toyR, candidates, opts)
			if err != nil {
				t.Fatal(err)
			}
			top := eff.Effects[0]
			if top.Layer != 0 || top.Neuron != toyAND || top.Pos != 2 || top.Value < 0.8*eff.CleanLogitDiff {
				t.Errorf("top effect %+v of clean %.3f, want L0N%d at position 2", top, eff.CleanLogitDiff, toyAND)
			}
			for _, e := range eff.Effects[1:] {
				if math.Abs(e.Value) > 0.1*eff.CleanLogitDiff {
					t.Errorf("other neuron %+v has a large effect", e)
				}
			}
			set, err := MinimalAblationSet(ctx, m, tokens, toyQ, toyR, candidates, AblationSetOptions{AblationOptions: opts, Pool: 8})
			if err != nil {
				t.Fatal(err)
			}
			if !set.Reached || len(set.Neurons) != 1 || set.Neurons[0] != (NeuronRef{0, toyAND, 2}) {
				t.Errorf("minimal set %+v reached %v (LDs %v, goal %.3f)", set.Neurons, set.Reached, set.LogitDiffs, set.Goal)
			}
		})
	}
}

// TestMinimalAblationSetUnreachable: when no candidate can move the logit
// difference, the search stops at MaxSize and says the goal was not reached.
func TestMinimalAblationSetUnreachable(t *testing.T) {
	ctx := context.Background()
	m := toyModel(t, gpt2.Processing{})
	tokens := []int{toyT, toyA, toyX, toyP}
	// " q" against token 10 (" u", never written): ablating neurons at
	// position 0 only cannot touch the answer.
	set, err := MinimalAblationSet(ctx, m, tokens, toyQ, 10, AllNeurons(m, 0), AblationSetOptions{Pool: 4, MaxSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if set.Reached || len(set.Neurons) != 3 {
		t.Errorf("reached %v with %d neurons; position-0 neurons cannot remove the fact", set.Reached, len(set.Neurons))
	}
	if _, err := MinimalAblationSet(ctx, m, []int{toyT, toyC, toyZ, toyP}, toyQ, toyR, AllNeurons(m, 2), AblationSetOptions{}); err == nil {
		t.Error("non-positive clean logit difference: no error")
	}
	if _, err := NeuronAblationEffects(ctx, m, tokens, toyQ, toyR, []NeuronRef{{0, 8, 0}}, AblationOptions{}); err == nil {
		t.Error("neuron out of range: no error")
	}
	if _, err := NeuronAblationEffects(ctx, m, tokens, toyQ, toyR, []NeuronRef{{0, 1, 2}}, AblationOptions{Method: AblateMean}); err == nil {
		t.Error("mean ablation without references: no error")
	}
}

// TestAblationMatchesDirect checks a mean ablation against a single run with
// a hand-written hook.
func TestAblationMatchesDirect(t *testing.T) {
	ctx := context.Background()
	m := smallModel(t, gpt2.Processing{})
	tokens := []int{5, 17, 42, 8, 63, 11}
	ref := [][]int{{1, 2, 3}, {4, 5, 6, 7}, {9, 9}}
	refPos := []int{2, 1, 0}
	n := NeuronRef{Layer: 1, Neuron: 7, Pos: 3}
	eff, err := NeuronAblationEffects(ctx, m, tokens, 30, 71, []NeuronRef{n}, AblationOptions{Method: AblateMean, Reference: ref, RefPositions: refPos})
	if err != nil {
		t.Fatal(err)
	}
	var meanAct float64
	for i, r := range ref {
		res, err := m.Run(ctx, [][]int{r}, gpt2.RunOptions{Cache: gpt2.HookName("blocks.1.mlp.hook_post"), Logits: gpt2.LogitsNone})
		if err != nil {
			t.Fatal(err)
		}
		meanAct += float64(res.Cache["blocks.1.mlp.hook_post"].At(0, refPos[i])[7]) / 3
	}
	ld := func(hooks ...gpt2.Hook) float64 {
		res, err := m.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Hooks: hooks, Logits: gpt2.LogitsLast})
		if err != nil {
			t.Fatal(err)
		}
		l := res.Logits.At(0, 0)
		return float64(l[30]) - float64(l[71])
	}
	want := ld() - ld(gpt2.Hook{Match: gpt2.HookName("blocks.1.mlp.hook_post"), Fn: func(a *gpt2.Activation) error {
		a.At(0, 3)[7] = float32(meanAct)
		return nil
	}})
	if got := eff.Effects[0].Value; !closeRel(got, want, 1e-4) || math.Abs(want) < 1e-6 {
		t.Errorf("mean-ablation effect %.7f, direct %.7f", got, want)
	}
}
