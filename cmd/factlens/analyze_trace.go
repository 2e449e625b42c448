package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/cmd/factlens/report"
)

// traceSettings are what every causal trace of one invocation shares.
type traceSettings struct {
	Noise       float64  `json:"noise"`        // ν, the standard deviation of the embedding noise
	NoiseSource string   `json:"noise_source"` // how ν was chosen
	Samples     int      `json:"samples"`
	Window      int      `json:"window"`
	Seed        uint64   `json:"seed"`
	Kinds       []string `json:"kinds"`
}

func (s *traceSettings) provenance() report.Field {
	return report.Field{Key: "causal tracing", Value: fmt.Sprintf("noise ν = %.4g (%s); %s averaged; MLP and attention restored over windows of %s; seed %d",
		s.Noise, s.NoiseSource, plural(s.Samples, "noisy run"), layersWord(s.Window), s.Seed)}
}

// traceReport is what `factlens trace --format json TEXT` prints.
type traceReport struct {
	analysisHeader
	traceSettings
	Prompt  string                `json:"prompt"`
	Subject string                `json:"subject"`
	Trace   *analysis.TraceResult `json:"trace"`
}

// traceFactRow is one fact of a dataset trace.
type traceFactRow struct {
	ID            string  `json:"id"`
	Subject       string  `json:"subject"`
	Target        string  `json:"target"`
	CleanProb     float64 `json:"clean_prob"`
	CorruptedProb float64 `json:"corrupted_prob"`
	Correct       bool    `json:"correct"`
}

// traceDatasetReport is what `factlens trace --dataset … --format json` prints.
type traceDatasetReport struct {
	analysisHeader
	traceSettings
	Dataset datasetInfo             `json:"dataset"`
	Facts   []traceFactRow          `json:"facts"`
	Summary *analysis.TraceSummary  `json:"summary"`
	Traces  []*analysis.TraceResult `json:"traces"`
}

func (a *app) traceCommand() *cobra.Command {
	var rf runFlags
	var of outputFlags
	var df datasetFlags
	var target tokenFlag
	var subject, noiseFrom string
	var noiseStd, noiseScale float64
	var samples, window int
	var seed uint64
	var kinds []string
	cmd := &cobra.Command{
		Use:   "trace --subject SUBJECT TEXT | trace --dataset NAME",
		Short: "ROME causal tracing: which hidden states, MLPs and attention layers carry a fact",
		Long: `trace runs ROME's causal tracing. Gaussian noise of standard deviation ν is added to the token
embeddings of the subject (hook_embed, before the position embeddings), which lowers the probability
of the answer at the last position; then, for every token position and layer, the clean value of
one state is restored in the noisy runs: a block's output (hidden, blocks.L.hook_resid_post), or the
MLP or attention outputs of a window of layers centred on L. Each cell is the answer's probability
averaged over --samples noisy runs that share one seeded noise draw.

ν is 3σ (--noise-scale) where σ is the standard deviation of the token embeddings of a dataset's
subjects (ROME's collect_embedding_std): with --dataset that dataset's, otherwise --noise-from's
(ROME's known_1000 by default); --noise-std sets ν directly.

With --dataset, trace traces every kept fact (by default those the model predicts, as ROME does)
and averages the traces by token role (first, middle and last subject token, first subsequent
token, further tokens, last token): the average total effect (ATE) and the average indirect effect
(AIE) of every restoration, by layer.`,
		Example: "  factlens trace --subject \"Michael Jordan\" --target \" basketball\" \"Michael Jordan plays the sport of\"\n" +
			"  factlens trace --subject \"Eiffel Tower\" --noise-std 0.1 --format html --out trace.html \"The Eiffel Tower is in\"\n" +
			"  factlens trace --dataset rome --limit 50 --format html --out rome.html\n" +
			"  factlens trace --dataset sport --filter p50 --window 5",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := of.check(); err != nil {
				return err
			}
			if (df.name == "") == (len(args) == 0) {
				return usagef("give either TEXT (with --subject) or --dataset, not both or neither")
			}
			if df.name == "" && subject == "" {
				return usagef("--subject is required to trace TEXT: it names the tokens the noise corrupts")
			}
			if df.name != "" && (subject != "" || cmd.Flags().Changed("target") || cmd.Flags().Changed("target-id")) {
				return usagef("--subject and --target apply to TEXT; a dataset brings its own subjects and targets")
			}
			if samples < 1 || window < 0 || noiseStd < 0 || noiseScale <= 0 {
				return usagef("--samples must be at least 1, --window and --noise-std not negative, --noise-scale positive")
			}
			opts := analysis.TraceOptions{Samples: samples, Window: window, Seed: seed}
			for _, k := range kinds {
				kind := analysis.TraceKind(k)
				if kind != analysis.TraceHidden && kind != analysis.TraceMLP && kind != analysis.TraceAttn {
					return usagef("unknown --kinds entry %q (want hidden, mlp or attn)", k)
				}
				opts.Kinds = append(opts.Kinds, kind)
			}
			ctx := cmd.Context()
			lm, err := a.loadModel(ctx, &rf)
			if err != nil {
				return err
			}
			defer lm.Close()
			opts.Tokenizer = lm.tok
			if opts.Window == 0 {
				opts.Window = analysis.DefaultWindow(lm.model.NLayer())
			}
			settings := traceSettings{Samples: samples, Window: opts.Window, Seed: seed, Kinds: kinds}
			if settings.Kinds == nil {
				settings.Kinds = []string{"hidden", "mlp", "attn"}
			}
			noise := func(name string, subjects []string) error {
				if noiseStd > 0 {
					settings.Noise, settings.NoiseSource = noiseStd, "--noise-std"
					return nil
				}
				std, err := analysis.EmbeddingStd(lm.model, lm.tok, subjects)
				if err != nil {
					return err
				}
				settings.Noise = noiseScale * std
				settings.NoiseSource = fmt.Sprintf("%g × σ = %.4g, the standard deviation of the token embeddings of the %d subjects of %s", noiseScale, std, len(subjects), name)
				return nil
			}
			if df.name != "" {
				sel, err := a.selectFacts(ctx, lm, &df, seed)
				if err != nil {
					return err
				}
				if err := noise(df.name, factSubjects(sel.all)); err != nil {
					return err
				}
				opts.Noise = settings.Noise
				res, err := a.traceDataset(ctx, lm, sel, opts, settings)
				if err != nil {
					return err
				}
				return a.emit(&of, res, func() *report.Document { return traceDatasetDocument(res, lm.provenance()) })
			}

			text, err := a.readTextArg(args[0])
			if err != nil {
				return err
			}
			at := strings.Index(text, subject)
			if at < 0 {
				return usagef("--subject %q does not occur in the prompt %q", subject, text)
			}
			tgt, err := target.resolve(cmd, lm)
			if err != nil {
				return err
			}
			fact := analysis.Fact{Subject: subject, Prompt: text[:at] + "{}" + text[at+len(subject):], Target: " ?"}
			prompt, err := analysis.BuildPrompt(lm.tok, fact, analysis.PromptOptions{PrependBOS: lm.prependBOS})
			if err != nil {
				return err
			}
			if err := lm.checkIDs(prompt.Tokens[boolToInt(lm.prependBOS):]); err != nil {
				return err
			}
			if noiseStd == 0 {
				facts, _, _, err := loadDataset(noiseFrom, df.factsDir)
				if err != nil {
					return fmt.Errorf("choosing the noise level: %w (or set it with --noise-std)", err)
				}
				if err := noise(noiseFrom, factSubjects(facts)); err != nil {
					return err
				}
			} else if err := noise("", nil); err != nil {
				return err
			}
			opts.Noise = settings.Noise
			start := time.Now()
			tr, err := analysis.CausalTrace(ctx, lm.model, prompt.Tokens, prompt.SubjectStart, prompt.SubjectEnd, tgt, opts)
			if err != nil {
				return err
			}
			a.timing("causal trace", start)
			res := &traceReport{analysisHeader: lm.header(), traceSettings: settings, Prompt: text, Subject: subject, Trace: tr}
			return a.emit(&of, res, func() *report.Document { return traceDocument(res, lm.provenance()) })
		},
	}
	rf.register(cmd)
	of.register(cmd)
	df.register(cmd, filterCorrect, "trace a dataset instead of TEXT")
	target.register(cmd, "target", "the answer whose probability is traced", "the model's top next token, as ROME")
	fl := cmd.Flags()
	fl.StringVar(&subject, "subject", "", "the subject in TEXT whose token embeddings are corrupted (its first occurrence)")
	fl.Float64Var(&noiseStd, "noise-std", 0, "ν, the standard deviation of the embedding noise (default: --noise-scale × σ of a dataset's subject embeddings)")
	fl.Float64Var(&noiseScale, "noise-scale", 3, "ν as a multiple of σ, the subjects' embedding standard deviation (ROME's s3)")
	fl.StringVar(&noiseFrom, "noise-from", "rome", "the dataset whose subjects give σ when tracing TEXT")
	fl.IntVar(&samples, "samples", 10, "noisy runs averaged per cell")
	fl.IntVar(&window, "window", 0, "layers restored together for mlp and attn (default: ROME's 10 of 48 scaled to the model, 3 for GPT-2 small)")
	fl.Uint64Var(&seed, "seed", 1, "seed of the noise and of the dataset sample")
	fl.StringSliceVar(&kinds, "kinds", nil, "what to restore (default all): hidden, mlp, attn")
	return cmd
}

func boolToInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func factSubjects(facts []analysis.Fact) []string {
	out := make([]string, len(facts))
	for i, f := range facts {
		out[i] = f.Subject
	}
	return out
}

func (a *app) traceDataset(ctx context.Context, lm *loadedModel, sel *selectedFacts, opts analysis.TraceOptions, settings traceSettings) (*traceDatasetReport, error) {
	res := &traceDatasetReport{analysisHeader: lm.header(), traceSettings: settings, Dataset: sel.info}
	bar := a.newBar(len(sel.prompts), "causal tracing")
	start := time.Now()
	for _, p := range sel.prompts {
		tr, err := analysis.TracePrompt(ctx, lm.model, p, opts)
		if err != nil {
			return nil, fmt.Errorf("fact %s (%s): %w", p.Fact.ID, p.Fact.Subject, err)
		}
		res.Traces = append(res.Traces, tr)
		res.Facts = append(res.Facts, traceFactRow{ID: p.Fact.ID, Subject: p.Fact.Subject, Target: lm.tok.Token(p.Target),
			CleanProb: tr.CleanProb, CorruptedProb: tr.CorruptedProb, Correct: tr.Correct})
		step(bar)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	a.timing(fmt.Sprintf("causal traces of %d facts", len(sel.prompts)), start)
	// The filter already chose the facts; the summary averages all of them.
	var err error
	if res.Summary, err = analysis.SummarizeTraces(res.Traces, false); err != nil {
		return nil, err
	}
	return res, nil
}

// traceKindInfo names a kind's hook and what its rows restore.
func traceKindInfo(kind string, window int) (title, restores string) {
	switch kind {
	case "hidden":
		return "Hidden states", "the block's output (blocks.L.hook_resid_post)"
	case "mlp":
		return "MLP", fmt.Sprintf("the MLP outputs (blocks.L.hook_mlp_out) of a window of %s centred on L", layersWord(window))
	}
	return "Attention", fmt.Sprintf("the attention outputs (blocks.L.hook_attn_out) of a window of %s centred on L", layersWord(window))
}

func traceDocument(r *traceReport, prov []report.Field) *report.Document {
	t := r.Trace
	answer := report.Token(t.TargetToken)
	doc := &report.Document{Title: fmt.Sprintf("Causal trace of %s → %s", report.Token(r.Prompt), answer),
		Provenance: append(prov, report.Field{Key: "subject", Value: fmt.Sprintf("%s, tokens %d..%d (marked *)", report.Token(r.Subject), t.SubjectStart, t.SubjectEnd-1)}, r.provenance())}
	top := ""
	if !t.Correct {
		top = " The model's own top token is a different one (id " + fmt.Sprint(t.CleanTop) + ")."
	}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf(
		"P(%s) at the last position: %.4f clean, %.4f with the subject corrupted (total effect %.4f).%s "+
			"Each cell below is P(%s) with one clean state restored in the corrupted runs; its indirect effect is the cell minus %.4f.",
		answer, t.CleanProb, t.CorruptedProb, t.TotalEffect(), top, answer, t.CorruptedProb)})
	rows := positionLabels(t.Strs, func(p int) bool { return p >= t.SubjectStart && p < t.SubjectEnd })
	for _, kind := range r.Kinds {
		g, ok := t.Scores[analysis.TraceKind(kind)]
		if !ok {
			continue
		}
		title, restores := traceKindInfo(kind, t.Window)
		doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: title},
			&report.Heatmap{Caption: fmt.Sprintf("P(%s) restoring %s (positions × layers); clean %.4f, corrupted %.4f", answer, restores, t.CleanProb, t.CorruptedProb),
				RowLabels: rows, ColLabels: layerLabels(len(g[0])), Values: g, Digits: 4})
	}
	return doc
}

func traceDatasetDocument(r *traceDatasetReport, prov []report.Field) *report.Document {
	s := r.Summary
	prov = append(prov, r.Dataset.provenance()...)
	doc := &report.Document{Title: "Causal tracing of " + r.Dataset.Name, Provenance: append(prov, r.provenance())}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf(
		"%d facts traced. Mean P(answer): %.4f clean, %.4f with the subject corrupted: average total effect (ATE) %.4f. "+
			"Average indirect effects (AIE) are the mean restored probability minus %.4f, averaged over every (fact, position) of a token role.",
		s.Facts, s.MeanClean, s.MeanCorrupted, s.ATE, s.MeanCorrupted)})
	counts := &report.Table{Caption: "Token roles and the (fact, position) samples in each", Header: []string{"token role", "samples"}, NumericCols: []int{1}}
	for b, name := range s.Buckets {
		counts.Rows = append(counts.Rows, []string{name, fmt.Sprint(s.Counts[b])})
	}
	peaks := &report.Table{Caption: "Largest average indirect effect of each kind", Header: []string{"kind", "token role", "layer", "AIE"}, NumericCols: []int{2, 3}}
	doc.Blocks = append(doc.Blocks, counts)
	for _, kind := range r.Kinds {
		k := analysis.TraceKind(kind)
		aie, ok := s.AIE[k]
		if !ok {
			continue
		}
		title, restores := traceKindInfo(kind, r.Window)
		L := len(aie[0])
		x := make([]float64, L)
		for l := range x {
			x[l] = float64(l)
		}
		var series []report.Series
		var rows []string
		var vals [][]float64
		for b, name := range s.Buckets {
			if s.Counts[b] == 0 {
				continue
			}
			series = append(series, report.Series{Name: name, Y: aie[b]})
			rows = append(rows, name)
			vals = append(vals, aie[b])
		}
		doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: title},
			&report.Lines{Caption: "AIE by layer restoring " + restores, XLabel: "layer", YLabel: "AIE", X: x, Series: series},
			&report.Heatmap{Caption: "AIE by token role (token roles × layers)", RowLabels: rows, ColLabels: layerLabels(L), Values: vals, Diverging: true, Digits: 4})
		pk := s.Peak[k]
		peaks.Rows = append(peaks.Rows, []string{kind, pk.Bucket, fmt.Sprint(pk.Layer), fmt.Sprintf("%.4f", pk.AIE)})
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Peaks"}, peaks)
	facts := &report.Table{Header: []string{"id", "subject", "answer", "P clean", "P corrupted", "top-1"}, NumericCols: []int{3, 4}}
	for _, f := range r.Facts {
		facts.Rows = append(facts.Rows, []string{f.ID, f.Subject, report.Token(f.Target), fmt.Sprintf("%.4f", f.CleanProb),
			fmt.Sprintf("%.4f", f.CorruptedProb), map[bool]string{true: "yes", false: "no"}[f.Correct]})
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Facts"}, facts)
	return doc
}

func layersWord(n int) string { return plural(n, "layer") }

// plural writes "1 layer", "3 layers".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
