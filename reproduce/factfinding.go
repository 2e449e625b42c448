package reproduce

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/gpt2"
)

// AthleteConfig is what the athlete studies share: the athletes' source,
// the prompt, the filter and the sample.
type AthleteConfig struct {
	// Dataset names the athletes for the report; Paths are their files.
	Dataset string
	Paths   []string
	// Template is the prompt with "{}" for the name; "" means
	// OneShotTemplate.
	Template   string
	PrependBOS bool
	// Threshold is the probability on the right sport's first token the
	// model must give for an athlete to count as known; 0 means 0.5.
	Threshold float64
	// Limit studies a seeded sample of this many known athletes (0: all).
	Limit int
	// Seed draws the sample and the alternate names; 0 means 1.
	Seed uint64
	// MinFacts is the number of known athletes a verdict needs; 0 means 20.
	MinFacts int
	Progress Progress
}

func (c *AthleteConfig) defaults() {
	if c.Template == "" {
		c.Template = OneShotTemplate
	}
	if c.Threshold == 0 {
		c.Threshold = 0.5
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.MinFacts == 0 {
		c.MinFacts = 20
	}
}

func (c *AthleteConfig) selectAthletes(ctx context.Context, m *gpt2.Model, tok *gpt2.Tokenizer, athletes []Athlete) (*athleteSet, error) {
	if c.Limit < 0 || c.MinFacts < 0 {
		return nil, fmt.Errorf("reproduce: negative limit or minimum")
	}
	if len(athletes) == 0 {
		return nil, fmt.Errorf("reproduce: no athletes")
	}
	return selectAthletes(ctx, m, tok, athletes, athleteOptions{Name: c.Dataset, Paths: c.Paths, Template: c.Template, BOS: c.PrependBOS,
		Threshold: c.Threshold, Limit: c.Limit, Seed: c.Seed})
}

// FactFindingConfig controls the Fact Finding study.
type FactFindingConfig struct {
	AthleteConfig
	// Alternates is the number of other first and other last names each
	// name is paired with in the conjunction and counterfactual tests;
	// 0 means 4.
	Alternates int
	// MaxANDChecks bounds the AND neurons ablated per fact (largest
	// interaction first); 0 means 32.
	MaxANDChecks int
}

// ProbeCurve is a sport probe's held-out accuracy at the final name token,
// layer by layer.
type ProbeCurve struct {
	Point    string    `json:"point"`
	Labels   []string  `json:"labels"` // "embed", then "L0" … (hook_resid_post of each layer)
	Accuracy []float64 `json:"accuracy"`
	Classes  []string  `json:"classes"`
	K        int       `json:"k"` // features per one-vs-rest probe
	Train    int       `json:"train"`
	Test     int       `json:"test"`
	Majority float64   `json:"majority"` // share of the most common sport among the probed facts
	// Readable is the first entry whose accuracy reaches probeReadable (and
	// the majority share + probeMargin), -1 if none.
	Readable int `json:"readable"`
}

// FactFindingResult is the Fact Finding study on one model.
type FactFindingResult struct {
	Header
	Sports []string `json:"sports"`
	// KnownBySport counts the studied known athletes per sport.
	KnownBySport []int `json:"known_by_sport"`

	Effects      *LayerEffects `json:"effects,omitempty"`
	LookupLayers []int         `json:"lookup_layers"`
	// NameAttention[l] is the largest (over heads) mean attention weight
	// from the final name token onto the name's earlier tokens, over the
	// MultiTokenNames studied names of two or more tokens.
	NameAttention   []float64 `json:"name_attention"`
	MultiTokenNames int       `json:"multi_token_names"`

	Probe          *ProbeCurve          `json:"probe,omitempty"`
	Conjunction    *ConjunctionStats    `json:"conjunction,omitempty"`
	Counterfactual *CounterfactualStats `json:"counterfactual,omitempty"`
}

// FactFinding runs the athlete → sport study of Nanda, Rajamanoharan, Kramár
// & Shah on the athletes this model knows: where the lookup happens (mean
// ablations by layer), where the name is gathered (attention), where the
// sport becomes linearly readable (probes), whether single neurons are clean
// AND gates (conjunction test plus ablation), and whether counterfactual
// names account for the true name's effect.
func FactFinding(ctx context.Context, m *gpt2.Model, tok *gpt2.Tokenizer, athletes []Athlete, cfg FactFindingConfig) (*FactFindingResult, error) {
	start := time.Now()
	cfg.defaults()
	if cfg.Alternates == 0 {
		cfg.Alternates = 4
	}
	if cfg.MaxANDChecks == 0 {
		cfg.MaxANDChecks = 32
	}
	if cfg.Alternates < 0 || cfg.MaxANDChecks < 0 {
		return nil, fmt.Errorf("reproduce: fact-finding: negative settings")
	}
	res := &FactFindingResult{Header: newHeader(StudyFactFinding, m, cfg.PrependBOS)}
	h := &res.Header
	t0 := time.Now()
	set, err := cfg.selectAthletes(ctx, m, tok, athletes)
	if err != nil {
		return nil, err
	}
	h.timed("score athletes", len(set.all), t0)
	h.Dataset = set.info
	res.Sports = set.sports
	h.set("metric", "sport logit lead at the last position: logit(right sport) − mean logit(other sports), first tokens")
	h.set("mean ablation", "a layer's output at one position replaced by its mean over the studied known athletes at that position")
	h.set("alternates", fmt.Sprintf("%d other first and %d other last names per name, drawn from the known athletes with seed %d", cfg.Alternates, cfg.Alternates, cfg.Seed))

	prompts, labels := set.knownPrompts()
	res.KnownBySport = make([]int, len(set.sports))
	for _, l := range labels {
		res.KnownBySport[l]++
	}
	if len(prompts) > 0 {
		t0 = time.Now()
		st, err := measureNames(ctx, m, prompts, true)
		if err != nil {
			return nil, err
		}
		res.NameAttention, res.MultiTokenNames = st.nameAttn, st.multiToken
		h.timed("clean runs", len(prompts), t0)

		t0 = time.Now()
		eff, cleanLeads, err := ablateLayers(ctx, m, prompts, labels, set.sportTokens, st, cfg.Progress)
		if err != nil {
			return nil, err
		}
		res.Effects, res.LookupLayers = eff, eff.lookupLayers()
		h.timed("layer ablations", len(prompts), t0)

		t0 = time.Now()
		if res.Probe, err = sportProbe(st.resid, labels, set.sports, m, cfg.Seed); err != nil {
			return nil, err
		}
		h.timed("probes", len(prompts), t0)

		t0 = time.Now()
		res.Conjunction, res.Counterfactual, err = conjunctionTests(ctx, m, tok, set, prompts, labels, cleanLeads, st,
			conjunctionOptions{alternates: cfg.Alternates, seed: cfg.Seed, maxChecks: cfg.MaxANDChecks, counter: true}, cfg.Progress)
		if err != nil {
			return nil, err
		}
		h.timed("conjunction and counterfactual tests", len(prompts), t0)
	}
	res.Findings = factFindingFindings(res, cfg)
	h.Seconds = time.Since(start).Seconds()
	return res, nil
}

// Probe settings and verdict thresholds.
const (
	probeK        = 64  // features per one-vs-rest probe (fewer if the stream is narrower)
	probeReadable = 0.8 // held-out accuracy that counts as "linearly readable"
	probeMargin   = 0.2 // and by how much it must beat the majority share
	earlyDepth    = 0.5 // "early" and "by a middle layer": depth at most this
)

// sportProbe fits a sport probe on the residual stream at the final name
// token before the first block and after each, keeping sports with at least
// two known athletes.
func sportProbe(resid [][][]float32, labels []int, sports []string, m *gpt2.Model, seed uint64) (*ProbeCurve, error) {
	counts := make([]int, len(sports))
	for _, l := range labels {
		counts[l]++
	}
	var classes []string
	remap := make([]int, len(sports))
	for s, c := range counts {
		remap[s] = -1
		if c >= 2 {
			remap[s] = len(classes)
			classes = append(classes, sports[s])
		}
	}
	if len(classes) < 2 {
		return nil, nil
	}
	var rows []int
	var y []int
	most := 0
	for i, l := range labels {
		if remap[l] >= 0 {
			rows = append(rows, i)
			y = append(y, remap[l])
			most = max(most, counts[l])
		}
	}
	k := min(probeK, m.DModel())
	pc := &ProbeCurve{Point: "hook_resid_post at the final name token (embed: blocks.0.hook_resid_pre)", Classes: classes, K: k,
		Majority: float64(most) / float64(len(rows)), Readable: -1}
	for j := 0; j <= m.NLayer(); j++ {
		X := make([][]float32, len(rows))
		for r, i := range rows {
			X[r] = resid[i][j]
		}
		pr, err := analysis.SparseProbe(X, y, classes, analysis.ProbeOptions{Ks: []int{k}, Seed: seed})
		if err != nil {
			return nil, fmt.Errorf("reproduce: sport probe: %w", err)
		}
		label := "embed"
		if j > 0 {
			label = fmt.Sprintf("L%d", j-1)
		}
		acc := pr.PerK[0].Accuracy
		pc.Labels = append(pc.Labels, label)
		pc.Accuracy = append(pc.Accuracy, acc)
		pc.Train, pc.Test = pr.Train, pr.Test
		if pc.Readable < 0 && acc >= probeReadable && acc >= pc.Majority+probeMargin {
			pc.Readable = j
		}
	}
	return pc, nil
}

func layerList(ls []int) string {
	if len(ls) == 0 {
		return "none"
	}
	s := make([]string, len(ls))
	for i, l := range ls {
		s[i] = fmt.Sprint(l)
	}
	return strings.Join(s, ", ")
}

func argmaxF(xs []float64) int {
	best := 0
	for i, v := range xs {
		if v > xs[best] {
			best = i
		}
	}
	return best
}

func factFindingFindings(r *FactFindingResult, cfg FactFindingConfig) []Finding {
	n, total := r.Dataset.Used, r.Dataset.Total
	L := r.Layers
	what := fmt.Sprintf("athletes (P(right sport) > %g)", cfg.Threshold)
	lookupRule := fmt.Sprintf("a layer does lookup if mean-ablating its MLP output at the final name token removes ≥ %.0f%% of the mean sport logit lead; supported if some layer does and all such layers are at depth ≤ %.1f; needs ≥ %d known athletes", 100*lookupThreshold, earlyDepth, cfg.MinFacts)
	gatherRule := fmt.Sprintf("supported if mean-ablating attention layer 0 or 1 at the final name token removes ≥ %.0f%% of the sport logit lead and no later attention layer there removes more", 100*lookupThreshold)
	probeRule := fmt.Sprintf("a %d-feature logistic probe per sport (one-vs-rest, mean-difference feature choice, 30%% held out, seed %d) on the residual stream at the final name token; readable once held-out accuracy ≥ %.0f%% and ≥ the majority share + %.0f points; supported if that happens at depth ≤ %.1f", min(probeK, r.DModel), cfg.Seed, 100*probeReadable, 100*probeMargin, earlyDepth)
	andRule := fmt.Sprintf("AND test of analysis.ConjunctionTest (mlp.hook_post at the final name token; act ≥ min_act, interaction ≥ τ·act, each one-name mean ≤ (1−τ)·act); a fact has a clean gate if one AND neuron's mean-ablation alone removes ≥ %.0f%% of its sport lead; supported if fewer than %.0f%% of the facts have one", 100*cleanGateFraction, 100*andFactShare)
	cfRule := fmt.Sprintf("unexplained share = Σ interaction / Σ (lead(A B) − lead(· ·)) with interaction = lead(A B) − lead(A ·) − lead(· B) + lead(· ·); supported if it is ≥ %.0f%%", 100*counterfactualShare)

	out := []Finding{
		{Claim: claim(ClaimFFLookup), N: n},
		{Claim: claim(ClaimFFGather), N: n},
		{Claim: claim(ClaimFFProbe), N: n},
		{Claim: claim(ClaimFFNoANDGate), N: n},
		{Claim: claim(ClaimFFCounterfactual), N: n},
	}
	rules := []string{lookupRule, gatherRule, probeRule, andRule, cfRule}
	if v, stop := countVerdict("", n, total, cfg.MinFacts, what); stop {
		for i := range out {
			v.Rule = rules[i]
			out[i].Verdict = v
			out[i].Ours = fmt.Sprintf("%d of %d athletes known", r.Dataset.Known, total)
			out[i].Brief = fmt.Sprintf("%d of %d known", r.Dataset.Known, total)
		}
		return out
	}
	layer := func(l int) string { return fmt.Sprintf("layer %d of %d (depth %.2f)", l, L, depth(l, L)) }
	e := r.Effects

	// Lookup.
	mName, mFinal := argmaxF(e.MLPAtName), argmaxF(e.MLPAtFinal)
	out[0].Ours = fmt.Sprintf("MLP layers removing ≥ %.0f%% at the final name token: %s (largest %s at layer %d); at the final token the largest is %s at layer %d",
		100*lookupThreshold, layerList(r.LookupLayers), pct(e.MLPAtName[mName]), mName, pct(e.MLPAtFinal[mFinal]), mFinal)
	out[0].Brief = fmt.Sprintf("MLPs %s of %d", layerList(r.LookupLayers), L)
	if len(r.LookupLayers) == 0 {
		out[0].Brief = fmt.Sprintf("none (max %s at MLP %d)", pct(e.MLPAtName[mName]), mName)
	}
	switch {
	case len(r.LookupLayers) == 0:
		out[0].Verdict = verdict(NotSupported, lookupRule, "no MLP layer at the final name token removes %.0f%% of the lead (largest %s, %s); at the final token, %s removes %s", 100*lookupThreshold, pct(e.MLPAtName[mName]), layer(mName), layer(mFinal), pct(e.MLPAtFinal[mFinal]))
	case depth(slices.Max(r.LookupLayers), L) <= earlyDepth:
		out[0].Verdict = verdict(Supported, lookupRule, "the lookup layers are MLPs %s (of %d), all in the first half", layerList(r.LookupLayers), L)
	default:
		out[0].Verdict = verdict(NotSupported, lookupRule, "the layers removing ≥ %.0f%% at the final name token (%s) reach beyond the first half of the %d layers", 100*lookupThreshold, layerList(r.LookupLayers), L)
	}

	// Gathering.
	early := e.AttnAtName[0]
	if L > 1 {
		early = max(early, e.AttnAtName[1])
	}
	late := 0.0
	lateL := -1
	for l := 2; l < L; l++ {
		if e.AttnAtName[l] > late {
			late, lateL = e.AttnAtName[l], l
		}
	}
	attnText := ""
	if r.MultiTokenNames > 0 {
		attnText = fmt.Sprintf("; over %d multi-token names the final name token's strongest head puts %s of its attention on the earlier name tokens in layer 0", r.MultiTokenNames, pct(r.NameAttention[0]))
		if L > 1 {
			attnText += fmt.Sprintf(" and %s in layer 1", pct(r.NameAttention[1]))
		}
	}
	out[1].Ours = fmt.Sprintf("mean-ablating attention at the final name token removes %s (layer 0)", pct(e.AttnAtName[0]))
	if L > 1 {
		out[1].Ours += fmt.Sprintf(", %s (layer 1)", pct(e.AttnAtName[1]))
	}
	if lateL >= 0 {
		out[1].Ours += fmt.Sprintf("; the most of any later layer is %s (layer %d)", pct(late), lateL)
	}
	out[1].Ours += attnText
	out[1].Brief = "L0 " + pct(e.AttnAtName[0])
	if L > 1 {
		out[1].Brief += ", L1 " + pct(e.AttnAtName[1])
	}
	switch {
	case early >= lookupThreshold && late <= early:
		out[1].Verdict = verdict(Supported, gatherRule, "attention layers 0–1 at the final name token carry %s of the lead, more than any later layer", pct(early))
	case early < lookupThreshold:
		out[1].Verdict = verdict(NotSupported, gatherRule, "ablating attention layers 0–1 at the final name token removes at most %s", pct(early))
	default:
		out[1].Verdict = verdict(NotSupported, gatherRule, "attention layer %d at the final name token matters more (%s) than layers 0–1 (%s)", lateL, pct(late), pct(early))
	}

	// Probe.
	if p := r.Probe; p == nil {
		out[2].Verdict = verdict(Inconclusive, probeRule, "fewer than two sports have two known athletes")
	} else {
		best := argmaxF(p.Accuracy)
		out[2].Ours = fmt.Sprintf("held-out accuracy %s at %s (best), %s at embed; majority share %s; %d train / %d test", pct(p.Accuracy[best]), p.Labels[best], pct(p.Accuracy[0]), pct(p.Majority), p.Train, p.Test)
		out[2].N = p.Train + p.Test
		out[2].Brief = fmt.Sprintf("best %s at %s", pct(p.Accuracy[best]), p.Labels[best])
		if p.Readable >= 0 {
			out[2].Brief = fmt.Sprintf("%s at %s/%d", pct(p.Accuracy[p.Readable]), p.Labels[p.Readable], L)
			out[2].Value = num(p.Accuracy[p.Readable])
			out[2].Ours = fmt.Sprintf("readable (%s) at %s; ", pct(p.Accuracy[p.Readable]), p.Labels[p.Readable]) + out[2].Ours
		} else {
			out[2].Value = num(p.Accuracy[best])
		}
		switch {
		case p.Readable < 0:
			out[2].Verdict = verdict(NotSupported, probeRule, "no layer reaches %.0f%% held-out accuracy (best %s at %s)", 100*probeReadable, pct(p.Accuracy[best]), p.Labels[best])
		case p.Readable == 0 || depth(p.Readable-1, L) <= earlyDepth:
			out[2].Verdict = verdict(Supported, probeRule, "the sport is linearly readable at the final name token from %s (%s)", p.Labels[p.Readable], pct(p.Accuracy[p.Readable]))
		default:
			out[2].Verdict = verdict(NotSupported, probeRule, "the sport becomes readable only at %s, past the middle", p.Labels[p.Readable])
		}
	}

	// AND gates.
	if c := r.Conjunction; c == nil {
		out[3].Verdict = verdict(Inconclusive, andRule, "too few distinct first and last names among the known athletes for the AND test")
	} else {
		out[3].N = c.Facts
		share := float64(c.CleanGateFacts) / float64(c.Facts)
		out[3].Value = num(share)
		out[3].Brief = fmt.Sprintf("%d of %d facts have one", c.CleanGateFacts, c.Facts)
		out[3].Ours = fmt.Sprintf("%d of %d facts have a clean gate; %d have an AND neuron (%d gates on %d distinct neurons: %.1f per fact with one, %.1f facts per neuron)",
			c.CleanGateFacts, c.Facts, c.FactsWithAND, c.ANDPairs, c.ANDNeurons, c.NeuronsPerANDFact, c.FactsPerANDNeuron)
		if share < andFactShare {
			out[3].Verdict = verdict(Supported, andRule, "%s of the facts (%d of %d) have a single AND neuron that carries them", pct(share), c.CleanGateFacts, c.Facts)
		} else {
			g := c.CleanGates[0]
			out[3].Verdict = verdict(NotSupported, andRule, "%s of the facts (%d of %d) have a clean AND gate, e.g. L%dN%d for %s (removes %s)", pct(share), c.CleanGateFacts, c.Facts, g.Layer, g.Neuron, g.Subject, pct(g.Removed))
		}
	}

	// Counterfactual names.
	if c := r.Counterfactual; c == nil || c.Facts == 0 {
		out[4].Verdict = verdict(Inconclusive, cfRule, "too few distinct first and last names among the known athletes")
	} else {
		out[4].N = c.Facts
		out[4].Value = num(c.Unexplained)
		out[4].Brief = pct(c.Unexplained) + " unexplained"
		out[4].Ours = fmt.Sprintf("%s of the true names' effect is not additive; mean lead %.2f true, %.2f first name only, %.2f last name only, %.2f neither; the additive prediction ranks the right sport first for %d of %d",
			pct(c.Unexplained), c.MeanLead, c.MeanLeadFirst, c.MeanLeadLast, c.MeanLeadNeither, c.AdditiveCorrect, c.Facts)
		if c.Unexplained >= counterfactualShare {
			out[4].Verdict = verdict(Supported, cfRule, "the counterfactual names leave %s of the effect unexplained", pct(c.Unexplained))
		} else {
			out[4].Verdict = verdict(NotSupported, cfRule, "the counterfactual names account for all but %s of the effect", pct(c.Unexplained))
		}
	}
	return out
}

// Thresholds of the AND-gate and counterfactual verdicts.
const (
	andFactShare        = 0.10
	counterfactualShare = 0.20
)
