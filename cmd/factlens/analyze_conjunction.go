package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/cmd/factlens/report"
)

// conjunctionBehaviour is the conjunction test on the model's output: the
// target's probability on the true name and on the counterfactual names.
type conjunctionBehaviour struct {
	Target      int     `json:"target"`
	TargetToken string  `json:"target_token"`
	Prob        float64 `json:"prob"`       // P(target | A B)
	FirstOnly   float64 `json:"first_only"` // mean P(target | A B′)
	LastOnly    float64 `json:"last_only"`  // mean P(target | A′ B)
	Neither     float64 `json:"neither"`    // mean P(target | A′ B′)
	Interaction float64 `json:"interaction"`
}

// conjunctionReport is what `factlens conjunction --name … --format json` prints.
type conjunctionReport struct {
	analysisHeader
	Template  string                      `json:"template"`
	Result    *analysis.ConjunctionResult `json:"result"`
	Behaviour *conjunctionBehaviour       `json:"behaviour,omitempty"`
}

// conjunctionSurveyReport is what `factlens conjunction --dataset … --format json` prints.
type conjunctionSurveyReport struct {
	analysisHeader
	Dataset  datasetInfo                 `json:"dataset"`
	Template string                      `json:"template"`
	Layers   []int                       `json:"layers"`
	Skipped  []string                    `json:"skipped,omitempty"`  // subjects that are not two-part names
	Repeated int                         `json:"repeated,omitempty"` // facts whose name an earlier fact has
	Survey   *analysis.ConjunctionSurvey `json:"survey"`
}

func (a *app) conjunctionCommand() *cobra.Command {
	var rf runFlags
	var of outputFlags
	var df datasetFlags
	var target tokenFlag
	var name, template, pool, point, layersFlag string
	var otherFirsts, otherLasts []string
	var alternates, topK int
	var tau, minAct float64
	var seed uint64
	cmd := &cobra.Command{
		Use:   "conjunction --name \"FIRST LAST\" | conjunction --dataset NAME",
		Short: "The AND-gate test of Fact Finding: which neurons fire only for a first name together with its last name",
		Long: `conjunction reads every MLP neuron at the last token of a name in the template for the true name
(A B), for its first name with other last names (A B′), for other first names with its last name
(A′ B) and for pairs of other names (A′ B′), and computes each neuron's interaction
act(A B) − mean act(A B′) − mean act(A′ B) + mean act(A′ B′). A neuron is an AND gate for the name
when act(A B) ≥ --min-act, its interaction ≥ τ·act(A B), and neither one-part mean exceeds
(1 − τ)·act(A B): it needs both parts, and their joint effect is not the sum of their separate ones.

With --target, the same test is run on the model's output: P(target) on the true and counterfactual
names. With --dataset, every kept fact's subject is tested, other names drawn (seeded) from the
dataset, and the survey counts AND gates, how many facts each AND neuron serves and how many AND
neurons each fact has: more AND gates than neurons means neurons are shared between facts.`,
		Example: "  factlens conjunction --name \"Michael Jordan\" --target \" basketball\"\n" +
			"  factlens conjunction --name \"Michael Jordan\" --other-firsts Tom,Roger --other-lasts Brady,Federer\n" +
			"  factlens conjunction --dataset sport --limit 100 --format html --out and.html",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := of.check(); err != nil {
				return err
			}
			if (name == "") == (df.name == "") {
				return usagef("give either --name or --dataset")
			}
			if df.name != "" && (cmd.Flags().Changed("target") || cmd.Flags().Changed("target-id") || len(otherFirsts) > 0 || len(otherLasts) > 0) {
				return usagef("--target, --other-firsts and --other-lasts apply to --name; a dataset draws its own")
			}
			if alternates < 1 || topK < 1 || tau <= 0 || tau > 1 || minAct < 0 {
				return usagef("--alternates and --top must be at least 1, --tau in (0, 1], --min-act not negative")
			}
			if point != "mlp.hook_post" && point != "mlp.hook_pre" {
				return usagef("unknown --point %q (want mlp.hook_post or mlp.hook_pre)", point)
			}
			ctx := cmd.Context()
			lm, err := a.loadModel(ctx, &rf)
			if err != nil {
				return err
			}
			defer lm.Close()
			layers, err := parseLayers("layers", layersFlag, lm.model.NLayer())
			if err != nil {
				return err
			}
			opts := analysis.ConjunctionOptions{Template: template, Tokenizer: lm.tok, PrependBOS: lm.prependBOS, Point: point,
				Layers: layers, Tau: tau, MinAct: minAct, TopK: topK}
			thresholds := report.Field{Key: "AND criterion", Value: fmt.Sprintf("act ≥ %g, interaction ≥ %g·act, max(mean act(A B′), mean act(A′ B)) ≤ %g·act, on %s at the last name token",
				minAct, tau, 1-tau, point)}

			if df.name != "" {
				sel, err := a.selectFacts(ctx, lm, &df, seed)
				if err != nil {
					return err
				}
				if !cmd.Flags().Changed("template") {
					if sel.info.Template == "" {
						return usagef("the facts of %s use different prompts; choose one with --template", df.name)
					}
					opts.Template = sel.info.Template
				}
				res := &conjunctionSurveyReport{analysisHeader: lm.header(), Dataset: sel.info, Template: opts.Template, Layers: layers}
				// The test depends on the name alone, so a person with several
				// facts is tested once.
				var names []analysis.NamePair
				for _, p := range sel.prompts {
					n, ok := analysis.SplitName(p.Fact.Subject)
					switch {
					case !ok:
						res.Skipped = append(res.Skipped, p.Fact.Subject)
					case slices.Contains(names, n):
						res.Repeated++
					default:
						names = append(names, n)
					}
				}
				if len(names) == 0 {
					return fmt.Errorf("no subject of the %d selected facts is a two-part name", len(sel.prompts))
				}
				start := time.Now()
				if res.Survey, err = analysis.SurveyConjunctions(ctx, lm.model, names, alternates, seed, opts); err != nil {
					return err
				}
				a.timing(fmt.Sprintf("conjunction survey of %d names", len(names)), start)
				prov := append(lm.provenance(), sel.info.provenance()...)
				prov = append(prov, report.Field{Key: "template", Value: fmt.Sprintf("%q", opts.Template)}, thresholds,
					report.Field{Key: "counterfactual names", Value: fmt.Sprintf("%d other first and %d other last names per fact, drawn from the sample with seed %d", alternates, alternates, seed)})
				return a.emit(&of, res, func() *report.Document { return conjunctionSurveyDocument(res, prov) })
			}

			np, ok := analysis.SplitName(name)
			if !ok {
				return usagef("--name %q is not a first and a last name", name)
			}
			if len(otherFirsts) == 0 || len(otherLasts) == 0 {
				facts, _, _, err := loadDataset(pool, df.factsDir)
				if err != nil {
					return fmt.Errorf("drawing counterfactual names: %w (or give --other-firsts and --other-lasts)", err)
				}
				firsts, lasts := drawNames(facts, np, alternates, seed)
				if len(otherFirsts) == 0 {
					otherFirsts = firsts
				}
				if len(otherLasts) == 0 {
					otherLasts = lasts
				}
			}
			start := time.Now()
			r, err := analysis.ConjunctionTest(ctx, lm.model, np, otherFirsts, otherLasts, opts)
			if err != nil {
				return err
			}
			a.timing("conjunction test", start)
			res := &conjunctionReport{analysisHeader: lm.header(), Template: template, Result: r}
			tgt, err := target.resolve(cmd, lm)
			if err != nil {
				return err
			}
			if tgt >= 0 {
				if res.Behaviour, err = a.conjunctionBehaviour(cmd, lm, np, otherFirsts, otherLasts, template, tgt); err != nil {
					return err
				}
			}
			prov := append(lm.provenance(), report.Field{Key: "template", Value: fmt.Sprintf("%q", template)}, thresholds)
			if !cmd.Flags().Changed("other-firsts") || !cmd.Flags().Changed("other-lasts") {
				prov = append(prov, report.Field{Key: "counterfactual names", Value: fmt.Sprintf("drawn from the names of %s with seed %d", pool, seed)})
			}
			return a.emit(&of, res, func() *report.Document { return conjunctionDocument(res, prov) })
		},
	}
	rf.register(cmd)
	of.register(cmd)
	df.register(cmd, filterCorrect, "survey every subject of a dataset instead of --name")
	target.register(cmd, "target", "with --name: an answer whose probability is also tested", "")
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "the two-part name to test, \"FIRST LAST\"")
	fl.StringVar(&template, "template", "{} plays the sport of", "prompt with {} for the name (default for --dataset: the dataset's own)")
	fl.StringVar(&pool, "pool", "sport", "with --name: the dataset whose names supply the counterfactual first and last names")
	fl.StringSliceVar(&otherFirsts, "other-firsts", nil, "counterfactual first names (default: drawn from --pool)")
	fl.StringSliceVar(&otherLasts, "other-lasts", nil, "counterfactual last names (default: drawn from --pool)")
	fl.IntVar(&alternates, "alternates", 4, "counterfactual first and last names drawn per name")
	fl.StringVar(&point, "point", "mlp.hook_post", "neuron activation tested: mlp.hook_post or mlp.hook_pre")
	fl.StringVar(&layersFlag, "layers", "all", "layers whose neurons are tested: all or a list such as 0,1,2")
	fl.Float64Var(&tau, "tau", 0.5, "the AND criterion's fraction τ")
	fl.Float64Var(&minAct, "min-act", 0.5, "activation on the true name a neuron needs to count as firing")
	fl.IntVar(&topK, "top", 10, "neurons listed by interaction")
	fl.Uint64Var(&seed, "seed", 1, "seed of the counterfactual names and of the dataset sample")
	return cmd
}

// drawNames draws n other first names and n other last names (seeded, in a
// random order) from the two-part subjects of facts.
func drawNames(facts []analysis.Fact, name analysis.NamePair, n int, seed uint64) (firsts, lasts []string) {
	var allF, allL []string
	for _, f := range facts {
		if p, ok := analysis.SplitName(f.Subject); ok {
			if p.First != name.First && !slices.Contains(allF, p.First) {
				allF = append(allF, p.First)
			}
			if p.Last != name.Last && !slices.Contains(allL, p.Last) {
				allL = append(allL, p.Last)
			}
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0xc0a1))
	for _, i := range rng.Perm(len(allF))[:min(n, len(allF))] {
		firsts = append(firsts, allF[i])
	}
	for _, i := range rng.Perm(len(allL))[:min(n, len(allL))] {
		lasts = append(lasts, allL[i])
	}
	return firsts, lasts
}

// conjunctionBehaviour measures P(target) after the template for the true
// name and for every counterfactual name.
func (a *app) conjunctionBehaviour(cmd *cobra.Command, lm *loadedModel, name analysis.NamePair, firsts, lasts []string, template string, target int) (*conjunctionBehaviour, error) {
	build := func(n analysis.NamePair) (*analysis.Prompt, error) {
		p, err := analysis.BuildPrompt(lm.tok, analysis.Fact{Subject: n.Subject(), Prompt: template, Target: " ?"}, analysis.PromptOptions{PrependBOS: lm.prependBOS})
		if err != nil {
			return nil, err
		}
		p.Target = target
		return p, nil
	}
	names := []analysis.NamePair{name}
	for _, b := range lasts {
		names = append(names, analysis.NamePair{First: name.First, Last: b})
	}
	for _, f := range firsts {
		names = append(names, analysis.NamePair{First: f, Last: name.Last})
	}
	for _, f := range firsts {
		for _, b := range lasts {
			names = append(names, analysis.NamePair{First: f, Last: b})
		}
	}
	prompts := make([]*analysis.Prompt, len(names))
	for i, n := range names {
		var err error
		if prompts[i], err = build(n); err != nil {
			return nil, err
		}
	}
	scores, err := analysis.ScoreFacts(cmd.Context(), lm.model, prompts)
	if err != nil {
		return nil, err
	}
	meanOf := func(s []analysis.FactScore) float64 {
		var t float64
		for _, x := range s {
			t += x.TargetProb
		}
		return t / float64(len(s))
	}
	nb, na := len(lasts), len(firsts)
	b := &conjunctionBehaviour{Target: target, TargetToken: lm.tok.Token(target), Prob: scores[0].TargetProb,
		FirstOnly: meanOf(scores[1 : 1+nb]), LastOnly: meanOf(scores[1+nb : 1+nb+na]), Neither: meanOf(scores[1+nb+na:])}
	b.Interaction = b.Prob - b.FirstOnly - b.LastOnly + b.Neither
	return b, nil
}

func conjunctionTable(caption string, rows []analysis.NeuronConjunction) *report.Table {
	t := &report.Table{Caption: caption, Header: []string{"neuron", "act(A B)", "mean act(A B′)", "mean act(A′ B)", "mean act(A′ B′)", "interaction", "AND"},
		NumericCols: []int{1, 2, 3, 4, 5}}
	for _, c := range rows {
		and := "no"
		if c.AND {
			and = "yes"
		}
		t.Rows = append(t.Rows, []string{neuronName(c.Layer, c.Neuron), fmt.Sprintf("%.3f", c.Act), fmt.Sprintf("%.3f", c.FirstOnly),
			fmt.Sprintf("%.3f", c.LastOnly), fmt.Sprintf("%.3f", c.Neither), fmt.Sprintf("%.3f", c.Interaction), and})
	}
	return t
}

func conjunctionDocument(r *conjunctionReport, prov []report.Field) *report.Document {
	c := r.Result
	n := c.Name
	doc := &report.Document{Title: fmt.Sprintf("Conjunction test of %q", n.Subject()), Provenance: prov}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf(
		"A = %q, B = %q; other first names A′: %s; other last names B′: %s. %d neurons tested; %d are AND gates for this name.",
		n.First, n.Last, strings.Join(c.OtherFirsts, ", "), strings.Join(c.OtherLasts, ", "), c.Tested, len(c.AND))})
	if b := r.Behaviour; b != nil {
		t := &report.Table{Caption: fmt.Sprintf("The same test on the output: P(%s) at the last position", report.Token(b.TargetToken)),
			Header: []string{"names", "P(target)"}, NumericCols: []int{1}}
		t.Rows = [][]string{
			{"A B (true name)", fmt.Sprintf("%.4f", b.Prob)},
			{"A B′ (mean)", fmt.Sprintf("%.4f", b.FirstOnly)},
			{"A′ B (mean)", fmt.Sprintf("%.4f", b.LastOnly)},
			{"A′ B′ (mean)", fmt.Sprintf("%.4f", b.Neither)},
			{"interaction", fmt.Sprintf("%.4f", b.Interaction)},
		}
		doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Output"}, t)
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "AND neurons"})
	if len(c.AND) == 0 {
		doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: "No neuron passes the AND criterion for this name."})
	} else {
		shown := c.AND[:min(50, len(c.AND))]
		doc.Blocks = append(doc.Blocks, conjunctionTable(fmt.Sprintf("%d of %d AND neurons, by interaction", len(shown), len(c.AND)), shown))
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Largest interactions"},
		conjunctionTable(fmt.Sprintf("The %d neurons with the largest interaction, AND or not", len(c.Top)), c.Top))
	return doc
}

func conjunctionSurveyDocument(r *conjunctionSurveyReport, prov []report.Field) *report.Document {
	s := r.Survey
	doc := &report.Document{Title: "Conjunction survey of " + r.Dataset.Name, Provenance: prov}
	yes := map[bool]string{true: "yes", false: "no"}
	text := fmt.Sprintf("%d names tested, %d neurons each.", len(s.Names), s.Tested)
	if len(r.Skipped) > 0 {
		text += fmt.Sprintf(" %d subjects that are not two-part names were left out.", len(r.Skipped))
	}
	if r.Repeated > 0 {
		text += fmt.Sprintf(" %d facts repeat a name already tested; each name is tested once.", r.Repeated)
	}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: text})
	counts := &report.Table{Caption: "Counts", Header: []string{"quantity", "value"}, NumericCols: []int{1}, Rows: [][]string{
		{"facts (names) tested", fmt.Sprint(len(s.Names))},
		{"neurons tested per fact", fmt.Sprint(s.Tested)},
		{"facts with at least one AND neuron", fmt.Sprint(s.FactsWithAND)},
		{"AND gates: (fact, neuron) pairs", fmt.Sprint(s.ANDPairs)},
		{"distinct AND neurons", fmt.Sprint(s.ANDNeurons)},
		{"mean AND neurons per fact", fmt.Sprintf("%.3f", s.MeanNeuronsPerFact)},
		{"mean facts per AND neuron", fmt.Sprintf("%.3f", s.MeanFactsPerANDNeuron)},
		{"more AND gates than AND neurons (neurons shared)", yes[s.MoreGatesThanNeurons]},
	}}
	doc.Blocks = append(doc.Blocks, counts,
		&report.Bars{Caption: "Counts against the number of neurons tested", XLabel: "quantity", YLabel: "count",
			Labels: []string{"neurons tested", "distinct AND neurons", "AND gates", "facts"},
			Values: []float64{float64(s.Tested), float64(s.ANDNeurons), float64(s.ANDPairs), float64(len(s.Names))}})
	if len(s.FactsPerNeuronHistogram) > 1 {
		var labels []string
		var vals []float64
		for k := 1; k < len(s.FactsPerNeuronHistogram); k++ {
			labels = append(labels, fmt.Sprint(k))
			vals = append(vals, float64(s.FactsPerNeuronHistogram[k]))
		}
		doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Facts per AND neuron"},
			&report.Bars{Caption: "AND neurons by the number of facts they are an AND gate for", XLabel: "facts", YLabel: "neurons", Labels: labels, Values: vals})
	}
	maxN := 0
	for _, k := range s.NeuronsPerFact {
		maxN = max(maxN, k)
	}
	hist := make([]float64, maxN+1)
	for _, k := range s.NeuronsPerFact {
		hist[k]++
	}
	var labels []string
	for k := range hist {
		labels = append(labels, fmt.Sprint(k))
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "AND neurons per fact"},
		&report.Bars{Caption: "Facts by their number of AND neurons", XLabel: "AND neurons", YLabel: "facts", Labels: labels, Values: hist})
	if len(s.TopNeurons) > 0 {
		t := &report.Table{Caption: "The neurons that are AND gates for the most facts", Header: []string{"neuron", "facts", "names"}, NumericCols: []int{1}}
		for _, nf := range s.TopNeurons {
			var subj []string
			for _, i := range nf.Facts[:min(5, len(nf.Facts))] {
				subj = append(subj, s.Names[i].Subject())
			}
			if len(nf.Facts) > 5 {
				subj = append(subj, "…")
			}
			t.Rows = append(t.Rows, []string{neuronName(nf.Layer, nf.Neuron), fmt.Sprint(len(nf.Facts)), strings.Join(subj, ", ")})
		}
		doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Shared AND neurons"}, t)
	}
	per := &report.Table{Header: []string{"name", "AND neurons"}, NumericCols: []int{1}}
	for i, n := range s.Names {
		per.Rows = append(per.Rows, []string{n.Subject(), fmt.Sprint(s.NeuronsPerFact[i])})
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Facts"}, per)
	return doc
}
