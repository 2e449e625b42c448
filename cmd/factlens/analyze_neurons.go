package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/cmd/factlens/report"
)

// neuronCandidate is one of the neurons attribution patching ranks highest,
// with its exact effects.
type neuronCandidate struct {
	Layer  int `json:"layer"`
	Neuron int `json:"neuron"`
	Pos    int `json:"pos"`
	// Attribution estimates Patch to first order: grad · (clean − corrupted).
	Attribution float64 `json:"attribution"`
	// Patch is the exact rise of the logit difference on the corrupted prompt
	// when this neuron alone takes its clean value.
	Patch float64 `json:"patch"`
	// Ablation is the exact drop of the logit difference on the clean prompt
	// when this neuron alone is ablated.
	Ablation float64 `json:"ablation"`
}

// ablationInfo states how neurons were ablated.
type ablationInfo struct {
	Method      string  `json:"method"`
	Reference   string  `json:"reference,omitempty"` // dataset of reference prompts (mean, resample)
	References  int     `json:"references,omitempty"`
	RefPosition string  `json:"reference_position,omitempty"`
	Draws       int     `json:"draws,omitempty"`
	Seed        uint64  `json:"seed"`
	Fraction    float64 `json:"fraction"`
}

// neuronsReport is what `factlens neurons --format json` prints.
type neuronsReport struct {
	analysisHeader
	promptPair
	CleanLogitDiff     float64 `json:"clean_logit_diff"`
	CorruptedLogitDiff float64 `json:"corrupted_logit_diff"`
	Positions          []int   `json:"positions"`
	Scored             int     `json:"scored"` // (neuron, position) pairs scored by attribution patching
	// AttributionByLayerPos[layer][pos] sums the attribution of every neuron
	// of the layer at the position (0 at positions not scored).
	AttributionByLayerPos [][]float64       `json:"attribution_by_layer_pos"`
	Candidates            []neuronCandidate `json:"candidates"`
	// Correlation is Pearson's r between Attribution and Patch over the
	// candidates: how well the linear estimate ranks them (absent with fewer
	// than two candidates or constant values).
	Correlation    *float64              `json:"attribution_patch_correlation,omitempty"`
	Ablation       ablationInfo          `json:"ablation"`
	MinimalSet     *analysis.AblationSet `json:"minimal_set,omitempty"`
	MinimalSetNote string                `json:"minimal_set_note,omitempty"`
}

func (a *app) neuronsCommand() *cobra.Command {
	var rf runFlags
	var of outputFlags
	var pf pairFlags
	var positions []string
	var top, draws, maxSize, refLimit int
	var method, reference, refPosition, factsDir string
	var fraction float64
	var seed uint64
	cmd := &cobra.Command{
		Use:   "neurons --clean TEXT --corrupted TEXT",
		Short: "Find the MLP neurons behind an answer: attribution patching, exact patching and ablation, a minimal set",
		Long: `neurons scores every MLP neuron (blocks.L.mlp.hook_post) at the chosen positions by attribution
patching — grad · (clean − corrupted) on the corrupted run, the first-order estimate of patching the
neuron's clean value in — from one clean pass and one corrupted forward and backward pass. The --top
candidates are then measured exactly: patched alone into the corrupted run, and ablated alone in the
clean run (--ablation zero, mean or resample over reference prompts). Finally a greedy search adds
candidates, the one that lowers the clean logit difference most at each step, until --fraction of it
is gone: an upper bound on the smallest such set, not a proof of minimality.`,
		Example: "  factlens neurons --clean \"Michael Jordan plays the sport of\" --corrupted \"Michael Smith plays the sport of\" \\\n" +
			"      --target \" basketball\" --contrast \" football\" --positions 1 --top 50\n" +
			"  factlens neurons --ablation mean --reference sport --reference-position last-subject --positions 1 --clean ... --corrupted ...",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := of.check(); err != nil {
				return err
			}
			if top < 1 || refLimit < 1 || draws < 0 || maxSize < 0 || !(fraction > 0 && fraction <= 1) {
				return usagef("--top and --reference-limit must be at least 1, --draws and --max-size not negative, --fraction in (0, 1]")
			}
			am := analysis.AblationMethod(method)
			if am != analysis.AblateZero && am != analysis.AblateMean && am != analysis.AblateResample {
				return usagef("unknown --ablation %q (want zero, mean or resample)", method)
			}
			if refPosition != "last" && refPosition != "last-subject" {
				return usagef("unknown --reference-position %q (want last or last-subject)", refPosition)
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
			pos, err := parsePositions(positions, len(pair.CleanIDs))
			if err != nil {
				return err
			}
			L := lm.model.NLayer()
			res := &neuronsReport{analysisHeader: lm.header(), promptPair: *pair, Positions: pos,
				Ablation: ablationInfo{Method: method, Seed: seed, Fraction: fraction}}
			ablOpts := analysis.AblationOptions{Method: am, Seed: seed, Draws: draws}
			if am != analysis.AblateZero {
				df := datasetFlags{name: reference, factsDir: factsDir, filter: filterNone, limit: refLimit}
				sel, err := a.selectFacts(ctx, lm, &df, seed)
				if err != nil {
					return fmt.Errorf("reference prompts: %w", err)
				}
				for _, p := range sel.prompts {
					ablOpts.Reference = append(ablOpts.Reference, p.Tokens)
					rp := len(p.Tokens) - 1
					if refPosition == "last-subject" {
						rp = p.LastSubject()
					}
					ablOpts.RefPositions = append(ablOpts.RefPositions, rp)
				}
				res.Ablation.Reference, res.Ablation.References, res.Ablation.RefPosition = reference, len(sel.prompts), refPosition
				if am == analysis.AblateResample {
					res.Ablation.Draws = max(draws, 0)
					if res.Ablation.Draws == 0 {
						res.Ablation.Draws = 5
					}
				}
			}

			start := time.Now()
			attr, err := analysis.NeuronAttribution(ctx, lm.model, pair.CleanIDs, pair.CorruptedIDs, pair.Target, pair.Contrast, analysis.AttributionOptions{Positions: pos})
			if err != nil {
				return err
			}
			a.timing("attribution patching", start)
			res.CleanLogitDiff, res.CorruptedLogitDiff, res.Scored = attr.CleanLogitDiff, attr.CorruptedLogitDiff, len(attr.Scores)
			res.AttributionByLayerPos = make([][]float64, L)
			for l := range res.AttributionByLayerPos {
				res.AttributionByLayerPos[l] = make([]float64, len(pair.CleanIDs))
			}
			for _, s := range attr.Scores {
				res.AttributionByLayerPos[s.Layer][s.Pos] += s.Value
			}
			cands := attr.Scores[:min(top, len(attr.Scores))]
			refs := make([]analysis.NeuronRef, len(cands))
			for i, s := range cands {
				refs[i] = analysis.NeuronRef{Layer: s.Layer, Neuron: s.Neuron, Pos: s.Pos}
			}

			start = time.Now()
			patched, err := analysis.NeuronPatchEffects(ctx, lm.model, pair.CleanIDs, pair.CorruptedIDs, pair.Target, pair.Contrast, refs)
			if err != nil {
				return err
			}
			a.timing("exact neuron patching", start)
			start = time.Now()
			ablated, err := analysis.NeuronAblationEffects(ctx, lm.model, pair.CleanIDs, pair.Target, pair.Contrast, refs, ablOpts)
			if err != nil {
				return err
			}
			a.timing("exact neuron ablation", start)
			patchOf, ablOf := map[analysis.NeuronRef]float64{}, map[analysis.NeuronRef]float64{}
			for _, s := range patched {
				patchOf[analysis.NeuronRef{Layer: s.Layer, Neuron: s.Neuron, Pos: s.Pos}] = s.Value
			}
			for _, s := range ablated.Effects {
				ablOf[analysis.NeuronRef{Layer: s.Layer, Neuron: s.Neuron, Pos: s.Pos}] = s.Value
			}
			var xs, ys []float64
			for i, s := range cands {
				c := neuronCandidate{Layer: s.Layer, Neuron: s.Neuron, Pos: s.Pos, Attribution: s.Value, Patch: patchOf[refs[i]], Ablation: ablOf[refs[i]]}
				res.Candidates = append(res.Candidates, c)
				xs, ys = append(xs, c.Attribution), append(ys, c.Patch)
			}
			if r := pearson(xs, ys); !math.IsNaN(r) {
				res.Correlation = &r
			}

			if !(ablated.CleanLogitDiff > 0) {
				res.MinimalSetNote = fmt.Sprintf("no minimal set: the clean logit difference is %.4g, and removing a fraction of it needs a positive one", ablated.CleanLogitDiff)
			} else {
				start = time.Now()
				set, err := analysis.MinimalAblationSet(ctx, lm.model, pair.CleanIDs, pair.Target, pair.Contrast, refs,
					analysis.AblationSetOptions{AblationOptions: ablOpts, Fraction: fraction, Pool: len(refs), MaxSize: maxSize})
				if err != nil {
					return err
				}
				a.timing("minimal ablation set", start)
				res.MinimalSet = set
			}
			return a.emit(&of, res, func() *report.Document {
				return neuronsDocument(res, append(lm.provenance(), pair.provenance()...))
			})
		},
	}
	rf.register(cmd)
	of.register(cmd)
	pf.register(cmd)
	fl := cmd.Flags()
	fl.StringSliceVar(&positions, "positions", nil, "positions whose neurons are scored (default all): numbers from 0, negative from the end (-1 is the last), or last")
	fl.IntVar(&top, "top", 50, "candidates (largest |attribution|) measured exactly and searched for the minimal set")
	fl.StringVar(&method, "ablation", "zero", "what an ablated neuron becomes: zero, mean (its mean over reference prompts) or resample (its value on random reference prompts)")
	fl.StringVar(&reference, "reference", "sport", "reference prompts for mean and resample ablation: a dataset as trace --dataset takes")
	fl.StringVar(&factsDir, "facts-dir", defaultFactsDir, "folder holding the built-in datasets (lre/ and rome/), relative to the working directory")
	fl.IntVar(&refLimit, "reference-limit", 64, "reference prompts used, a seeded sample")
	fl.StringVar(&refPosition, "reference-position", "last", "where reference activations are read: last (token) or last-subject (token)")
	fl.IntVar(&draws, "draws", 5, "resampled values averaged per resample ablation")
	fl.Float64Var(&fraction, "fraction", 0.5, "the minimal set must remove this fraction of the clean logit difference")
	fl.IntVar(&maxSize, "max-size", 0, "stop the minimal-set search at this size (0: --top)")
	fl.Uint64Var(&seed, "seed", 1, "seed of resampling and of the reference sample")
	return cmd
}

// parsePositions resolves --positions against a prompt of n tokens; nil
// means every position.
func parsePositions(list []string, n int) ([]int, error) {
	if len(list) == 0 {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out, nil
	}
	var out []int
	seen := map[int]bool{}
	for _, s := range list {
		s = strings.TrimSpace(s)
		var p int
		if s == "last" {
			p = n - 1
		} else {
			v, err := strconv.Atoi(s)
			if err != nil {
				return nil, usagef("--positions: %q is not a position (a number, negative from the end, or last)", s)
			}
			p = v
			if v < 0 {
				p = n + v
			}
		}
		if p < 0 || p >= n {
			return nil, usagef("--positions: %s is outside the prompt's %d tokens", s, n)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// pearson is the correlation coefficient of xs and ys; NaN for fewer than
// two points or a constant series.
func pearson(xs, ys []float64) float64 {
	n := float64(len(xs))
	if len(xs) < 2 {
		return math.NaN()
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx, my = mx/n, my/n
	var sxy, sxx, syy float64
	for i := range xs {
		dx, dy := xs[i]-mx, ys[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return math.NaN()
	}
	return sxy / math.Sqrt(sxx*syy)
}

func neuronsDocument(r *neuronsReport, prov []report.Field) *report.Document {
	metric := fmt.Sprintf("logit(%s) − logit(%s)", report.Token(r.TargetToken), report.Token(r.ContrastToken))
	ab := r.Ablation
	abl := ab.Method + " ablation"
	if ab.Reference != "" {
		abl += fmt.Sprintf(" over %d reference prompts of %s at their %s token", ab.References, ab.Reference, ab.RefPosition)
		if ab.Draws > 0 {
			abl += fmt.Sprintf(", %d draws", ab.Draws)
		}
	}
	prov = append(prov, report.Field{Key: "ablation", Value: fmt.Sprintf("%s; seed %d", abl, ab.Seed)})
	doc := &report.Document{Title: "Neurons behind " + metric, Provenance: prov}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf(
		"Logit difference %.4f on the clean prompt, %.4f on the corrupted one. Attribution patching scored %d (neuron, position) pairs of blocks.L.mlp.hook_post at positions %v.",
		r.CleanLogitDiff, r.CorruptedLogitDiff, r.Scored, r.Positions)})
	pos := r.positionLabels()
	heat := make([][]float64, len(r.AttributionByLayerPos))
	scored := map[int]bool{}
	for _, p := range r.Positions {
		scored[p] = true
	}
	for l, row := range r.AttributionByLayerPos {
		heat[l] = make([]float64, len(row))
		for p, v := range row {
			heat[l][p] = v
			if !scored[p] {
				heat[l][p] = math.NaN()
			}
		}
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Attribution patching"},
		&report.Heatmap{Caption: "Summed attribution of each layer's neurons (layers × positions; empty: not scored)",
			RowLabels: layerLabels(len(heat)), ColLabels: pos, Values: heat, Diverging: true, Digits: 3})

	t := &report.Table{Caption: fmt.Sprintf("The %d candidates with the largest |attribution|: the estimate, the exact patch into the corrupted run, the exact %s in the clean run", len(r.Candidates), abl),
		Header: []string{"rank", "neuron", "position", "attribution", "patch", "ablation"}, NumericCols: []int{0, 3, 4, 5}}
	for i, c := range r.Candidates {
		t.Rows = append(t.Rows, []string{fmt.Sprint(i + 1), neuronName(c.Layer, c.Neuron), pos[c.Pos],
			fmt.Sprintf("%.4f", c.Attribution), fmt.Sprintf("%.4f", c.Patch), fmt.Sprintf("%.4f", c.Ablation)})
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Candidates"},
		&report.Paragraph{Text: correlationText(r.Correlation)}, t)

	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Minimal ablation set"})
	s := r.MinimalSet
	if s == nil {
		doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: r.MinimalSetNote})
		return doc
	}
	these := fmt.Sprintf("these %d neurons together", len(s.Neurons))
	if len(s.Neurons) == 1 {
		these = "this one neuron"
	}
	verdict := fmt.Sprintf("Ablating %s brings %s from %.4f to %.4f, at or below the goal %.4f (%.0f%% removed).",
		these, metric, s.CleanLogitDiff, last(s.LogitDiffs), s.Goal, 100*ab.Fraction)
	if !s.Reached {
		best := 0
		for i, v := range s.LogitDiffs {
			if v < s.LogitDiffs[best] {
				best = i
			}
		}
		verdict = fmt.Sprintf("Goal not reached: %s was %.4f and had to reach %.4f (%.0f%% removed); the lowest the search got was %.4f, with the first %d neurons below ablated.",
			metric, s.CleanLogitDiff, s.Goal, 100*ab.Fraction, s.LogitDiffs[best], best+1)
	}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: verdict + " Greedy search gives an upper bound on the smallest such set."})
	x := []float64{0}
	y := []float64{s.CleanLogitDiff}
	goal := []float64{s.Goal}
	set := &report.Table{Header: []string{"step", "neuron", "position", "logit diff after"}, NumericCols: []int{0, 3}}
	for i, n := range s.Neurons {
		x, y, goal = append(x, float64(i+1)), append(y, s.LogitDiffs[i]), append(goal, s.Goal)
		set.Rows = append(set.Rows, []string{fmt.Sprint(i + 1), neuronName(n.Layer, n.Neuron), pos[n.Pos], fmt.Sprintf("%.4f", s.LogitDiffs[i])})
	}
	doc.Blocks = append(doc.Blocks, &report.Lines{Caption: metric + " as the set grows", XLabel: "neurons ablated", YLabel: "logit difference", X: x,
		Series: []report.Series{{Name: "logit diff", Y: y}, {Name: "goal", Y: goal}}}, set)
	return doc
}

func last(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return xs[len(xs)-1]
}

func correlationText(r *float64) string {
	if r == nil {
		return "The correlation of attribution and exact patch effect is undefined here (fewer than two candidates, or constant values)."
	}
	return fmt.Sprintf("Pearson correlation of attribution and exact patch effect over the candidates: %.3f.", *r)
}
