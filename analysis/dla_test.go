package analysis

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/factlens/factlens/gpt2"
)

func closeRel(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*max(1, math.Abs(want))
}

// checkDLASums checks that the parts sum to the model's own logit
// difference and that the layer totals are their heads/neurons plus bias.
func checkDLASums(t *testing.T, r *DLAResult) {
	t.Helper()
	if !closeRel(r.Sum, r.LogitDiff, 1e-4) {
		t.Errorf("DLA parts sum to %.6f, the model's logit difference is %.6f", r.Sum, r.LogitDiff)
	}
	all := r.Embed + r.PosEmbed + r.Constant
	for l := range r.Attn {
		heads := r.AttnBias[l]
		for _, h := range r.Heads[l] {
			heads += h
		}
		if !closeRel(heads, r.Attn[l], 1e-4) {
			t.Errorf("layer %d: heads + b_O = %.6f, hook_attn_out gives %.6f", l, heads, r.Attn[l])
		}
		neurons := r.MLPBias[l]
		for _, n := range r.Neurons[l] {
			neurons += n
		}
		if !closeRel(neurons, r.MLP[l], 1e-4) {
			t.Errorf("layer %d: neurons + b_out = %.6f, hook_mlp_out gives %.6f", l, neurons, r.MLP[l])
		}
		all += r.Attn[l] + r.MLP[l]
	}
	if !closeRel(all, r.LogitDiff, 1e-4) {
		t.Errorf("embeddings + layer totals = %.6f, logit difference %.6f", all, r.LogitDiff)
	}
}

func TestDLAFindsPlantedComponents(t *testing.T) {
	ctx := context.Background()
	for _, proc := range []gpt2.Processing{{}, gpt2.TransformerLensProcessing()} {
		t.Run(proc.String(), func(t *testing.T) {
			m := toyModel(t, proc)
			// At " p" the answer is written by the mover head L1H0.
			r, err := DirectLogitAttribution(ctx, m, []int{toyT, toyA, toyX, toyP}, toyQ, toyR, DLAOptions{AllNeurons: true})
			if err != nil {
				t.Fatal(err)
			}
			checkDLASums(t, r)
			if r.LogitDiff < 7 {
				t.Fatalf("planted fact has logit difference %.3f, want > 7", r.LogitDiff)
			}
			if got := r.Heads[1][toyMover]; got < 0.9*r.LogitDiff {
				t.Errorf("mover head L1H0 gets %.3f of %.3f", got, r.LogitDiff)
			}
			// At the last name itself the AND neuron writes the answer directly.
			r, err = DirectLogitAttribution(ctx, m, []int{toyT, toyA, toyX}, toyQ, toyR, DLAOptions{AllNeurons: true, TopNeurons: 3})
			if err != nil {
				t.Fatal(err)
			}
			checkDLASums(t, r)
			top := r.TopNeurons[0]
			if top.Layer != 0 || top.Neuron != toyAND || top.Pos != 2 || top.Value < 0.5*r.LogitDiff {
				t.Errorf("top neuron %+v, want L0N%d at position 2 with most of %.3f", top, toyAND, r.LogitDiff)
			}
			if d := r.Neurons[0][toyDetect]; math.Abs(d) > 1e-3 {
				t.Errorf("detector neuron (junk output) has attribution %.4g, want 0", d)
			}
		})
	}
}

// TestDLAMatchesFrozenLNRemoval checks each part against the model itself:
// subtracting a component's vector from the final residual while freezing
// ln_final's scale (both with hooks) must lower the logit difference by
// exactly that component's attribution. This runs the model's own
// LayerNorm, weight processing and unembedding, not the algebra of DLA.
func TestDLAMatchesFrozenLNRemoval(t *testing.T) {
	ctx := context.Background()
	tokens := []int{5, 17, 42, 8, 63, 11}
	target, contrast := 30, 71
	for _, proc := range []gpt2.Processing{{}, {FoldLN: true}, gpt2.TransformerLensProcessing()} {
		t.Run(proc.String(), func(t *testing.T) {
			m := smallModel(t, proc)
			r, err := DirectLogitAttribution(ctx, m, tokens, target, contrast, DLAOptions{AllNeurons: true})
			if err != nil {
				t.Fatal(err)
			}
			checkDLASums(t, r)
			L, P, d, dh := m.NLayer(), len(tokens), m.DModel(), m.DHead()
			base, err := m.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Cache: gpt2.HookGlob("*"), Logits: gpt2.LogitsLast})
			if err != nil {
				t.Fatal(err)
			}
			scale := slices.Clone(base.Cache[hookLNScale].Data)
			wo, _ := m.Weight("h.1.attn.c_proj.weight")
			wout, _ := m.Weight("h.2.mlp.c_proj.weight")
			headVec := func(l, h int) []float32 {
				z := base.Cache[blockHook(l, "attn.hook_z")].At(0, P-1)[h*dh : (h+1)*dh]
				v := make([]float32, d)
				for i, zi := range z {
					for j := range v {
						v[j] += zi * wo.Data[(h*dh+i)*d+j]
					}
				}
				return v
			}
			neuronVec := func(l, n int) []float32 {
				a := base.Cache[blockHook(l, "mlp.hook_post")].At(0, P-1)[n]
				v := make([]float32, d)
				for j := range v {
					v[j] = a * wout.Data[n*d+j]
				}
				return v
			}
			for _, c := range []struct {
				name string
				vec  []float32
				want float64
			}{
				{"embed", base.Cache[hookEmbed].At(0, P-1), r.Embed},
				{"pos_embed", base.Cache[hookPosEmbed].At(0, P-1), r.PosEmbed},
				{"L1H2", headVec(1, 2), r.Heads[1][2]},
				{"L2N5", neuronVec(2, 5), r.Neurons[2][5]},
				{"mlp0", base.Cache[blockHook(0, "hook_mlp_out")].At(0, P-1), r.MLP[0]},
				{"attn2", base.Cache[blockHook(2, "hook_attn_out")].At(0, P-1), r.Attn[2]},
			} {
				res, err := m.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Logits: gpt2.LogitsLast, Hooks: []gpt2.Hook{
					{Match: gpt2.HookName(blockHook(L-1, "hook_resid_post")), Fn: func(a *gpt2.Activation) error {
						x := a.At(0, P-1)
						for j := range x {
							x[j] -= c.vec[j]
						}
						return nil
					}},
					{Match: gpt2.HookName(hookLNScale), Fn: func(a *gpt2.Activation) error { copy(a.Data, scale); return nil }},
				}})
				if err != nil {
					t.Fatal(err)
				}
				l := res.Logits.At(0, 0)
				got := r.LogitDiff - (float64(l[target]) - float64(l[contrast]))
				if !closeRel(got, c.want, 1e-4) {
					t.Errorf("%s: removing it under frozen LN lowers the logit difference by %.6f, DLA says %.6f", c.name, got, c.want)
				}
			}
		})
	}
}

// TestDLAProcessingInvariance: weight processing moves numbers between
// hook points but not what each component contributes to the logits.
func TestDLAProcessingInvariance(t *testing.T) {
	ctx := context.Background()
	tokens := []int{3, 9, 27, 81, 50}
	raw, err := DirectLogitAttribution(ctx, smallModel(t, gpt2.Processing{}), tokens, 12, 44, DLAOptions{AllNeurons: true})
	if err != nil {
		t.Fatal(err)
	}
	proc, err := DirectLogitAttribution(ctx, smallModel(t, gpt2.Processing{FoldLN: true, CenterWritingWeights: true, CenterUnembed: true}), tokens, 12, 44, DLAOptions{AllNeurons: true})
	if err != nil {
		t.Fatal(err)
	}
	near := func(name string, a, b float64) {
		if !closeRel(a, b, 2e-4) {
			t.Errorf("%s: raw %.6f, processed %.6f", name, a, b)
		}
	}
	near("logit diff", raw.LogitDiff, proc.LogitDiff)
	near("embed", raw.Embed, proc.Embed)
	near("pos_embed", raw.PosEmbed, proc.PosEmbed)
	near("constant", raw.Constant, proc.Constant)
	for l := range raw.Heads {
		for h := range raw.Heads[l] {
			near(fmt.Sprintf("L%dH%d", l, h), raw.Heads[l][h], proc.Heads[l][h])
		}
		for n := range raw.Neurons[l] {
			near(fmt.Sprintf("L%dN%d", l, n), raw.Neurons[l][n], proc.Neurons[l][n])
		}
	}
}

// TestLogitLensRows checks every row against the model run with all later
// blocks' outputs zero-ablated (so the final residual is that layer's
// resid_pre), and the final row against the model's own logits.
func TestLogitLensRows(t *testing.T) {
	ctx := context.Background()
	tokens := []int{3, 9, 27, 81, 50}
	for _, proc := range []gpt2.Processing{{}, gpt2.TransformerLensProcessing()} {
		t.Run(proc.String(), func(t *testing.T) {
			m := smallModel(t, proc)
			lens, err := LogitLens(ctx, m, tokens, 12, 44, LensOptions{TopK: 5})
			if err != nil {
				t.Fatal(err)
			}
			L := m.NLayer()
			if len(lens.Rows) != L+1 || lens.Rows[0].Label != "0_pre" || lens.Rows[L].Label != "final_post" {
				t.Fatalf("rows %d, labels %q … %q", len(lens.Rows), lens.Rows[0].Label, lens.Rows[len(lens.Rows)-1].Label)
			}
			for l := 0; l <= L; l++ {
				var hooks []gpt2.Hook
				for k := l; k < L; k++ {
					hooks = append(hooks, gpt2.ZeroAblate(gpt2.HookName(blockHook(k, "hook_attn_out"))), gpt2.ZeroAblate(gpt2.HookName(blockHook(k, "hook_mlp_out"))))
				}
				res, err := m.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Logits: gpt2.LogitsLast, Hooks: hooks})
				if err != nil {
					t.Fatal(err)
				}
				row := res.Logits.At(0, 0)
				lr := lens.Rows[l]
				if top := argmax(row); lr.Top[0].ID != top {
					t.Errorf("row %s: top token %d, model %d", lr.Label, lr.Top[0].ID, top)
				}
				if !closeRel(lr.TargetProb, prob(row, 12), 1e-4) || !closeRel(lr.LogitDiff, float64(row[12]-row[44]), 1e-4) || lr.TargetRank != rankOf(row, 12) {
					t.Errorf("row %s: target prob %.6f rank %d ld %.6f; model %.6f %d %.6f", lr.Label, lr.TargetProb, lr.TargetRank, lr.LogitDiff, prob(row, 12), rankOf(row, 12), row[12]-row[44])
				}
			}
		})
	}
}

func TestDLARejectsBadInput(t *testing.T) {
	m := toyModel(t, gpt2.Processing{})
	ctx := context.Background()
	for _, tc := range []struct {
		name             string
		tokens           []int
		target, contrast int
	}{
		{"empty", nil, toyQ, toyR},
		{"token out of range", []int{1, 99}, toyQ, toyR},
		{"target out of range", []int{1}, 25, toyR},
		{"contrast out of range", []int{1}, toyQ, 30},
	} {
		if _, err := DirectLogitAttribution(ctx, m, tc.tokens, tc.target, tc.contrast, DLAOptions{}); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}
