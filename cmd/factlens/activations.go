package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/gpt2"
)

// activationsResult is the activation report of one prompt; `--format json`
// prints it as is.
type activationsResult struct {
	Model      string `json:"model"`
	Commit     string `json:"commit,omitempty"`
	Processing string `json:"processing"`
	PrependBOS bool   `json:"prepend_bos"`

	Prompt string   `json:"prompt"`
	IDs    []int    `json:"ids"`
	Tokens []string `json:"tokens"`

	// Neurons[layer][pos] lists the top MLP neurons (blocks.L.mlp.hook_post)
	// and how many exceed Threshold.
	Threshold float64           `json:"threshold"`
	Neurons   [][]neuronSummary `json:"neurons"`

	// ResidNorms[i][pos] is the L2 norm of the residual stream at
	// ResidLabels[i] ("L_pre" before block L, "final_post" after the last).
	ResidLabels []string    `json:"resid_labels"`
	ResidNorms  [][]float64 `json:"resid_norms"`

	// LastTokenAttention[layer][head] is the last position's attention
	// pattern over key positions.
	LastTokenAttention [][][]float64 `json:"last_token_attention"`

	// LogitLens[pos] is the logit lens at that position: one row per layer.
	LogitLens []*analysis.LensResult `json:"logit_lens"`

	Predictions []prediction `json:"predictions"`
}

type neuronSummary struct {
	Active int           `json:"active"`
	Top    []neuronValue `json:"top"`
}

type neuronValue struct {
	Index int     `json:"index"`
	Value float32 `json:"value"`
}

func (a *app) activationsCommand() *cobra.Command {
	var rf runFlags
	var format, out string
	var topK int
	var threshold float64
	cmd := &cobra.Command{
		Use:   "activations TEXT",
		Short: "Activation report for one prompt: neurons, residual norms, attention, logit lens, predictions",
		Long: `activations runs one prompt and reports, per layer and token, the most active MLP neurons
(blocks.L.mlp.hook_post) and how many exceed --threshold; the residual stream's norm before each
block; where the last token attends in every head; the logit lens (top tokens per layer at each
position); and the final top predictions. HTML output is one self-contained file with SVG
heatmaps.`,
		Example: "  factlens activations \"Michael Jordan plays the sport of\"\n" +
			"  factlens activations --format html --out report.html \"Michael Jordan plays the sport of\"",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			if topK < 1 {
				return usagef("--top must be at least 1")
			}
			lm, text, ids, err := a.loadPrompt(cmd.Context(), &rf, args[0])
			if err != nil {
				return err
			}
			defer lm.Close()
			res, err := a.activationReport(cmd.Context(), lm, text, ids, topK, threshold)
			if err != nil {
				return err
			}
			return writeOutput(a.stdout, out, func(w io.Writer) error {
				return renderResult(w, format, res, func() *report.Document { return activationsDocument(res, lm.provenance()) })
			})
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVarP(&format, "format", "f", "text", "output format: text, json, md or html")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the report to this file instead of standard output")
	cmd.Flags().IntVarP(&topK, "top", "k", 5, "neurons per layer and token, tokens per logit-lens cell, predictions (×2)")
	cmd.Flags().Float64Var(&threshold, "threshold", 1.0, "an MLP neuron counts as active above this hook_post value")
	return cmd
}

func (a *app) activationReport(ctx context.Context, lm *loadedModel, text string, ids []int, topK int, threshold float64) (*activationsResult, error) {
	m := lm.model
	L := m.NLayer()
	cache := func(name string) bool {
		for l := 0; l < L; l++ {
			if name == fmt.Sprintf("blocks.%d.mlp.hook_post", l) || name == fmt.Sprintf("blocks.%d.hook_resid_pre", l) ||
				name == fmt.Sprintf("blocks.%d.attn.hook_pattern", l) {
				return true
			}
		}
		return name == fmt.Sprintf("blocks.%d.hook_resid_post", L-1)
	}
	res, err := m.Run(ctx, [][]int{ids}, gpt2.RunOptions{Cache: cache, Logits: gpt2.LogitsLast, PrependBOS: lm.prependBOS})
	if err != nil {
		return nil, err
	}
	tokens := res.Tokens[0]
	P := len(tokens)
	out := &activationsResult{Model: lm.ck.Source.Ref, Commit: lm.ck.Source.Commit, Processing: m.Processing.String(),
		PrependBOS: lm.prependBOS, Prompt: text, IDs: tokens, Tokens: lm.tokenStrings(tokens), Threshold: threshold}

	for l := 0; l < L; l++ {
		post := res.Cache[fmt.Sprintf("blocks.%d.mlp.hook_post", l)]
		row := make([]neuronSummary, P)
		for p := 0; p < P; p++ {
			row[p] = summarizeNeurons(post.At(0, p), topK, float32(threshold))
		}
		out.Neurons = append(out.Neurons, row)
	}

	for l := 0; l <= L; l++ {
		name, label := fmt.Sprintf("blocks.%d.hook_resid_pre", l), fmt.Sprintf("%d_pre", l)
		if l == L {
			name, label = fmt.Sprintf("blocks.%d.hook_resid_post", L-1), "final_post"
		}
		act := res.Cache[name]
		norms := make([]float64, P)
		for p := 0; p < P; p++ {
			var s float64
			for _, v := range act.At(0, p) {
				s += float64(v) * float64(v)
			}
			norms[p] = math.Sqrt(s)
		}
		out.ResidLabels = append(out.ResidLabels, label)
		out.ResidNorms = append(out.ResidNorms, norms)
	}

	for l := 0; l < L; l++ {
		pat := res.Cache[fmt.Sprintf("blocks.%d.attn.hook_pattern", l)]
		heads := make([][]float64, m.NHead())
		for h := range heads {
			row := pat.At(0, h, P-1)
			heads[h] = make([]float64, P)
			for k := range row {
				heads[h][k] = float64(row[k])
			}
		}
		out.LastTokenAttention = append(out.LastTokenAttention, heads)
	}

	// The lens at position p only depends on tokens[:p+1] (the model is
	// causal), so the last-position lens of each prefix is the lens at p.
	for p := 0; p < P; p++ {
		lens, err := analysis.LogitLens(ctx, m, tokens[:p+1], -1, -1, analysis.LensOptions{TopK: topK, Tokenizer: lm.tok})
		if err != nil {
			return nil, err
		}
		out.LogitLens = append(out.LogitLens, lens)
	}
	out.Predictions = topPredictions(res.Logits.Data, 2*topK, lm.tok)
	return out, nil
}

// summarizeNeurons returns the k largest values of one token's neurons and
// how many exceed the threshold.
func summarizeNeurons(vals []float32, k int, threshold float32) neuronSummary {
	s := neuronSummary{}
	idx := make([]int, len(vals))
	for i, v := range vals {
		idx[i] = i
		if v > threshold {
			s.Active++
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return vals[idx[a]] > vals[idx[b]] })
	for _, i := range idx[:min(k, len(idx))] {
		s.Top = append(s.Top, neuronValue{Index: i, Value: vals[i]})
	}
	return s
}

func activationsDocument(r *activationsResult, prov []report.Field) *report.Document {
	doc := &report.Document{Title: "Activations of " + report.Token(r.Prompt), Provenance: prov}
	P, L := len(r.Tokens), len(r.Neurons)
	posLabels := make([]string, P)
	for p, t := range r.Tokens {
		posLabels[p] = fmt.Sprintf("%d %s", p, report.Token(t))
	}
	layerLabels := make([]string, L)
	for l := range layerLabels {
		layerLabels[l] = fmt.Sprintf("L%d", l)
	}

	tokTable := &report.Table{Header: []string{"pos", "id", "token"}, NumericCols: []int{0, 1}}
	for p, t := range r.Tokens {
		tokTable.Rows = append(tokTable.Rows, []string{fmt.Sprint(p), fmt.Sprint(r.IDs[p]), report.Token(t)})
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Tokens"}, tokTable)

	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Predictions"}, predictionTable(r.Predictions))

	// MLP neurons: active counts as a heatmap, then the top neurons.
	active := make([][]float64, P)
	for p := range active {
		active[p] = make([]float64, L)
		for l := 0; l < L; l++ {
			active[p][l] = float64(r.Neurons[l][p].Active)
		}
	}
	top := &report.Table{Header: []string{"layer", "pos", "token", "active", "top neurons (index: hook_post)"}, NumericCols: []int{0, 1, 3}}
	for l := 0; l < L; l++ {
		for p := 0; p < P; p++ {
			ns := r.Neurons[l][p]
			cell := ""
			for i, n := range ns.Top {
				if i > 0 {
					cell += ", "
				}
				cell += fmt.Sprintf("%d: %.2f", n.Index, n.Value)
			}
			top.Rows = append(top.Rows, []string{fmt.Sprint(l), fmt.Sprint(p), report.Token(r.Tokens[p]), fmt.Sprint(ns.Active), cell})
		}
	}
	doc.Blocks = append(doc.Blocks,
		&report.Heading{Level: 2, Text: "MLP neurons"},
		&report.Heatmap{Caption: fmt.Sprintf("Neurons with mlp.hook_post > %g (tokens × layers)", r.Threshold),
			RowLabels: posLabels, ColLabels: layerLabels, Values: active},
		top)

	norms := make([][]float64, P)
	for p := range norms {
		norms[p] = make([]float64, len(r.ResidLabels))
		for i := range r.ResidLabels {
			norms[p][i] = r.ResidNorms[i][p]
		}
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Residual stream"},
		&report.Heatmap{Caption: "L2 norm of the residual stream (tokens × hook_resid_pre of each block, then final resid_post)",
			RowLabels: posLabels, ColLabels: r.ResidLabels, Values: norms, Digits: 1})

	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Where the last token attends"})
	attnTable := &report.Table{Header: []string{"layer", "head", "top key", "weight"}, NumericCols: []int{0, 1, 3}}
	for l, heads := range r.LastTokenAttention {
		grid := make([][]float64, len(heads))
		headLabels := make([]string, len(heads))
		for h, row := range heads {
			grid[h] = row
			headLabels[h] = fmt.Sprintf("H%d", h)
			best := 0
			for k := range row {
				if row[k] > row[best] {
					best = k
				}
			}
			attnTable.Rows = append(attnTable.Rows, []string{fmt.Sprint(l), fmt.Sprint(h), posLabels[best], fmt.Sprintf("%.3f", row[best])})
		}
		doc.Blocks = append(doc.Blocks, &report.Heatmap{Caption: fmt.Sprintf("Layer %d: attention of the last token (heads × key positions)", l),
			RowLabels: headLabels, ColLabels: positionsShort(P), Values: grid, Digits: 2})
	}
	doc.Blocks = append(doc.Blocks, attnTable)

	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Logit lens"},
		&report.Paragraph{Text: "Top token when ln_final and the unembedding are applied to the residual stream before each block (rows) at each position (columns), with its probability."})
	if len(r.LogitLens) > 0 {
		rows := len(r.LogitLens[0].Rows)
		header := append([]string{"resid"}, posLabels...)
		lensTable := &report.Table{Header: header}
		probs := make([][]float64, rows)
		rowLabels := make([]string, rows)
		for i := 0; i < rows; i++ {
			rowLabels[i] = r.LogitLens[0].Rows[i].Label
			line := []string{rowLabels[i]}
			probs[i] = make([]float64, P)
			for p := 0; p < P; p++ {
				t := r.LogitLens[p].Rows[i].Top[0]
				line = append(line, fmt.Sprintf("%s %.2f", report.Token(t.Token), t.Prob))
				probs[i][p] = t.Prob
			}
			lensTable.Rows = append(lensTable.Rows, line)
		}
		doc.Blocks = append(doc.Blocks, lensTable,
			&report.Heatmap{Caption: "Probability of the logit lens' top token (layers × positions)", RowLabels: rowLabels,
				ColLabels: positionsShort(P), Values: probs, Digits: 2})
	}
	return doc
}

func positionsShort(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint(i)
	}
	return out
}
