package analysis

import (
	"context"
	"encoding/json"
	"math"
	"testing"

	"github.com/factlens/factlens/gpt2"
)

func TestActivationPatchingFindsPlantedPath(t *testing.T) {
	ctx := context.Background()
	m := toyModel(t, gpt2.Processing{})
	clean := []int{toyT, toyA, toyX, toyP}     // → " q"
	corrupted := []int{toyT, toyC, toyX, toyP} // another first name: no fact
	r, err := ActivationPatching(ctx, m, clean, corrupted, toyQ, toyR, PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.CleanLogitDiff < 7 || math.Abs(r.CorruptedLogitDiff) > 0.5 || math.Abs(r.CleanMetric-1) > 1e-9 || math.Abs(r.CorruptedMetric) > 1e-9 {
		t.Fatalf("clean LD %.3f corrupted %.3f, metrics %.3f %.3f", r.CleanLogitDiff, r.CorruptedLogitDiff, r.CleanMetric, r.CorruptedMetric)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("result does not marshal: %v", err)
	}
	// The path: first name (pos 1) → L0H0 at the last name (pos 2) → AND
	// neuron in MLP0 at pos 2 → L1H0 at " p" (pos 3).
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"resid_pre L0 pos 1 (the changed token)", r.ResidPre[0][1], 1},
		{"resid_pre L0 pos 2 (same token)", r.ResidPre[0][2], 0},
		{"resid_pre L1 pos 2 (carries the fact)", r.ResidPre[1][2], 1},
		{"resid_pre L1 pos 1 (no longer read)", r.ResidPre[1][1], 0},
		{"attn_out L0 pos 2 (previous-name head)", r.AttnOut[0][2], 1},
		{"mlp_out L0 pos 2 (AND neuron)", r.MLPOut[0][2], 1},
		{"mlp_out L0 pos 1", r.MLPOut[0][1], 0},
		{"attn_out L1 pos 3 (mover)", r.AttnOut[1][3], 1},
		{"L0H0 at pos 2", r.HeadOutByPos[0][2][toyPrevTok], 1},
		{"L0H1 at pos 2 (empty head)", r.HeadOutByPos[0][2][1], 0},
		{"L1H0 at pos 3", r.HeadOutByPos[1][3][toyMover], 1},
		{"L0H0 all positions", r.HeadOutAllPos[0][toyPrevTok], 1},
		{"L1H1 all positions", r.HeadOutAllPos[1][1], 0},
	} {
		if math.Abs(c.got-c.want) > 0.05 {
			t.Errorf("%s: normalized logit diff %.4f, want ≈ %v", c.name, c.got, c.want)
		}
	}
}

// TestActivationPatchingMatchesDirect compares cells with single runs that
// use gpt2's own PatchFrom hook, on a random model.
func TestActivationPatchingMatchesDirect(t *testing.T) {
	ctx := context.Background()
	m := smallModel(t, gpt2.TransformerLensProcessing())
	clean := []int{5, 17, 42, 8, 63, 11}
	corrupted := []int{5, 17, 90, 8, 63, 11}
	target, contrast := 30, 71
	r, err := ActivationPatching(ctx, m, clean, corrupted, target, contrast, PatchOptions{Metric: LogitDiff(target, contrast)})
	if err != nil {
		t.Fatal(err)
	}
	cleanRes, err := m.Run(ctx, [][]int{clean}, gpt2.RunOptions{Cache: gpt2.HookGlob("*")})
	if err != nil {
		t.Fatal(err)
	}
	dh := m.DHead()
	run := func(hooks ...gpt2.Hook) float64 {
		res, err := m.Run(ctx, [][]int{corrupted}, gpt2.RunOptions{Hooks: hooks, Logits: gpt2.LogitsLast})
		if err != nil {
			t.Fatal(err)
		}
		l := res.Logits.At(0, 0)
		return float64(l[target]) - float64(l[contrast])
	}
	headPatch := func(layer, head int, positions ...int) gpt2.Hook {
		name := blockHook(layer, "attn.hook_z")
		src := cleanRes.Cache[name]
		return gpt2.Hook{Match: gpt2.HookName(name), Fn: func(a *gpt2.Activation) error {
			for p := 0; p < a.Shape[1]; p++ {
				if len(positions) > 0 && p != positions[0] {
					continue
				}
				copy(a.At(0, p)[head*dh:(head+1)*dh], src.At(0, p)[head*dh:(head+1)*dh])
			}
			return nil
		}}
	}
	for _, c := range []struct {
		name string
		got  float64
		hook gpt2.Hook
	}{
		{"resid_pre 1,2", r.ResidPre[1][2], gpt2.PatchFrom(cleanRes.Cache, gpt2.HookName("blocks.1.hook_resid_pre"), 2)},
		{"resid_pre 2,5", r.ResidPre[2][5], gpt2.PatchFrom(cleanRes.Cache, gpt2.HookName("blocks.2.hook_resid_pre"), 5)},
		{"attn_out 0,4", r.AttnOut[0][4], gpt2.PatchFrom(cleanRes.Cache, gpt2.HookName("blocks.0.hook_attn_out"), 4)},
		{"mlp_out 1,2", r.MLPOut[1][2], gpt2.PatchFrom(cleanRes.Cache, gpt2.HookName("blocks.1.hook_mlp_out"), 2)},
		{"head 2.3 pos 5", r.HeadOutByPos[2][5][3], headPatch(2, 3, 5)},
		{"head 1.0 all", r.HeadOutAllPos[1][0], headPatch(1, 0)},
	} {
		if want := run(c.hook); !closeRel(c.got, want, 1e-5) {
			t.Errorf("%s: %.6f, direct %.6f", c.name, c.got, want)
		}
	}
	if _, err := ActivationPatching(ctx, m, clean, corrupted[:5], target, contrast, PatchOptions{}); err == nil {
		t.Error("different lengths: no error")
	}
	if _, err := ActivationPatching(ctx, m, clean, clean, target, contrast, PatchOptions{}); err == nil {
		t.Error("clean = corrupted with the normalized metric: no error")
	}
}
