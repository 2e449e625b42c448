package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/cmd/factlens/report"
)

// pairFlags are the clean and corrupted prompts and the two tokens whose
// logit difference patch and neurons measure.
type pairFlags struct {
	clean, corrupted string
	target, contrast tokenFlag
}

func (f *pairFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.clean, "clean", "", "the clean prompt (- reads standard input)")
	cmd.Flags().StringVar(&f.corrupted, "corrupted", "", "the corrupted prompt, the same number of tokens as --clean")
	_ = cmd.MarkFlagRequired("clean")
	_ = cmd.MarkFlagRequired("corrupted")
	f.target.register(cmd, "target", "the answer to the clean prompt", "the clean run's top token")
	f.contrast.register(cmd, "contrast", "the answer to the corrupted prompt", "the corrupted run's top token")
}

// promptPair is a resolved pairFlags.
type promptPair struct {
	Clean           string   `json:"clean"`
	Corrupted       string   `json:"corrupted"`
	CleanIDs        []int    `json:"clean_ids"`
	CorruptedIDs    []int    `json:"corrupted_ids"`
	CleanTokens     []string `json:"clean_tokens"`
	CorruptedTokens []string `json:"corrupted_tokens"`
	Target          int      `json:"target"`
	Contrast        int      `json:"contrast"`
	TargetToken     string   `json:"target_token"`
	ContrastToken   string   `json:"contrast_token"`
}

func (a *app) resolvePair(ctx context.Context, cmd *cobra.Command, lm *loadedModel, f *pairFlags) (*promptPair, error) {
	clean, err := a.readTextArg(f.clean)
	if err != nil {
		return nil, err
	}
	p := &promptPair{Clean: clean, Corrupted: f.corrupted}
	if p.CleanIDs, err = lm.promptTokens(p.Clean); err != nil {
		return nil, fmt.Errorf("--clean: %w", err)
	}
	if p.CorruptedIDs, err = lm.promptTokens(p.Corrupted); err != nil {
		return nil, fmt.Errorf("--corrupted: %w", err)
	}
	p.CleanTokens, p.CorruptedTokens = lm.tokenStrings(p.CleanIDs), lm.tokenStrings(p.CorruptedIDs)
	if len(p.CleanIDs) != len(p.CorruptedIDs) {
		return nil, usagef("--clean is %d tokens (%s) but --corrupted is %d (%s); patching needs prompts of equal length",
			len(p.CleanIDs), tokenList(lm, p.CleanIDs), len(p.CorruptedIDs), tokenList(lm, p.CorruptedIDs))
	}
	if slices.Equal(p.CleanIDs, p.CorruptedIDs) {
		return nil, usagef("--clean and --corrupted are the same tokens (%s): there is nothing to patch", tokenList(lm, p.CleanIDs))
	}
	if p.Target, err = f.target.resolve(cmd, lm); err != nil {
		return nil, err
	}
	if p.Contrast, err = f.contrast.resolve(cmd, lm); err != nil {
		return nil, err
	}
	if p.Target < 0 {
		if p.Target, err = lm.topToken(ctx, p.CleanIDs); err != nil {
			return nil, err
		}
	}
	if p.Contrast < 0 {
		if p.Contrast, err = lm.topToken(ctx, p.CorruptedIDs); err != nil {
			return nil, err
		}
	}
	if p.Target == p.Contrast {
		return nil, usagef("the target and the contrast are both %s (the clean and corrupted runs predict the same token); pass --target and --contrast",
			report.Token(lm.tok.Token(p.Target)))
	}
	p.TargetToken, p.ContrastToken = lm.tok.Token(p.Target), lm.tok.Token(p.Contrast)
	return p, nil
}

// positionLabels of a pair: the clean token, and "→ corrupted" where it differs.
func (p *promptPair) positionLabels() []string {
	out := make([]string, len(p.CleanTokens))
	for i, s := range p.CleanTokens {
		out[i] = fmt.Sprintf("%d %s", i, report.Token(s))
		if p.CorruptedIDs[i] != p.CleanIDs[i] {
			out[i] += "→" + report.Token(p.CorruptedTokens[i])
		}
	}
	return out
}

func (p *promptPair) provenance() []report.Field {
	return []report.Field{
		{Key: "clean", Value: report.Token(p.Clean)},
		{Key: "corrupted", Value: report.Token(p.Corrupted)},
		{Key: "metric tokens", Value: fmt.Sprintf("logit(%s) − logit(%s) at the last position", report.Token(p.TargetToken), report.Token(p.ContrastToken))},
	}
}

// patchReport is what `factlens patch --format json` prints.
type patchReport struct {
	analysisHeader
	promptPair
	Patch *analysis.PatchResult `json:"patch"`
}

func (a *app) patchCommand() *cobra.Command {
	var rf runFlags
	var of outputFlags
	var pf pairFlags
	var metric string
	var kinds []string
	cmd := &cobra.Command{
		Use:   "patch --clean TEXT --corrupted TEXT",
		Short: "Activation patching: which activations of a clean run restore its answer in a corrupted run",
		Long: `patch runs the corrupted prompt once per activation with that one activation replaced by its
value from the clean run (denoising, as transformer_lens.patching does) and measures the logit
difference between the target (the clean answer) and the contrast (the corrupted answer), by
default normalised to 0 for the corrupted run and 1 for the clean one. Sweeps: the residual stream
before each block, each attention and MLP output (layer × position), each head's output (hook_z) at
each position and at all positions together. The prompts must have the same number of tokens.`,
		Example: "  factlens patch --clean \"Michael Jordan plays the sport of\" --corrupted \"Tom Brady plays the sport of\" \\\n" +
			"      --target \" basketball\" --contrast \" football\"\n" +
			"  factlens patch --kinds resid_pre,head_out_all_pos --format html --out patch.html --clean ... --corrupted ...",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := of.check(); err != nil {
				return err
			}
			var opts analysis.PatchOptions
			for _, k := range kinds {
				kind := analysis.PatchKind(k)
				if !slices.Contains(allPatchKinds, kind) {
					return usagef("unknown --kinds entry %q (want %s)", k, patchKindNames())
				}
				opts.Kinds = append(opts.Kinds, kind)
			}
			ctx := cmd.Context()
			lm, err := a.loadModel(ctx, &rf)
			if err != nil {
				return err
			}
			defer lm.Close()
			pair, err := a.resolvePair(ctx, cmd, lm, &pf)
			if err != nil {
				return err
			}
			switch metric {
			case "normalized":
			case "logit-diff":
				opts.Metric = analysis.LogitDiff(pair.Target, pair.Contrast)
			default:
				return usagef("unknown --metric %q (want normalized or logit-diff)", metric)
			}
			start := time.Now()
			res, err := analysis.ActivationPatching(ctx, lm.model, pair.CleanIDs, pair.CorruptedIDs, pair.Target, pair.Contrast, opts)
			if err != nil {
				return err
			}
			a.timing("activation patching", start)
			out := &patchReport{analysisHeader: lm.header(), promptPair: *pair, Patch: res}
			return a.emit(&of, out, func() *report.Document {
				return patchDocument(out, append(lm.provenance(), pair.provenance()...))
			})
		},
	}
	rf.register(cmd)
	of.register(cmd)
	pf.register(cmd)
	cmd.Flags().StringVar(&metric, "metric", "normalized", "normalized: (LD − LD_corrupted)/(LD_clean − LD_corrupted); logit-diff: LD itself")
	cmd.Flags().StringSliceVar(&kinds, "kinds", nil, "sweeps to run (default all): "+patchKindNames())
	return cmd
}

var allPatchKinds = []analysis.PatchKind{analysis.PatchResidPre, analysis.PatchAttnOut, analysis.PatchMLPOut, analysis.PatchHeadByPos, analysis.PatchHeadAllPos}

func patchKindNames() string {
	var s []string
	for _, k := range allPatchKinds {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

func patchDocument(r *patchReport, prov []report.Field) *report.Document {
	p := r.Patch
	metric := fmt.Sprintf("logit(%s) − logit(%s)", report.Token(r.TargetToken), report.Token(r.ContrastToken))
	doc := &report.Document{Title: "Activation patching of " + metric, Provenance: prov}
	what := "the normalized logit difference (LD − LD_corrupted)/(LD_clean − LD_corrupted): 0 is the corrupted run, 1 the clean run"
	if p.Metric != "normalized_logit_diff" {
		what = "the logit difference " + metric
	}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf(
		"Each cell is %s, measured on the corrupted prompt with one activation replaced by its clean value. "+
			"Clean logit difference %.4f, corrupted %.4f (metric %.4f and %.4f).",
		what, p.CleanLogitDiff, p.CorruptedLogitDiff, p.CleanMetric, p.CorruptedMetric)})
	if gap := p.CleanLogitDiff - p.CorruptedLogitDiff; p.Metric == "normalized_logit_diff" && math.Abs(gap) < 0.1 {
		doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf(
			"Caution: the clean and corrupted logit differences are only %.4f apart, so the normalized metric magnifies small changes; --metric logit-diff shows raw values.", gap)})
	}
	pos := r.positionLabels()
	L := max(len(p.ResidPre), len(p.AttnOut), len(p.MLPOut), len(p.HeadOutByPos), len(p.HeadOutAllPos))
	layers := layerLabels(L)
	grid := func(title, caption string, g [][]float64) {
		if g != nil {
			doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: title},
				&report.Heatmap{Caption: caption, RowLabels: layers, ColLabels: pos, Values: g, Diverging: true, Digits: 3})
		}
	}
	grid("Residual stream", "Patching blocks.L.hook_resid_pre (layers × positions)", p.ResidPre)
	grid("Attention outputs", "Patching blocks.L.hook_attn_out (layers × positions)", p.AttnOut)
	grid("MLP outputs", "Patching blocks.L.hook_mlp_out (layers × positions)", p.MLPOut)
	if p.HeadOutAllPos != nil {
		var heads []string
		for h := range p.HeadOutAllPos[0] {
			heads = append(heads, fmt.Sprintf("H%d", h))
		}
		doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Heads, all positions"},
			&report.Heatmap{Caption: "Patching one head's output (blocks.L.attn.hook_z) at every position at once (layers × heads)",
				RowLabels: layers, ColLabels: heads, Values: p.HeadOutAllPos, Diverging: true, Digits: 3})
	}
	if p.HeadOutByPos != nil {
		var rows []string
		var vals [][]float64
		for l, byPos := range p.HeadOutByPos {
			for h := range byPos[0] {
				rows = append(rows, fmt.Sprintf("L%dH%d", l, h))
				row := make([]float64, len(byPos))
				for q := range byPos {
					row[q] = byPos[q][h]
				}
				vals = append(vals, row)
			}
		}
		doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Heads by position"},
			&report.Heatmap{Caption: "Patching one head's output (blocks.L.attn.hook_z) at one position (heads × positions)",
				RowLabels: rows, ColLabels: pos, Values: vals, Diverging: true, Digits: 3})
	}
	return doc
}
