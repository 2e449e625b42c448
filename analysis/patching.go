package analysis

import (
	"context"
	"fmt"

	"github.com/factlens/factlens/gpt2"
)

// PatchKind names one of TransformerLens' activation-patching sweeps.
type PatchKind string

// The sweeps of transformer_lens.patching this package runs.
const (
	PatchResidPre   PatchKind = "resid_pre"        // get_act_patch_resid_pre: [layer][pos]
	PatchAttnOut    PatchKind = "attn_out"         // get_act_patch_attn_out: [layer][pos]
	PatchMLPOut     PatchKind = "mlp_out"          // get_act_patch_mlp_out: [layer][pos]
	PatchHeadByPos  PatchKind = "head_out_by_pos"  // get_act_patch_attn_head_out_by_pos (hook_z): [layer][pos][head]
	PatchHeadAllPos PatchKind = "head_out_all_pos" // get_act_patch_attn_head_out_all_pos (hook_z): [layer][head]
)

// Metric turns the last-position logits of a run into a number. clean and
// corrupted are the unpatched runs' logit differences, for normalising.
type Metric struct {
	Name string
	Fn   func(logits []float32, clean, corrupted float64) float64
}

// LogitDiff is logit(target) − logit(contrast) at the last position.
func LogitDiff(target, contrast int) Metric {
	return Metric{Name: "logit_diff", Fn: func(l []float32, _, _ float64) float64 {
		return float64(l[target]) - float64(l[contrast])
	}}
}

// NormalizedLogitDiff is (LD − LD_corrupted)/(LD_clean − LD_corrupted): 0 for
// the corrupted run, 1 for the clean one — the metric of TransformerLens'
// activation patching demo.
func NormalizedLogitDiff(target, contrast int) Metric {
	return Metric{Name: "normalized_logit_diff", Fn: func(l []float32, clean, corrupted float64) float64 {
		return (float64(l[target]) - float64(l[contrast]) - corrupted) / (clean - corrupted)
	}}
}

// PatchOptions control ActivationPatching.
type PatchOptions struct {
	// Kinds to sweep; nil means resid_pre, attn_out, mlp_out, head_out_by_pos
	// and head_out_all_pos.
	Kinds []PatchKind
	// Metric; zero means NormalizedLogitDiff(target, contrast).
	Metric Metric
}

// PatchResult holds one number per patch: the metric of the corrupted run
// with that clean activation patched in. Layouts are TransformerLens'.
type PatchResult struct {
	Metric             string  `json:"metric"`
	Target             int     `json:"target"`
	Contrast           int     `json:"contrast"`
	CleanLogitDiff     float64 `json:"clean_logit_diff"`
	CorruptedLogitDiff float64 `json:"corrupted_logit_diff"`
	CleanMetric        float64 `json:"clean_metric"`
	CorruptedMetric    float64 `json:"corrupted_metric"`
	Processing         string  `json:"processing"`

	ResidPre      [][]float64   `json:"resid_pre,omitempty"`        // [layer][pos]
	AttnOut       [][]float64   `json:"attn_out,omitempty"`         // [layer][pos]
	MLPOut        [][]float64   `json:"mlp_out,omitempty"`          // [layer][pos]
	HeadOutByPos  [][][]float64 `json:"head_out_by_pos,omitempty"`  // [layer][pos][head]
	HeadOutAllPos [][]float64   `json:"head_out_all_pos,omitempty"` // [layer][head]
}

// ActivationPatching patches activations of a clean run into a run on the
// corrupted tokens (denoising, the direction of transformer_lens.patching),
// one activation at a time, and measures the metric. Clean and corrupted
// must have the same length.
func ActivationPatching(ctx context.Context, m *gpt2.Model, clean, corrupted []int, target, contrast int, opts PatchOptions) (*PatchResult, error) {
	if err := checkPair(m, clean, corrupted, target, contrast); err != nil {
		return nil, err
	}
	kinds := opts.Kinds
	if kinds == nil {
		kinds = []PatchKind{PatchResidPre, PatchAttnOut, PatchMLPOut, PatchHeadByPos, PatchHeadAllPos}
	}
	metric := opts.Metric
	if metric.Fn == nil {
		metric = NormalizedLogitDiff(target, contrast)
	}
	L, H, dh, P := m.NLayer(), m.NHead(), m.DHead(), len(clean)
	var names []string
	need := map[string]bool{}
	for _, k := range kinds {
		pt, err := k.point()
		if err != nil {
			return nil, err
		}
		if !need[pt] {
			need[pt] = true
			names = append(names, perLayer(L, pt)...)
		}
	}
	cleanRes, err := m.Run(ctx, [][]int{clean}, gpt2.RunOptions{Cache: matchNames(names...), Logits: gpt2.LogitsLast})
	if err != nil {
		return nil, fmt.Errorf("analysis: activation patching: clean run: %w", err)
	}
	corrRes, err := m.Run(ctx, [][]int{corrupted}, gpt2.RunOptions{Logits: gpt2.LogitsLast})
	if err != nil {
		return nil, fmt.Errorf("analysis: activation patching: corrupted run: %w", err)
	}
	ld := LogitDiff(target, contrast)
	out := &PatchResult{Metric: metric.Name, Target: target, Contrast: contrast, Processing: m.Processing.String()}
	out.CleanLogitDiff = ld.Fn(cleanRes.Logits.At(0, 0), 0, 0)
	out.CorruptedLogitDiff = ld.Fn(corrRes.Logits.At(0, 0), 0, 0)
	if opts.Metric.Fn == nil && out.CleanLogitDiff == out.CorruptedLogitDiff {
		return nil, fmt.Errorf("analysis: activation patching: clean and corrupted runs have the same logit difference %.4g, so the normalized metric is undefined", out.CleanLogitDiff)
	}
	score := func(l []float32) float64 { return metric.Fn(l, out.CleanLogitDiff, out.CorruptedLogitDiff) }
	out.CleanMetric = score(cleanRes.Logits.At(0, 0))
	out.CorruptedMetric = score(corrRes.Logits.At(0, 0))

	var specs []rowSpec
	var sinks []*float64
	grid := func() [][]float64 {
		g := make([][]float64, L)
		for l := range g {
			g[l] = make([]float64, P)
		}
		return g
	}
	for _, k := range kinds {
		pt, _ := k.point()
		switch k {
		case PatchResidPre, PatchAttnOut, PatchMLPOut:
			g := grid()
			for l := 0; l < L; l++ {
				name := blockHook(l, pt)
				for p := 0; p < P; p++ {
					specs = append(specs, rowSpec{edits: []edit{{name: name, pos: p, vals: vectorAt(cleanRes.Cache[name], 0, p)}}})
					sinks = append(sinks, &g[l][p])
				}
			}
			switch k {
			case PatchResidPre:
				out.ResidPre = g
			case PatchAttnOut:
				out.AttnOut = g
			default:
				out.MLPOut = g
			}
		case PatchHeadByPos:
			out.HeadOutByPos = make([][][]float64, L)
			for l := 0; l < L; l++ {
				name := blockHook(l, pt)
				out.HeadOutByPos[l] = make([][]float64, P)
				for p := 0; p < P; p++ {
					out.HeadOutByPos[l][p] = make([]float64, H)
					z := vectorAt(cleanRes.Cache[name], 0, p)
					for h := 0; h < H; h++ {
						specs = append(specs, rowSpec{edits: []edit{{name: name, pos: p, lo: h * dh, vals: z[h*dh : (h+1)*dh]}}})
						sinks = append(sinks, &out.HeadOutByPos[l][p][h])
					}
				}
			}
		case PatchHeadAllPos:
			out.HeadOutAllPos = make([][]float64, L)
			for l := 0; l < L; l++ {
				name := blockHook(l, pt)
				out.HeadOutAllPos[l] = make([]float64, H)
				for h := 0; h < H; h++ {
					var edits []edit
					for p := 0; p < P; p++ {
						edits = append(edits, edit{name: name, pos: p, lo: h * dh, vals: vectorAt(cleanRes.Cache[name], 0, p)[h*dh : (h+1)*dh]})
					}
					specs = append(specs, rowSpec{edits: edits})
					sinks = append(sinks, &out.HeadOutAllPos[l][h])
				}
			}
		}
	}
	br := &batchRunner{m: m, tokens: corrupted, logits: gpt2.LogitsLast}
	err = br.run(ctx, specs, func(i int, res *gpt2.Result, row int) error {
		*sinks[i] = score(res.Logits.At(row, 0))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("analysis: activation patching: %w", err)
	}
	return out, nil
}

func (k PatchKind) point() (string, error) {
	switch k {
	case PatchResidPre:
		return "hook_resid_pre", nil
	case PatchAttnOut:
		return "hook_attn_out", nil
	case PatchMLPOut:
		return "hook_mlp_out", nil
	case PatchHeadByPos, PatchHeadAllPos:
		return "attn.hook_z", nil
	}
	return "", fmt.Errorf("analysis: unknown patch kind %q", k)
}
