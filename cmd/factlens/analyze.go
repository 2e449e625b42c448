package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/gpt2"
)

// This file holds what the fact-recall analysis commands (dla, trace, patch,
// neurons, conjunction, probe) share: output flags, target and contrast
// tokens, prompts with the optional BOS, and the fact datasets with their
// filter and seeded subsample.

// analysisHeader names, in every analysis' JSON, what produced its numbers.
type analysisHeader struct {
	Model      string `json:"model"`
	Repo       string `json:"repo,omitempty"`
	Revision   string `json:"revision,omitempty"`
	Commit     string `json:"commit,omitempty"`
	Processing string `json:"processing"`
	PrependBOS bool   `json:"prepend_bos"`
}

func (lm *loadedModel) header() analysisHeader {
	src := lm.ck.Source
	return analysisHeader{Model: src.Ref, Repo: src.Repo, Revision: src.Revision, Commit: src.Commit,
		Processing: lm.model.Processing.String(), PrependBOS: lm.prependBOS}
}

// outputFlags are --format and --out.
type outputFlags struct {
	format string
	out    string
}

func (f *outputFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.format, "format", "f", "text", "output format: text, json, md or html")
	cmd.Flags().StringVarP(&f.out, "out", "o", "", "write the report to this file instead of standard output")
}

func (f *outputFlags) check() error { return checkFormat(f.format, "text", "json", "md", "html") }

// emit renders result (JSON) or doc() (a report) to --out or stdout.
func (a *app) emit(f *outputFlags, result any, doc func() *report.Document) error {
	return writeOutput(a.stdout, f.out, func(w io.Writer) error { return renderResult(w, f.format, result, doc) })
}

// tokenFlag is a token given either as text (--target " basketball") or as
// an id (--target-id 9669).
type tokenFlag struct {
	name string
	text string
	id   int
}

// register adds --name and --name-id; what says what the token is, dflt
// what happens without either ("" for nothing to say).
func (f *tokenFlag) register(cmd *cobra.Command, name, what, dflt string) {
	f.name = name
	if dflt != "" {
		dflt = "; default: " + dflt
	}
	cmd.Flags().StringVar(&f.text, name, "", what+`, as text that is one GPT-2 token, usually with its leading space (" basketball")`+dflt)
	cmd.Flags().IntVar(&f.id, name+"-id", 0, "--"+name+" as a token id")
	cmd.MarkFlagsMutuallyExclusive(name, name+"-id")
}

// resolve returns the token id, or -1 when neither flag was given.
func (f *tokenFlag) resolve(cmd *cobra.Command, lm *loadedModel) (int, error) {
	switch {
	case cmd.Flags().Changed(f.name + "-id"):
		if f.id < 0 || f.id >= lm.model.VocabSize() {
			return -1, usagef("--%s-id %d is outside the vocabulary (0..%d)", f.name, f.id, lm.model.VocabSize()-1)
		}
		return f.id, nil
	case cmd.Flags().Changed(f.name):
		ids := lm.tok.Encode(f.text)
		if len(ids) == 1 {
			return ids[0], nil
		}
		hint := ""
		if !strings.HasPrefix(f.text, " ") && len(lm.tok.Encode(" "+f.text)) == 1 {
			hint = fmt.Sprintf(`; %q (with a leading space) is one token`, " "+f.text)
		}
		return -1, usagef("--%s %q is %d tokens (%s), not one%s; pass a single token or --%s-id",
			f.name, f.text, len(ids), tokenList(lm, ids), hint, f.name)
	}
	return -1, nil
}

// tokenList shows token ids as their quoted text: 'bas' 'ketball'.
func tokenList(lm *loadedModel, ids []int) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = report.Token(lm.tok.Token(id))
	}
	return strings.Join(parts, " ")
}

// promptTokens tokenizes text for the analyses, which take the exact tokens
// the model runs: with --prepend-bos, <|endoftext|> is position 0.
func (lm *loadedModel) promptTokens(text string) ([]int, error) {
	ids, err := lm.encodePrompt(text)
	if err != nil {
		return nil, err
	}
	if lm.prependBOS {
		eot := lm.tok.EOT()
		if eot < 0 {
			return nil, fmt.Errorf("--prepend-bos: the tokenizer has no <|endoftext|> token")
		}
		ids = append([]int{eot}, ids...)
	}
	return ids, nil
}

// topToken is the model's most likely next token after tokens.
func (lm *loadedModel) topToken(ctx context.Context, tokens []int) (int, error) {
	res, err := lm.model.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Logits: gpt2.LogitsLast})
	if err != nil {
		return -1, err
	}
	return topPredictions(res.Logits.Data, 1, lm.tok)[0].ID, nil
}

// positionLabels labels positions "3 ' Jordan'"; marked positions get a
// trailing "*" (ROME marks the subject's tokens so).
func positionLabels(strs []string, marked func(p int) bool) []string {
	out := make([]string, len(strs))
	for p, s := range strs {
		out[p] = fmt.Sprintf("%d %s", p, report.Token(s))
		if marked != nil && marked(p) {
			out[p] += "*"
		}
	}
	return out
}

func layerLabels(n int) []string {
	out := make([]string, n)
	for l := range out {
		out[l] = fmt.Sprintf("L%d", l)
	}
	return out
}

func neuronName(layer, neuron int) string { return fmt.Sprintf("L%dN%d", layer, neuron) }

// parseIntList parses "1,2,4" (spaces allowed).
func parseIntList(flag, s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, err := strconv.Atoi(part)
		if err != nil {
			return nil, usagef("--%s: %q is not an integer", flag, part)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, usagef("--%s is empty", flag)
	}
	return out, nil
}

// parseLayers parses "all" or a comma-separated list of layers.
func parseLayers(flag, s string, nLayer int) ([]int, error) {
	if strings.TrimSpace(s) == "all" {
		ls := make([]int, nLayer)
		for l := range ls {
			ls[l] = l
		}
		return ls, nil
	}
	ls, err := parseIntList(flag, s)
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		if l < 0 || l >= nLayer {
			return nil, usagef("--%s %d is outside the model's layers 0..%d", flag, l, nLayer-1)
		}
	}
	return ls, nil
}

// Datasets.

// defaultFactsDir is where the fact datasets live beside the repository.
const defaultFactsDir = "../shared/data/facts"

// Filters: which facts of a dataset an analysis keeps.
const (
	filterCorrect = "correct" // ROME: greedy next token = target's first token
	filterP50     = "p50"     // Fact Finding: P(target's first token) > 0.5
	filterNone    = "none"
)

func filterDescription(f string) string {
	switch f {
	case filterCorrect:
		return "the model's greedy next token is the target's first token (ROME)"
	case filterP50:
		return "P(target's first token) > 0.5 (Fact Finding)"
	}
	return "every fact"
}

// datasetFlags select facts: a dataset, the filter, and a seeded subsample.
type datasetFlags struct {
	name     string
	factsDir string
	filter   string
	limit    int
}

func (f *datasetFlags) register(cmd *cobra.Command, defaultFilter, usage string) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "dataset", "", usage+": sport (LRE person_plays_pro_sport), rome (ROME known_1000), lre:RELATION (any LRE relation file), or a .jsonl file of facts")
	fl.StringVar(&f.factsDir, "facts-dir", defaultFactsDir, "folder holding the built-in datasets (lre/ and rome/), relative to the working directory")
	fl.StringVar(&f.filter, "filter", defaultFilter, "keep facts the model knows: correct (greedy top-1 is the target, as ROME), p50 (target probability > 0.5, as Fact Finding) or none")
	fl.IntVar(&f.limit, "limit", 0, "analyse at most this many of the kept facts, a seeded random sample (0: all)")
}

// datasetInfo states, in reports, which facts an analysis ran on.
type datasetInfo struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	Template string `json:"template,omitempty"` // the prompt, when every fact shares one
	Total    int    `json:"total"`              // facts in the file
	Filter   string `json:"filter"`
	Kept     int    `json:"kept"` // facts passing the filter
	Limit    int    `json:"limit,omitempty"`
	Seed     uint64 `json:"seed"`
	Used     int    `json:"used"` // facts analysed
}

func (d *datasetInfo) provenance() []report.Field {
	ds := fmt.Sprintf("%s — %s (%d facts)", d.Name, d.Path, d.Total)
	if d.Template != "" {
		ds += fmt.Sprintf(", prompt %q", d.Template)
	}
	sample := fmt.Sprintf("all %d kept facts", d.Kept)
	if d.Used < d.Kept {
		sample = fmt.Sprintf("%d of %d kept facts, drawn with seed %d", d.Used, d.Kept, d.Seed)
	}
	return []report.Field{
		{Key: "dataset", Value: ds},
		{Key: "filter", Value: fmt.Sprintf("%s — %s: %d of %d facts kept", d.Filter, filterDescription(d.Filter), d.Kept, d.Total)},
		{Key: "sample", Value: sample},
	}
}

// datasetPath resolves a dataset name to its file; builtin tells whether it
// came from --facts-dir.
func datasetPath(name, factsDir string) (path string, builtin bool, err error) {
	var rel string
	switch {
	case name == "sport":
		rel = filepath.Join("lre", "person_plays_pro_sport.json")
	case name == "rome":
		rel = filepath.Join("rome", "known_1000.json")
	case strings.HasPrefix(name, "lre:"):
		rel = filepath.Join("lre", strings.TrimPrefix(name, "lre:")+".json")
	default:
		if strings.HasSuffix(name, ".jsonl") || fileExists(name) {
			return name, false, nil
		}
		return "", false, usagef("unknown --dataset %q: want sport, rome, lre:RELATION or a .jsonl file of facts", name)
	}
	if st, err := os.Stat(factsDir); err != nil || !st.IsDir() {
		wd, _ := os.Getwd()
		return "", true, fmt.Errorf("dataset %s needs the facts folder, but %s is not a folder (relative to %s); pass --facts-dir DIR, the folder holding lre/ and rome/", name, factsDir, wd)
	}
	return filepath.Join(factsDir, rel), true, nil
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

// loadDataset reads a dataset's facts and, for an LRE relation, its template.
func loadDataset(name, factsDir string) (facts []analysis.Fact, path, template string, err error) {
	path, _, err = datasetPath(name, factsDir)
	if err != nil {
		return nil, "", "", err
	}
	switch {
	case name == "rome":
		facts, err = analysis.LoadKnownFacts(path)
	case name == "sport" || strings.HasPrefix(name, "lre:"):
		var rel *analysis.Relation
		if rel, err = analysis.LoadRelation(path); err != nil {
			if errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(name, "lre:") {
				return nil, "", "", usagef("no LRE relation %q: %s does not exist", strings.TrimPrefix(name, "lre:"), path)
			}
			return nil, "", "", err
		}
		template = rel.PromptTemplates[0]
		facts, err = rel.Facts(0)
	default:
		var f *os.File
		if f, err = os.Open(path); err != nil {
			return nil, "", "", err
		}
		defer f.Close()
		facts, err = analysis.ReadFactsJSONL(f)
		if err != nil {
			err = fmt.Errorf("%s: %w", path, err)
		}
	}
	if err != nil {
		return nil, "", "", err
	}
	if len(facts) == 0 {
		return nil, "", "", fmt.Errorf("dataset %s (%s) has no facts", name, path)
	}
	if template == "" {
		template = facts[0].Prompt
		for _, f := range facts {
			if f.Prompt != template {
				template = ""
				break
			}
		}
	}
	return facts, path, template, nil
}

// selectedFacts are a dataset's facts after the filter and the subsample,
// tokenized for the model, with their scores (nil under filter none).
type selectedFacts struct {
	info    datasetInfo
	prompts []*analysis.Prompt
	scores  []analysis.FactScore
	all     []analysis.Fact // every fact of the file, before filtering
}

// selectFacts loads, tokenizes, filters and subsamples a dataset.
func (a *app) selectFacts(ctx context.Context, lm *loadedModel, f *datasetFlags, seed uint64) (*selectedFacts, error) {
	switch f.filter {
	case filterCorrect, filterP50, filterNone:
	default:
		return nil, usagef("unknown --filter %q (want correct, p50 or none)", f.filter)
	}
	if f.limit < 0 {
		return nil, usagef("--limit must not be negative")
	}
	start := time.Now()
	facts, path, template, err := loadDataset(f.name, f.factsDir)
	if err != nil {
		return nil, err
	}
	sel := &selectedFacts{all: facts, info: datasetInfo{Name: f.name, Path: path, Template: template, Total: len(facts),
		Filter: f.filter, Limit: f.limit, Seed: seed}}
	prompts := make([]*analysis.Prompt, len(facts))
	for i, fact := range facts {
		if prompts[i], err = analysis.BuildPrompt(lm.tok, fact, analysis.PromptOptions{PrependBOS: lm.prependBOS}); err != nil {
			return nil, err
		}
		if n := len(prompts[i].Tokens); n > lm.model.NCtx() {
			return nil, fmt.Errorf("dataset %s fact %s is %d tokens long; %s takes at most %d", f.name, fact.ID, n, lm.ck.Source.Ref, lm.model.NCtx())
		}
	}
	var scores []analysis.FactScore
	if f.filter != filterNone {
		if scores, err = analysis.ScoreFacts(ctx, lm.model, prompts); err != nil {
			return nil, err
		}
	}
	var kept []int
	for i := range prompts {
		switch {
		case f.filter == filterCorrect && !scores[i].Correct():
		case f.filter == filterP50 && !(scores[i].TargetProb > 0.5):
		default:
			kept = append(kept, i)
		}
	}
	sel.info.Kept = len(kept)
	if f.limit > 0 && f.limit < len(kept) {
		rng := rand.New(rand.NewPCG(seed, 0xda7a5e7))
		pick := rng.Perm(len(kept))[:f.limit]
		slices.Sort(pick)
		sub := make([]int, len(pick))
		for i, j := range pick {
			sub[i] = kept[j]
		}
		kept = sub
	}
	for _, i := range kept {
		sel.prompts = append(sel.prompts, prompts[i])
		if scores != nil {
			sel.scores = append(sel.scores, scores[i])
		}
	}
	sel.info.Used = len(kept)
	a.timing("load and filter "+f.name, start)
	if len(kept) == 0 {
		return nil, fmt.Errorf("no fact of %s passes --filter %s (%s) among its %d; try --filter none", f.name, f.filter, filterDescription(f.filter), len(facts))
	}
	return sel, nil
}
