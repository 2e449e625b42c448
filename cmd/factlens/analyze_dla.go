package main

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/cmd/factlens/report"
)

// dlaReport is what `factlens dla --format json` prints.
type dlaReport struct {
	analysisHeader
	Prompt string               `json:"prompt"`
	IDs    []int                `json:"ids"`
	Tokens []string             `json:"tokens"`
	DLA    *analysis.DLAResult  `json:"dla"`
	Lens   *analysis.LensResult `json:"logit_lens"`
}

func (a *app) dlaCommand() *cobra.Command {
	var rf runFlags
	var of outputFlags
	var target, contrast tokenFlag
	var topNeurons, lensTop int
	cmd := &cobra.Command{
		Use:   "dla TEXT",
		Short: "Direct logit attribution of logit(target) − logit(contrast) after TEXT, with the logit lens",
		Long: `dla splits logit(target) − logit(contrast) at the last position of TEXT into what every
component writes to the residual stream there: the token and position embeddings, each attention
head (z·W_O), each layer's attention and MLP output (hook_attn_out, hook_mlp_out), each MLP neuron,
the output biases, and the constant from ln_final's bias and the unembedding bias. ln_final is frozen
at the run's own scale (TransformerLens' apply_ln_to_stack), which makes it linear, so the parts sum
to the model's logit difference. Without --contrast, logit(target) alone is attributed; without
--target, the model's top next token is.

The logit lens applies ln_final and the unembedding to the residual stream before each block and
after the last, and follows the target's probability and rank layer by layer.`,
		Example: "  factlens dla --target \" basketball\" --contrast \" baseball\" \"Michael Jordan plays the sport of\"\n" +
			"  factlens dla --processing tl --prepend-bos --format html --out dla.html --target \" Paris\" \"The Eiffel Tower is in\"",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := of.check(); err != nil {
				return err
			}
			if topNeurons < 1 || lensTop < 1 {
				return usagef("--top-neurons and --lens-top must be at least 1")
			}
			text, err := a.readTextArg(args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			lm, err := a.loadModel(ctx, &rf)
			if err != nil {
				return err
			}
			defer lm.Close()
			tokens, err := lm.promptTokens(text)
			if err != nil {
				return err
			}
			tgt, err := target.resolve(cmd, lm)
			if err != nil {
				return err
			}
			con, err := contrast.resolve(cmd, lm)
			if err != nil {
				return err
			}
			if tgt < 0 {
				if tgt, err = lm.topToken(ctx, tokens); err != nil {
					return err
				}
			}
			if tgt == con {
				return usagef("the target and the contrast are the same token %s", report.Token(lm.tok.Token(tgt)))
			}
			start := time.Now()
			dla, err := analysis.DirectLogitAttribution(ctx, lm.model, tokens, tgt, con, analysis.DLAOptions{TopNeurons: topNeurons, Tokenizer: lm.tok})
			if err != nil {
				return err
			}
			a.timing("direct logit attribution", start)
			start = time.Now()
			lens, err := analysis.LogitLens(ctx, lm.model, tokens, tgt, con, analysis.LensOptions{TopK: lensTop, Tokenizer: lm.tok})
			if err != nil {
				return err
			}
			a.timing("logit lens", start)
			res := &dlaReport{analysisHeader: lm.header(), Prompt: text, IDs: tokens, Tokens: lm.tokenStrings(tokens), DLA: dla, Lens: lens}
			return a.emit(&of, res, func() *report.Document { return dlaDocument(res, lm.provenance()) })
		},
	}
	rf.register(cmd)
	of.register(cmd)
	target.register(cmd, "target", "the token whose logit is attributed", "the model's top next token")
	contrast.register(cmd, "contrast", "the token whose logit is subtracted", "none")
	cmd.Flags().IntVar(&topNeurons, "top-neurons", 20, "neurons listed, by |attribution|")
	cmd.Flags().IntVar(&lensTop, "lens-top", 3, "tokens listed per logit-lens row")
	return cmd
}

// dlaMetric names the attributed quantity: logit(' a') − logit(' b').
func dlaMetric(d *analysis.DLAResult) string {
	s := fmt.Sprintf("logit(%s)", report.Token(d.TargetToken))
	if d.Contrast >= 0 {
		s += fmt.Sprintf(" − logit(%s)", report.Token(d.ContrastToken))
	}
	return s
}

func dlaDocument(r *dlaReport, prov []report.Field) *report.Document {
	d := r.DLA
	L := len(d.Attn)
	metric := dlaMetric(d)
	doc := &report.Document{Title: "Direct logit attribution of " + metric, Provenance: prov}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf(
		"Prompt %s; attributed at position %d (%s). %s = %.4f from the model's logits; the parts below sum to %.4f. "+
			"ln_final is frozen at this run's scale %.4f, so each part is its centred residual vector divided by that scale, projected on the unembedding direction.",
		report.Token(r.Prompt), d.Position, report.Token(r.Tokens[d.Position]), metric, d.LogitDiff, d.Sum, d.Scale)})

	var headsSum, neuronsSum, attnBias, mlpBias float64
	for l := 0; l < L; l++ {
		for _, v := range d.Heads[l] {
			headsSum += v
		}
		neuronsSum += d.MLP[l] - d.MLPBias[l]
		attnBias += d.AttnBias[l]
		mlpBias += d.MLPBias[l]
	}
	totals := &report.Table{Caption: "Totals: what each part writes to " + metric,
		Header: []string{"component", "hook", "contribution"}, NumericCols: []int{2}}
	add := func(name, hook string, v float64) {
		totals.Rows = append(totals.Rows, []string{name, hook, fmt.Sprintf("%.4f", v)})
	}
	add("token embedding", "hook_embed", d.Embed)
	add("position embedding", "hook_pos_embed", d.PosEmbed)
	bars := &report.Bars{Caption: "Contribution by component (emb: token embedding, pos: position embedding, A: attention layer, M: MLP layer, c: constant)",
		XLabel: "component", YLabel: "contribution", Labels: []string{"emb", "pos"}, Values: []float64{d.Embed, d.PosEmbed}}
	for l := 0; l < L; l++ {
		add(fmt.Sprintf("attention L%d", l), fmt.Sprintf("blocks.%d.hook_attn_out", l), d.Attn[l])
		add(fmt.Sprintf("MLP L%d", l), fmt.Sprintf("blocks.%d.hook_mlp_out", l), d.MLP[l])
		bars.Labels = append(bars.Labels, fmt.Sprintf("A%d", l), fmt.Sprintf("M%d", l))
		bars.Values = append(bars.Values, d.Attn[l], d.MLP[l])
	}
	add("constant", "ln_final.b, unembedding bias", d.Constant)
	bars.Labels = append(bars.Labels, "c")
	bars.Values = append(bars.Values, d.Constant)
	add("sum of the parts", "", d.Sum)
	add("model's logit difference", "logits", d.LogitDiff)

	split := &report.Table{Caption: "The same totals split: heads and attention bias b_O, neurons and MLP bias b_out (all heads: " +
		fmt.Sprintf("%.4f, all b_O: %.4f, all neurons: %.4f, all b_out: %.4f)", headsSum, attnBias, neuronsSum, mlpBias),
		Header: []string{"layer", "Σ heads", "b_O", "attention", "Σ neurons", "b_out", "MLP"}, NumericCols: []int{0, 1, 2, 3, 4, 5, 6}}
	for l := 0; l < L; l++ {
		var hs float64
		for _, v := range d.Heads[l] {
			hs += v
		}
		split.Rows = append(split.Rows, []string{fmt.Sprint(l), fmt.Sprintf("%.4f", hs), fmt.Sprintf("%.4f", d.AttnBias[l]),
			fmt.Sprintf("%.4f", d.Attn[l]), fmt.Sprintf("%.4f", d.MLP[l]-d.MLPBias[l]), fmt.Sprintf("%.4f", d.MLPBias[l]), fmt.Sprintf("%.4f", d.MLP[l])})
	}
	for i, v := range bars.Values {
		bars.Values[i] = math.Round(v*1e4) / 1e4 // four decimals, as the tables show
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Components"}, totals, bars, split)

	headLabels := make([]string, 0)
	if L > 0 {
		for h := range d.Heads[0] {
			headLabels = append(headLabels, fmt.Sprintf("H%d", h))
		}
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Attention heads"},
		&report.Heatmap{Caption: "Each head's direct contribution, z·W_O projected (layers × heads; red raises " + metric + ", blue lowers it)",
			RowLabels: layerLabels(L), ColLabels: headLabels, Values: d.Heads, Diverging: true, Digits: 3})

	neurons := &report.Table{Caption: fmt.Sprintf("The %d neurons (blocks.L.mlp.hook_post) with the largest |direct contribution|", len(d.TopNeurons)),
		Header: []string{"rank", "neuron", "layer", "index", "contribution"}, NumericCols: []int{0, 2, 3, 4}}
	for i, n := range d.TopNeurons {
		neurons.Rows = append(neurons.Rows, []string{fmt.Sprint(i + 1), neuronName(n.Layer, n.Neuron), fmt.Sprint(n.Layer), fmt.Sprint(n.Neuron), fmt.Sprintf("%.4f", n.Value)})
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Neurons"}, neurons)

	lens := r.Lens
	x := make([]float64, len(lens.Rows))
	probs := make([]float64, len(lens.Rows))
	ranks := make([]float64, len(lens.Rows))
	diffs := make([]float64, len(lens.Rows))
	lensTable := &report.Table{Header: []string{"resid", "top tokens", "P(target)", "target rank", "logit diff"}, NumericCols: []int{2, 3, 4}}
	for i, row := range lens.Rows {
		x[i], probs[i], ranks[i], diffs[i] = float64(i), row.TargetProb, float64(row.TargetRank), row.LogitDiff
		var tops []string
		for _, t := range row.Top {
			tops = append(tops, fmt.Sprintf("%s %.3f", report.Token(t.Token), t.Prob))
		}
		diff := ""
		if d.Contrast >= 0 {
			diff = fmt.Sprintf("%.3f", row.LogitDiff)
		}
		lensTable.Rows = append(lensTable.Rows, []string{row.Label, strings.Join(tops, ", "), fmt.Sprintf("%.4f", row.TargetProb), fmt.Sprint(row.TargetRank), diff})
	}
	xl := fmt.Sprintf("layer (residual stream before the block; %d: after the last)", L)
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Logit lens"},
		&report.Paragraph{Text: "ln_final (statistics recomputed for each layer) and the unembedding applied to the residual stream at the last position, before each block and after the last one (TransformerLens' accumulated_resid with apply_ln). The last row equals the model's own prediction."},
		&report.Lines{Caption: fmt.Sprintf("P(%s) through the layers", report.Token(d.TargetToken)), XLabel: xl, YLabel: "probability", X: x,
			Series: []report.Series{{Name: "P(target)", Y: probs}}},
		&report.Lines{Caption: fmt.Sprintf("Rank of %s through the layers (0 is the top token)", report.Token(d.TargetToken)), XLabel: xl, YLabel: "rank", X: x,
			Series: []report.Series{{Name: "rank", Y: ranks}}})
	if d.Contrast >= 0 {
		doc.Blocks = append(doc.Blocks, &report.Lines{Caption: metric + " through the layers", XLabel: xl, YLabel: "logit difference", X: x,
			Series: []report.Series{{Name: "logit diff", Y: diffs}}})
	}
	doc.Blocks = append(doc.Blocks, lensTable)
	if math.Abs(d.Sum-d.LogitDiff) > 1e-2*math.Max(1, math.Abs(d.LogitDiff)) {
		doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf("Warning: the parts sum to %.4f but the model's logit difference is %.4f.", d.Sum, d.LogitDiff)})
	}
	return doc
}
