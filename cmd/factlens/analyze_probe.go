package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/cmd/factlens/report"
)

// probeLayer is the sparse-probing sweep of one layer.
type probeLayer struct {
	Layer  int                   `json:"layer"`
	Result *analysis.ProbeResult `json:"result"`
}

// probeReport is what `factlens probe --format json` prints.
type probeReport struct {
	analysisHeader
	Dataset  datasetInfo  `json:"dataset"`
	Point    string       `json:"point"`
	Position string       `json:"position"`
	Classes  []string     `json:"classes"`
	Counts   []int        `json:"counts"` // examples per class
	Layers   []probeLayer `json:"layers"`
	ShowK    int          `json:"show_k"`
}

func (a *app) probeCommand() *cobra.Command {
	var rf runFlags
	var of outputFlags
	var df datasetFlags
	var layersFlag, position, point, ksFlag string
	var l2, testFraction float64
	var seed uint64
	var showK int
	cmd := &cobra.Command{
		Use:   "probe --dataset NAME",
		Short: "Sparse probing: how well k neurons of a layer predict each fact's answer",
		Long: `probe reads one activation vector per fact (by default every MLP neuron, blocks.L.mlp.hook_post,
at the last subject token) and fits k-sparse logistic probes as Gurnee et al. do: on a stratified,
seeded train split, rank neurons by the difference of their class means, keep the top k, fit
L2-regularised logistic regression on them, and report held-out F1 (macro-F1 over one-vs-rest probes
for more than two classes). The classes are the facts' answers (for sport: the five sports).`,
		Example: "  factlens probe --dataset sport --layer all\n" +
			"  factlens probe --dataset sport --layer 3 --position last --k 1,4,16 --format html --out probe.html\n" +
			"  factlens probe --dataset facts.jsonl --point hook_resid_post --layer all",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := of.check(); err != nil {
				return err
			}
			if df.name == "" {
				return usagef("--dataset is required")
			}
			switch position {
			case "last-subject", "first-subject", "last":
			default:
				return usagef("unknown --position %q (want last-subject, first-subject or last)", position)
			}
			var ks []int
			if ksFlag != "" {
				var err error
				if ks, err = parseIntList("k", ksFlag); err != nil {
					return err
				}
			}
			if showK < 0 {
				return usagef("--show-k must not be negative")
			}
			ctx := cmd.Context()
			lm, err := a.loadModel(ctx, &rf)
			if err != nil {
				return err
			}
			defer lm.Close()
			layers, err := parseLayers("layer", layersFlag, lm.model.NLayer())
			if err != nil {
				return err
			}
			if err := lm.model.CheckHookName(fmt.Sprintf("blocks.0.%s", point)); err != nil {
				return usagef("--point %q: %v", point, err)
			}
			sel, err := a.selectFacts(ctx, lm, &df, seed)
			if err != nil {
				return err
			}
			res := &probeReport{analysisHeader: lm.header(), Dataset: sel.info, Point: point, Position: position}
			prompts := make([][]int, len(sel.prompts))
			positions := make([]int, len(sel.prompts))
			y := make([]int, len(sel.prompts))
			for i, p := range sel.prompts {
				prompts[i] = p.Tokens
				switch position {
				case "last-subject":
					positions[i] = p.LastSubject()
				case "first-subject":
					positions[i] = p.SubjectStart
				default:
					positions[i] = len(p.Tokens) - 1
				}
				c := slices.Index(res.Classes, p.Fact.Target)
				if c < 0 {
					c = len(res.Classes)
					res.Classes = append(res.Classes, p.Fact.Target)
					res.Counts = append(res.Counts, 0)
				}
				y[i] = c
				res.Counts[c]++
			}
			if len(res.Classes) < 2 {
				return fmt.Errorf("the %d selected facts all have the answer %q; probing needs at least two", len(sel.prompts), res.Classes[0])
			}
			start := time.Now()
			acts, err := analysis.ActivationsAt(ctx, lm.model, prompts, positions, point, layers)
			if err != nil {
				return err
			}
			a.timing("read activations", start)
			width := len(acts[0]) / len(layers)
			bar := a.newBar(len(layers), "probing")
			start = time.Now()
			for li, l := range layers {
				X := make([][]float32, len(acts))
				for i, row := range acts {
					X[i] = row[li*width : (li+1)*width]
				}
				pr, err := analysis.SparseProbe(X, y, res.Classes, analysis.ProbeOptions{Ks: ks, L2: l2, TestFraction: testFraction, Seed: seed})
				if err != nil {
					return fmt.Errorf("layer %d: %w", l, err)
				}
				res.Layers = append(res.Layers, probeLayer{Layer: l, Result: pr})
				step(bar)
			}
			if bar != nil {
				_ = bar.Finish()
			}
			a.timing("sparse probes", start)
			res.ShowK = showK
			if res.ShowK == 0 {
				res.ShowK = res.Layers[0].Result.PerK[0].K
			}
			if !slices.ContainsFunc(res.Layers[0].Result.PerK, func(p analysis.ProbeK) bool { return p.K == res.ShowK }) {
				return usagef("--show-k %d is not one of the k values probed", showK)
			}
			return a.emit(&of, res, func() *report.Document { return probeDocument(res, lm.provenance()) })
		},
	}
	rf.register(cmd)
	of.register(cmd)
	df.register(cmd, filterNone, "the facts to probe")
	fl := cmd.Flags()
	fl.StringVar(&layersFlag, "layer", "all", "layers probed, each on its own: all or a list such as 3 or 2,4,6")
	fl.StringVar(&position, "position", "last-subject", "token whose activations are read: last-subject, first-subject or last")
	fl.StringVar(&point, "point", "mlp.hook_post", "per-layer hook point read, e.g. mlp.hook_post, mlp.hook_pre, hook_resid_post")
	fl.StringVar(&ksFlag, "k", "", "sparsity levels, e.g. 1,2,4,8 (default 1, 2, 4, …, 64)")
	fl.Float64Var(&l2, "l2", 0, "L2 penalty λ of the logistic regression (0: 1e-3; negative: none)")
	fl.Float64Var(&testFraction, "test-fraction", 0.3, "fraction of each class held out for the F1")
	fl.Uint64Var(&seed, "seed", 1, "seed of the train/test split and of the dataset sample")
	fl.IntVar(&showK, "show-k", 0, "list the neurons the probes choose at this k (default the smallest k)")
	return cmd
}

func probeDocument(r *probeReport, prov []report.Field) *report.Document {
	prov = append(prov, r.Dataset.provenance()...)
	first := r.Layers[0].Result
	prov = append(prov, report.Field{Key: "probe", Value: fmt.Sprintf("%s at the %s token; %d train and %d test examples, split with seed %d; L2 λ = %g",
		r.Point, r.Position, first.Train, first.Test, first.Seed, first.L2)})
	doc := &report.Document{Title: fmt.Sprintf("Sparse probing of %s on %s", r.Point, r.Dataset.Name), Provenance: prov}
	metric := fmt.Sprintf("F1 of the class %s", report.Token(r.Classes[1]))
	if len(r.Classes) > 2 {
		metric = "macro-F1 (one-vs-rest probes, one per class)"
	}
	classes := &report.Table{Caption: "Classes (the facts' answers)", Header: []string{"class", "examples"}, NumericCols: []int{1}}
	for i, c := range r.Classes {
		classes.Rows = append(classes.Rows, []string{report.Token(c), fmt.Sprint(r.Counts[i])})
	}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf("Held-out %s of k-sparse logistic probes choosing among %d features per layer.", metric, first.Features)}, classes)

	var x []float64
	for _, p := range first.PerK {
		x = append(x, float64(p.K))
	}
	lines := &report.Lines{Caption: "Held-out F1 against k, one line per layer", XLabel: "k (neurons)", YLabel: "F1", X: x}
	t := &report.Table{Header: []string{"layer", "k", "F1", "accuracy"}, NumericCols: []int{0, 1, 2, 3}}
	for _, pl := range r.Layers {
		s := report.Series{Name: fmt.Sprintf("L%d", pl.Layer)}
		for _, p := range pl.Result.PerK {
			s.Y = append(s.Y, p.F1)
			t.Rows = append(t.Rows, []string{fmt.Sprint(pl.Layer), fmt.Sprint(p.K), fmt.Sprintf("%.4f", p.F1), fmt.Sprintf("%.4f", p.Accuracy)})
		}
		lines.Series = append(lines.Series, s)
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "F1 against k"}, lines, t)

	chosen := &report.Table{Caption: fmt.Sprintf("The neurons each probe chooses at k = %d, with their weights", r.ShowK),
		Header: []string{"layer", "probe", "neurons (weight)"}, NumericCols: []int{0}}
	for _, pl := range r.Layers {
		for _, p := range pl.Result.PerK {
			if p.K != r.ShowK {
				continue
			}
			for j, feats := range p.Features {
				probe := report.Token(r.Classes[len(r.Classes)-1])
				if len(p.Features) > 1 {
					probe = report.Token(r.Classes[j])
				}
				var cells []string
				for f, idx := range feats {
					cells = append(cells, fmt.Sprintf("%s (%.3f)", neuronName(pl.Layer, idx), p.Weights[j][f]))
				}
				chosen.Rows = append(chosen.Rows, []string{fmt.Sprint(pl.Layer), probe, strings.Join(cells, ", ")})
			}
		}
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Chosen neurons"}, chosen)
	return doc
}
