package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/reproduce"
)

// reproduceDocument renders a study's result: provenance, the claims
// table, each verdict with its rule, the study's plots, and the run's cost.
func reproduceDocument(res any, modelProv []report.Field, notes []string) *report.Document {
	var h *reproduce.Header
	var title string
	var body []report.Block
	switch r := res.(type) {
	case *reproduce.ROMEResult:
		h, title, body = &r.Header, "ROME causal tracing", reproROMEBlocks(r)
	case *reproduce.FactFindingResult:
		h, title, body = &r.Header, "Fact Finding: athletes → sport", reproFactFindingBlocks(r)
	case *reproduce.SuperpositionResult:
		h, title, body = &r.Header, "Superposition: facts, neurons and features", reproSuperpositionBlocks(r)
	case *reproduce.SparseProbingResult:
		h, title, body = &r.Header, "Sparse probing of MLP neurons", reproSparseProbingBlocks(r)
	default:
		return &report.Document{Title: "unknown result"}
	}
	doc := &report.Document{Title: fmt.Sprintf("Reproduction: %s on %s", title, h.Model), Provenance: append(modelProv, reproStudyProvenance(h)...)}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Claims"}, reproClaimsTable(h))
	for _, n := range notes {
		doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: "Note: " + n})
	}
	doc.Blocks = append(doc.Blocks, body...)
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Verdicts and their rules"})
	for _, f := range h.Findings {
		doc.Blocks = append(doc.Blocks, &report.Heading{Level: 3, Text: f.Claim.Short},
			&report.Paragraph{Text: fmt.Sprintf("Claim (%s): %s. Paper: %s.", f.Claim.ID, f.Claim.Statement, f.Claim.Paper)},
			&report.Paragraph{Text: fmt.Sprintf("This model: %s. Verdict: %s. Rule: %s.", orDash(f.Ours), f.Verdict.Text, f.Verdict.Rule)})
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Sources"})
	seen := map[string]bool{}
	for _, f := range h.Findings {
		if !seen[f.Claim.Source] {
			seen[f.Claim.Source] = true
			doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: f.Claim.Cite + ": " + f.Claim.Source + "."})
		}
	}
	cost := &report.Table{Caption: fmt.Sprintf("What the run cost (%.1f s in all)", h.Seconds), Header: []string{"stage", "items", "seconds", "seconds per item"}, NumericCols: []int{1, 2, 3}}
	for _, c := range h.Costs {
		cost.Rows = append(cost.Rows, []string{c.Stage, fmt.Sprint(c.Items), fmt.Sprintf("%.3f", c.Seconds), fmt.Sprintf("%.4f", c.PerItem)})
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Cost"}, cost)
	return doc
}

func reproStudyProvenance(h *reproduce.Header) []report.Field {
	d := h.Dataset
	ds := fmt.Sprintf("%s — %s (%d facts)", orDash(d.Name), strings.Join(d.Paths, ", "), d.Total)
	fields := []report.Field{
		{Key: "study", Value: h.Study},
		{Key: "architecture", Value: fmt.Sprintf("%d layers, d_model %d, d_mlp %d", h.Layers, h.DModel, h.DMLP)},
		{Key: "dataset", Value: ds},
	}
	if d.Template != "" {
		fields = append(fields, report.Field{Key: "prompt", Value: fmt.Sprintf("%q", d.Template)})
	}
	filter := fmt.Sprintf("%s: %d of %d facts kept", d.Filter, d.Known, d.Total)
	if d.TooLong > 0 {
		filter += fmt.Sprintf(" (%d left out as longer than the model's context)", d.TooLong)
	}
	sample := fmt.Sprintf("all %d kept facts", d.Known)
	if d.Used < d.Known {
		sample = fmt.Sprintf("%d of %d kept facts, drawn with seed %d", d.Used, d.Known, d.Seed)
	}
	fields = append(fields, report.Field{Key: "filter", Value: filter}, report.Field{Key: "sample", Value: sample},
		report.Field{Key: "seed", Value: fmt.Sprint(d.Seed)})
	for _, s := range h.Settings {
		fields = append(fields, report.Field{Key: s.Name, Value: s.Value})
	}
	return fields
}

func reproClaimsTable(h *reproduce.Header) *report.Table {
	t := &report.Table{Header: []string{"claim", "source", "paper", "this model", "verdict"}}
	for _, f := range h.Findings {
		t.Rows = append(t.Rows, []string{f.Claim.Short, f.Claim.Cite, f.Claim.Figure, orDash(f.Brief), string(f.Verdict.Status)})
	}
	return t
}

func reproLayerAxis(n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(i)
	}
	return x
}

// ROME.

func reproROMEBlocks(r *reproduce.ROMEResult) []report.Block {
	out := []report.Block{&report.Heading{Level: 2, Text: "Causal traces"}}
	if r.Summary == nil {
		return append(out, &report.Paragraph{Text: fmt.Sprintf("No fact was traced: the model predicts %d of the %d facts.", r.Dataset.Known, r.Dataset.Total)})
	}
	out = append(out, &report.Paragraph{Text: fmt.Sprintf("%d facts traced: mean P(attribute) %.1f%% clean, %.1f%% with the subject corrupted (ATE %.1f%% ± %.1f%%); ν = %.4g, %d noisy runs, window %d.",
		len(r.Facts), 100*r.MeanClean, 100*r.MeanCorrupted, 100*r.ATE, 100*r.ATEStdErr, r.Noise, r.Samples, r.Window)})
	for _, bucket := range []string{reproduce.BucketLastSubject, reproduce.BucketLast} {
		l := &report.Lines{Caption: "Average indirect effect by layer at the " + bucket + " (restored probability minus corrupted)", XLabel: "layer", YLabel: "AIE", X: reproLayerAxis(r.Layers)}
		for _, kind := range []analysis.TraceKind{analysis.TraceHidden, analysis.TraceMLP, analysis.TraceAttn} {
			if c := r.Curve(kind, bucket); c != nil {
				l.Series = append(l.Series, report.Series{Name: string(kind), Y: c.AIE})
			}
		}
		out = append(out, l)
	}
	s := r.Summary
	for _, kind := range []analysis.TraceKind{analysis.TraceHidden, analysis.TraceMLP, analysis.TraceAttn} {
		aie, ok := s.AIE[kind]
		if !ok {
			continue
		}
		hm := &report.Heatmap{Caption: fmt.Sprintf("AIE of %s restorations by token role and layer", kind), ColLabels: layerLabels(r.Layers), Diverging: true, Digits: 3}
		for b, row := range aie {
			hm.RowLabels = append(hm.RowLabels, fmt.Sprintf("%s (%d)", s.Buckets[b], s.Counts[b]))
			vals := make([]float64, len(row))
			for l, v := range row {
				vals[l] = v
				if s.Counts[b] == 0 {
					vals[l] = math.NaN()
				}
			}
			hm.Values = append(hm.Values, vals)
		}
		out = append(out, hm)
	}
	return out
}

// Fact Finding.

func reproFactFindingBlocks(r *reproduce.FactFindingResult) []report.Block {
	out := []report.Block{&report.Heading{Level: 2, Text: "Measurements"}}
	known := &report.Table{Caption: "Known athletes studied, by sport", Header: []string{"sport", "athletes"}, NumericCols: []int{1}}
	for i, s := range r.Sports {
		known.Rows = append(known.Rows, []string{s, fmt.Sprint(r.KnownBySport[i])})
	}
	out = append(out, known)
	if e := r.Effects; e != nil {
		out = append(out, &report.Lines{Caption: fmt.Sprintf("Share of the sport logit lead (mean %.2f) removed by mean-ablating one layer's output", e.CleanLead),
			XLabel: "layer", YLabel: "share removed", X: reproLayerAxis(r.Layers), Series: []report.Series{
				{Name: "MLP at the final name token", Y: e.MLPAtName},
				{Name: "attention at the final name token", Y: e.AttnAtName},
				{Name: "MLP at the final token", Y: e.MLPAtFinal}}})
	}
	if r.MultiTokenNames > 0 {
		bars := &report.Bars{Caption: fmt.Sprintf("Attention from the final name token onto the name's earlier tokens (strongest head, mean over %d multi-token names)", r.MultiTokenNames),
			XLabel: "layer", YLabel: "attention weight", Labels: layerLabels(r.Layers), Values: r.NameAttention}
		out = append(out, bars)
	}
	if p := r.Probe; p != nil {
		l := &report.Lines{Caption: fmt.Sprintf("Sport probe at the final name token: held-out accuracy (%d-feature probes, %d train / %d test)", p.K, p.Train, p.Test),
			XLabel: "blocks run (0: embeddings)", YLabel: "accuracy", X: reproLayerAxis(len(p.Accuracy))}
		majority := make([]float64, len(p.Accuracy))
		for i := range majority {
			majority[i] = p.Majority
		}
		l.Series = []report.Series{{Name: "probe", Y: p.Accuracy}, {Name: "majority share", Y: majority}}
		out = append(out, l)
	}
	if c := r.Conjunction; c != nil {
		out = append(out, reproConjunctionTable(c))
		if len(c.FactsPerNeuronHistogram) > 1 {
			out = append(out, reproFactsPerNeuronBars(c))
		}
		if len(c.TopInteractions) > 0 {
			t := &report.Table{Caption: "Largest interaction per fact, act(A B) − act(A ·) − act(· B) + act(· ·) (first 10)", Header: []string{"athlete", "neuron", "act(A B)", "interaction", "AND"}, NumericCols: []int{2, 3}}
			for _, ti := range c.TopInteractions[:min(10, len(c.TopInteractions))] {
				t.Rows = append(t.Rows, []string{ti.Subject, neuronName(ti.Layer, ti.Neuron), fmt.Sprintf("%.3f", ti.Act), fmt.Sprintf("%.3f", ti.Interaction), fmt.Sprint(ti.AND)})
			}
			out = append(out, t)
		}
		if len(c.CleanGates) > 0 {
			t := &report.Table{Caption: "Clean AND gates (first 10)", Header: []string{"athlete", "neuron", "interaction", "lead removed"}, NumericCols: []int{2, 3}}
			for _, g := range c.CleanGates[:min(10, len(c.CleanGates))] {
				t.Rows = append(t.Rows, []string{g.Subject, neuronName(g.Layer, g.Neuron), fmt.Sprintf("%.3f", g.Interaction), fmt.Sprintf("%.1f%%", 100*g.Removed)})
			}
			out = append(out, t)
		}
	}
	if c := r.Counterfactual; c != nil && c.Facts > 0 {
		out = append(out, &report.Table{Caption: fmt.Sprintf("Sport logit lead of the true names and of counterfactual names (%d facts)", c.Facts),
			Header: []string{"name", "mean lead"}, NumericCols: []int{1}, Rows: [][]string{
				{"true name (A B)", fmt.Sprintf("%.3f", c.MeanLead)},
				{"first name, other last names (A ·)", fmt.Sprintf("%.3f", c.MeanLeadFirst)},
				{"other first names, last name (· B)", fmt.Sprintf("%.3f", c.MeanLeadLast)},
				{"other first and last names (· ·)", fmt.Sprintf("%.3f", c.MeanLeadNeither)},
				{"share not explained additively", fmt.Sprintf("%.1f%%", 100*c.Unexplained)},
			}})
	}
	return out
}

func reproConjunctionTable(c *reproduce.ConjunctionStats) *report.Table {
	return &report.Table{Caption: fmt.Sprintf("AND test at the final name token (%s, τ %g, min act %g, %d alternate names, %d neurons per fact)", c.Point, c.Tau, c.MinAct, c.Alternates, c.Tested),
		Header: []string{"count", "value"}, NumericCols: []int{1}, Rows: [][]string{
			{"facts tested", fmt.Sprint(c.Facts)},
			{"facts with an AND neuron", fmt.Sprint(c.FactsWithAND)},
			{"AND gates (fact, neuron)", fmt.Sprint(c.ANDPairs)},
			{"distinct AND neurons", fmt.Sprint(c.ANDNeurons)},
			{"AND neurons per fact that has one", fmt.Sprintf("%.2f", c.NeuronsPerANDFact)},
			{"facts per AND neuron", fmt.Sprintf("%.2f", c.FactsPerANDNeuron)},
			{"facts with a clean gate", fmt.Sprint(c.CleanGateFacts)},
		}}
}

func reproFactsPerNeuronBars(c *reproduce.ConjunctionStats) *report.Bars {
	b := &report.Bars{Caption: "AND neurons by the number of facts they gate", XLabel: "facts", YLabel: "neurons"}
	for k, n := range c.FactsPerNeuronHistogram {
		if k > 0 {
			b.Labels = append(b.Labels, fmt.Sprint(k))
			b.Values = append(b.Values, float64(n))
		}
	}
	return b
}

// Superposition.

func reproSuperpositionBlocks(r *reproduce.SuperpositionResult) []report.Block {
	out := []report.Block{&report.Heading{Level: 2, Text: "Measurements"}}
	t := &report.Table{Caption: "Facts and lookup neurons", Header: []string{"count", "value"}, NumericCols: []int{1}, Rows: [][]string{
		{"athletes known", fmt.Sprint(r.KnownFacts)},
		{"lookup layers (MLP)", reproLayerList(r.LookupLayers)},
		{"neurons in the lookup layers", fmt.Sprint(r.LookupNeurons)},
	}}
	out = append(out, t)
	if e := r.Effects; e != nil {
		out = append(out, &report.Lines{Caption: "Share of the sport logit lead removed by mean-ablating one MLP at the final name token", XLabel: "layer", YLabel: "share removed",
			X: reproLayerAxis(r.Layers), Series: []report.Series{{Name: "MLP at the final name token", Y: e.MLPAtName}}})
	}
	if c := r.Conjunction; c != nil {
		out = append(out, reproConjunctionTable(c))
		if len(c.FactsPerNeuronHistogram) > 1 {
			out = append(out, reproFactsPerNeuronBars(c))
		}
	}
	if s := r.SAE; s != nil {
		out = append(out, &report.Heading{Level: 3, Text: "SAE features"},
			&report.Paragraph{Text: fmt.Sprintf("%s at %s (d_sae %d), model processing %s, BOS %v. %s", s.Description, s.Hook, s.DSAE, s.Processing, s.PrependBOS, s.Note)},
			&report.Table{Caption: "Active latents per token", Header: []string{"tokens", "n", "mean", "p10", "median", "p90", "max"}, NumericCols: []int{1, 2, 3, 4, 5, 6},
				Rows: [][]string{reproCountsRow("final name token, every athlete", s.NameToken), reproCountsRow("final name token, known athletes", s.KnownNameToken), reproCountsRow("every token of the prompts", s.AllTokens)}})
		if len(s.NameActive) > 0 {
			out = append(out, reproActiveHistogram(s.NameActive))
		}
	}
	if t := r.Toy; t != nil {
		m := t.Mechanism
		rows := [][]string{
			{"layers × MLP neurons", fmt.Sprintf("%d × %d", m.Layers, m.DMLP)},
			{"facts of the relation " + m.Relation, fmt.Sprint(m.Facts)},
			{"recalled", fmt.Sprintf("%d (%.1f%%)", t.Recalled, 100*m.Recall)},
			{"recalled with every MLP neuron mean-ablated", fmt.Sprintf("%.1f%%", 100*m.AblatedRecall)},
			{"recalled facts per MLP neuron", fmt.Sprintf("%.2f", t.FactsPerNeuron)},
		}
		if a := m.Ablation; a != nil && a.Reached > 0 {
			rows = append(rows, []string{"neurons whose ablation removes half a fact's lead (mean, median, max)", fmt.Sprintf("%.2f, %d, %d", a.MeanSize, a.MedianSize, a.MaxSize)},
				[]string{"facts per neuron from those sets", fmt.Sprintf("%.2f", a.FactsPerNeuronAll)})
		}
		for _, b := range t.Baselines {
			if b.Relation == m.Relation {
				rows = append(rows, []string{"best recall from one name alone", fmt.Sprintf("%.1f%% (chance %.1f%%)", 100*max(b.FirstOnly, b.LastOnly), 100*b.Chance)})
			}
		}
		out = append(out, &report.Heading{Level: 3, Text: "Toy model"},
			&report.Table{Caption: "Toy model " + t.Dir, Header: []string{"measure", "value"}, NumericCols: []int{1}, Rows: rows},
			&report.Paragraph{Text: "The toy package's own reading: " + m.Verdict})
	}
	return out
}

func reproLayerList(ls []int) string {
	if len(ls) == 0 {
		return "none"
	}
	s := make([]string, len(ls))
	for i, l := range ls {
		s[i] = fmt.Sprint(l)
	}
	return strings.Join(s, ", ")
}

func reproCountsRow(name string, c reproduce.Counts) []string {
	if c.N == 0 {
		return []string{name, "0", "", "", "", "", ""}
	}
	return []string{name, fmt.Sprint(c.N), fmt.Sprintf("%.1f", c.Mean), fmt.Sprintf("%.0f", c.P10), fmt.Sprintf("%.0f", c.Median), fmt.Sprintf("%.0f", c.P90), fmt.Sprintf("%.0f", c.Max)}
}

// reproActiveHistogram bins the active-latent counts into about 12 bins.
func reproActiveHistogram(xs []float64) *report.Bars {
	hi := 0.0
	for _, x := range xs {
		hi = max(hi, x)
	}
	width := max(1, math.Ceil((hi+1)/12))
	n := int(math.Floor(hi/width)) + 1
	counts := make([]float64, n)
	for _, x := range xs {
		counts[int(x/width)]++
	}
	b := &report.Bars{Caption: "Active SAE latents at the final name token", XLabel: "active latents", YLabel: "athletes", Values: counts}
	for i := range counts {
		lo := float64(i) * width
		if width == 1 {
			b.Labels = append(b.Labels, fmt.Sprintf("%.0f", lo))
		} else {
			b.Labels = append(b.Labels, fmt.Sprintf("%.0f–%.0f", lo, lo+width-1))
		}
	}
	return b
}

// Sparse probing.

func reproSparseProbingBlocks(r *reproduce.SparseProbingResult) []report.Block {
	out := []report.Block{&report.Heading{Level: 2, Text: "Probes"}}
	for _, g := range []*reproduce.ProbeGrid{r.Sport, r.SportBinary, r.Names} {
		if g == nil {
			continue
		}
		if g.F1 == nil {
			out = append(out, &report.Paragraph{Text: fmt.Sprintf("%s: not probed (%d examples).", g.Task, g.Examples)})
			continue
		}
		hm := &report.Heatmap{Caption: fmt.Sprintf("%s — held-out F1 by layer and k (%s; %d examples, %d train / %d test)", g.Task, g.Description, g.Examples, g.Train, g.Test), Digits: 2}
		for _, k := range g.Ks {
			hm.ColLabels = append(hm.ColLabels, fmt.Sprintf("k=%d", k))
		}
		for i, l := range g.Layers {
			hm.RowLabels = append(hm.RowLabels, fmt.Sprintf("L%d", l))
			hm.Values = append(hm.Values, g.F1[i])
		}
		lines := &report.Lines{Caption: g.Task + " — F1 against k, one line per layer", XLabel: "k (neurons)", YLabel: "F1"}
		for _, k := range g.Ks {
			lines.X = append(lines.X, float64(k))
		}
		for i, l := range g.Layers {
			lines.Series = append(lines.Series, report.Series{Name: fmt.Sprintf("L%d", l), Y: g.F1[i]})
		}
		out = append(out, hm, lines)
	}
	return out
}
