package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

type tokenizeResult struct {
	IDs    []int    `json:"ids"`
	Tokens []string `json:"tokens"`
}

func (a *app) tokenizeCommand() *cobra.Command {
	var mf modelFlags
	var format string
	var special bool
	cmd := &cobra.Command{
		Use:   "tokenize TEXT",
		Short: "Show GPT-2 token ids and token strings for TEXT (- reads standard input)",
		Example: "  factlens tokenize \"Michael Jordan plays the sport of\"\n" +
			"  printf ' two spaces\\n' | factlens tokenize --format json -",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			text, err := a.readTextArg(args[0])
			if err != nil {
				return err
			}
			src, err := weights.Resolve(cmd.Context(), a.hub(), mf.model, mf.revision)
			if err != nil {
				return err
			}
			tok, err := gpt2.LoadTokenizer(src.Dir)
			if err != nil {
				return err
			}
			ids := tok.Encode(text)
			if special {
				ids = tok.EncodeSpecial(text)
			}
			res := tokenizeResult{IDs: ids, Tokens: make([]string, len(ids))}
			for i, id := range ids {
				res.Tokens[i] = tok.Token(id)
			}
			return renderResult(a.stdout, format, res, func() *report.Document {
				t := &report.Table{Header: []string{"pos", "id", "token"}, NumericCols: []int{0, 1}}
				for i, id := range res.IDs {
					t.Rows = append(t.Rows, []string{fmt.Sprint(i), fmt.Sprint(id), report.Token(res.Tokens[i])})
				}
				return &report.Document{Title: fmt.Sprintf("Tokens (%d)", len(ids)), Provenance: sourceFields(*src), Blocks: []report.Block{t}}
			})
		},
	}
	mf.register(cmd)
	cmd.Flags().StringVarP(&format, "format", "f", "text", "output format: text, json, md or html")
	cmd.Flags().BoolVar(&special, "special", false, "treat <|endoftext|> in TEXT as the special token 50256")
	return cmd
}
