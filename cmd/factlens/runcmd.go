package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

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

	// With --generate: the new tokens (not the prompt), their text, and how
	// they were chosen.
	GeneratedIDs    []int           `json:"generated_ids,omitempty"`
	GeneratedText   string          `json:"generated_text,omitempty"`
	GeneratedTokens []string        `json:"generated_tokens,omitempty"`
	Generation      *generationInfo `json:"generation,omitempty"`
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
	var gf generateFlags
	cmd := &cobra.Command{
		Use:   "run TEXT",
		Short: "Show the most likely next tokens after TEXT, or continue it with --generate (- reads standard input)",
		Example: "  factlens run \"Michael Jordan plays the sport of\"\n  factlens run --top 20 --format json \"The Eiffel Tower is in\"\n" +
			"  factlens run --generate 20 \"The Eiffel Tower is in\"\n  factlens run --generate 40 --temperature 0.8 --top-p 0.95 --seed 7 \"Once upon a time\"",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			if topK < 1 {
				return usagef("--top must be at least 1")
			}
			if err := gf.check(cmd); err != nil {
				return err
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
			if gf.n > 0 {
				return a.generate(cmd, lm, text, ids, &gf, topK, format)
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
	gf.register(cmd)
	return cmd
}

// generateFlags are run's text generation flags.
type generateFlags struct {
	n           int
	temperature float64
	topK        int
	topP        float64
	seed        uint64
	stopAtEOT   bool
}

func (f *generateFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.IntVar(&f.n, "generate", 0, "continue the prompt by up to N tokens (KV-cached; batch of one)")
	fl.Float64Var(&f.temperature, "temperature", 0, "with --generate: sampling temperature; 0 decodes greedily")
	fl.IntVar(&f.topK, "top-k-sample", 0, "with --generate: sample only among the K most likely tokens (0: all; needs --temperature)")
	fl.Float64Var(&f.topP, "top-p", 0, "with --generate: nucleus sampling, keep the most likely tokens up to probability P (0 or 1: all; needs --temperature)")
	fl.Uint64Var(&f.seed, "seed", 0, "with --generate: seed of the sampler (same seed, same tokens)")
	fl.BoolVar(&f.stopAtEOT, "stop-at-eot", true, "with --generate: stop after <|endoftext|> (the config's eos_token_id)")
}

// check rejects generation flags that cannot take effect.
func (f *generateFlags) check(cmd *cobra.Command) error {
	if f.n < 0 {
		return usagef("--generate must be at least 1 (or 0 for no generation)")
	}
	if f.n == 0 {
		for _, name := range []string{"temperature", "top-k-sample", "top-p", "seed", "stop-at-eot"} {
			if cmd.Flags().Changed(name) {
				return usagef("--%s needs --generate N", name)
			}
		}
		return nil
	}
	switch {
	case !(f.temperature >= 0) || math.IsInf(f.temperature, 0):
		return usagef("--temperature must be a finite number ≥ 0 (0 decodes greedily)")
	case f.topK < 0:
		return usagef("--top-k-sample must be ≥ 0")
	case !(f.topP >= 0 && f.topP <= 1):
		return usagef("--top-p must be between 0 and 1")
	case f.temperature == 0 && (f.topK > 0 || f.topP > 0):
		return usagef("--top-k-sample and --top-p shape sampling: add --temperature (e.g. 1); without it decoding is greedy")
	case f.temperature == 0 && cmd.Flags().Changed("seed"):
		return usagef("--seed seeds sampling: add --temperature (e.g. 1); without it decoding is greedy")
	}
	return nil
}

func (f *generateFlags) options(prependBOS bool) gpt2.GenerateOptions {
	return gpt2.GenerateOptions{MaxNewTokens: f.n, Temperature: f.temperature, TopK: f.topK, TopP: f.topP,
		Seed: f.seed, StopAtEOT: f.stopAtEOT, PrependBOS: prependBOS}
}

// describe names the decoding for reports.
func (f *generateFlags) describe() string {
	if f.temperature == 0 {
		return "greedy"
	}
	s := fmt.Sprintf("sampled: temperature %g", f.temperature)
	if f.topK > 0 {
		s += fmt.Sprintf(", top-k %d", f.topK)
	}
	if f.topP > 0 && f.topP < 1 {
		s += fmt.Sprintf(", top-p %g", f.topP)
	}
	return s + fmt.Sprintf(", seed %d", f.seed)
}

// generationInfo records how the continuation was made.
type generationInfo struct {
	MaxNewTokens int     `json:"max_new_tokens"`
	Temperature  float64 `json:"temperature"`
	TopK         int     `json:"top_k"`
	TopP         float64 `json:"top_p"`
	Seed         uint64  `json:"seed"`
	StopAtEOT    bool    `json:"stop_at_eot"`
	StoppedAtEOT bool    `json:"stopped_at_eot"`
	// Probs are the model's probabilities of each generated token (softmax
	// of the logits, before temperature and filtering).
	Probs []float64 `json:"probs"`
}

// generate continues the prompt and renders the next-token table of the
// prompt followed by the continuation.
func (a *app) generate(cmd *cobra.Command, lm *loadedModel, text string, ids []int, gf *generateFlags, topK int, format string) error {
	seq := ids
	if lm.prependBOS {
		seq = append([]int{lm.model.Config.BOSTokenID}, ids...)
	}
	if n := len(seq) + gf.n; n > lm.model.NCtx() {
		return fmt.Errorf("prompt is %d tokens long; with --generate %d that is %d positions, but %s takes at most %d",
			len(seq), gf.n, n, lm.ck.Source.Ref, lm.model.NCtx())
	}
	info := &generationInfo{MaxNewTokens: gf.n, Temperature: gf.temperature, TopK: gf.topK, TopP: gf.topP,
		Seed: gf.seed, StopAtEOT: gf.stopAtEOT}
	var top []prediction
	opts := gf.options(lm.prependBOS)
	opts.OnToken = func(step, id int, logits []float32) error {
		if step == 0 {
			top = topPredictions(logits, topK, lm.tok)
		}
		info.Probs = append(info.Probs, softmaxAt(logits, id))
		return nil
	}
	start := time.Now()
	gen, err := lm.model.Generate(cmd.Context(), ids, opts)
	if err != nil {
		return err
	}
	a.timing(fmt.Sprintf("generate %d tokens", len(gen)), start)
	info.StoppedAtEOT = gf.stopAtEOT && len(gen) > 0 && gen[len(gen)-1] == lm.model.Config.EOSTokenID
	genText, err := lm.tok.Decode(gen)
	if err != nil {
		return fmt.Errorf("generated ids %v: %w", gen, err)
	}
	out := runResult{Model: lm.ck.Source.Ref, Commit: lm.ck.Source.Commit, Processing: lm.model.Processing.String(),
		Prompt: text, IDs: seq, Tokens: lm.tokenStrings(seq), Top: top,
		GeneratedIDs: gen, GeneratedText: genText, GeneratedTokens: lm.tokenStrings(gen), Generation: info}
	return renderResult(a.stdout, format, out, func() *report.Document {
		steps := &report.Table{Caption: "Generated tokens (prob: the model's, before temperature and filtering)",
			Header: []string{"step", "token", "id", "prob"}, NumericCols: []int{0, 2, 3}}
		for i, id := range gen {
			steps.Rows = append(steps.Rows, []string{fmt.Sprint(i + 1), report.Token(out.GeneratedTokens[i]),
				fmt.Sprint(id), fmt.Sprintf("%.4g", info.Probs[i])})
		}
		ending := fmt.Sprintf("%d new tokens (the --generate limit).", len(gen))
		if info.StoppedAtEOT {
			ending = fmt.Sprintf("%d new tokens, the last of them <|endoftext|>.", len(gen))
		}
		prov := append(lm.provenance(), report.Field{Key: "generation", Value: gf.describe()})
		return &report.Document{Title: "Continuation of " + report.Token(text), Provenance: prov,
			Blocks: []report.Block{
				&report.Paragraph{Text: report.Token(text) + " → " + report.Token(genText)},
				&report.Paragraph{Text: ending + " Ids: " + joinInts(gen)},
				steps,
				&report.Heading{Level: 2, Text: "Next token after the prompt"},
				predictionTable(out.Top),
			}}
	})
}

// softmaxAt returns the softmax probability of logits[id], in float64.
func softmaxAt(logits []float32, id int) float64 {
	maxv := math.Inf(-1)
	for _, v := range logits {
		maxv = math.Max(maxv, float64(v))
	}
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v) - maxv)
	}
	return math.Exp(float64(logits[id])-maxv) / z
}

func joinInts(ids []int) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, " ")
}
