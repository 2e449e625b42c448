package main

import (
	"fmt"
	"math"
	"sort"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/gpt2"
)

// prediction is one candidate next token.
type prediction struct {
	ID    int     `json:"id"`
	Token string  `json:"token"`
	Prob  float64 `json:"prob"`
	Logit float32 `json:"logit"`
}

type runResult struct {
	Model      string       `json:"model"`
	Commit     string       `json:"commit,omitempty"`
	Processing string       `json:"processing"`
	Prompt     string       `json:"prompt"`
	IDs        []int        `json:"ids"`
	Tokens     []string     `json:"tokens"`
	Top        []prediction `json:"top"`
}

// topPredictions returns the k most probable tokens of one logit row, with
// probabilities from a float64 softmax.
func topPredictions(logits []float32, k int, tok *gpt2.Tokenizer) []prediction {
	maxv := math.Inf(-1)
	for _, v := range logits {
		maxv = math.Max(maxv, float64(v))
	}
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v) - maxv)
	}
	idx := make([]int, len(logits))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	k = min(k, len(idx))
	out := make([]prediction, k)
	for i, id := range idx[:k] {
		out[i] = prediction{ID: id, Token: tok.Token(id), Logit: logits[id], Prob: math.Exp(float64(logits[id])-maxv) / z}
	}
	return out
}

func predictionTable(top []prediction) *report.Table {
	t := &report.Table{Header: []string{"rank", "token", "id", "prob", "logit"}, NumericCols: []int{0, 2, 3, 4}}
	for i, p := range top {
		t.Rows = append(t.Rows, []string{fmt.Sprint(i + 1), report.Token(p.Token), fmt.Sprint(p.ID),
			fmt.Sprintf("%.4f", p.Prob), fmt.Sprintf("%.3f", p.Logit)})
	}
	return t
}

func (a *app) runCommand() *cobra.Command {
	var rf runFlags
	var format string
	var topK int
	cmd := &cobra.Command{
		Use:     "run TEXT",
		Short:   "Show the most likely next tokens after TEXT (- reads standard input)",
		Example: "  factlens run \"Michael Jordan plays the sport of\"\n  factlens run --top 20 --format json \"The Eiffel Tower is in\"",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			if topK < 1 {
				return usagef("--top must be at least 1")
			}
			text, err := a.readTextArg(args[0])
			if err != nil {
				return err
			}
			lm, err := a.loadModel(cmd.Context(), &rf)
			if err != nil {
				return err
			}
			defer lm.Close()
			ids, err := lm.encodePrompt(text)
			if err != nil {
				return err
			}
			res, err := lm.model.Run(cmd.Context(), [][]int{ids}, gpt2.RunOptions{Logits: gpt2.LogitsLast, PrependBOS: lm.prependBOS})
			if err != nil {
				return err
			}
			out := runResult{Model: lm.ck.Source.Ref, Commit: lm.ck.Source.Commit, Processing: lm.model.Processing.String(),
				Prompt: text, IDs: res.Tokens[0], Tokens: lm.tokenStrings(res.Tokens[0]),
				Top: topPredictions(res.Logits.Data, topK, lm.tok)}
			return renderResult(a.stdout, format, out, func() *report.Document {
				return &report.Document{Title: "Next token after " + report.Token(text), Provenance: lm.provenance(),
					Blocks: []report.Block{predictionTable(out.Top)}}
			})
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVarP(&format, "format", "f", "text", "output format: text, json, md or html")
	cmd.Flags().IntVarP(&topK, "top", "k", 10, "how many next tokens to show")
	return cmd
}
