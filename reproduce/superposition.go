package reproduce

import (
	"context"
	"fmt"
	"time"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/sae"
	"github.com/factlens/factlens/toy"
)

// SAEInput is an SAE for the superposition study and the model run it reads.
type SAEInput struct {
	SAE *sae.SAE
	// Model is the model the SAE reads, under the weight processing the SAE
	// was trained with; nil means the studied model.
	Model *gpt2.Model
	// PrependBOS is the BOS choice of the SAE's training (its
	// metadata.prepend_bos).
	PrependBOS bool
	// Hook is the hook point read; "" means the SAE's metadata.hook_name.
	Hook string
	// Description names the SAE in the report (release, repository,
	// folder); Note says which weight processing was applied and why.
	Description string
	Note        string
}

// SuperpositionConfig controls the superposition study.
type SuperpositionConfig struct {
	AthleteConfig
	// Alternates for the AND test; 0 means 4.
	Alternates int
	// SAE, if given, is read at the final name token of every athlete.
	SAE *SAEInput
	// Toy, if given, is a toy model whose facts per neuron are measured;
	// ToyRelation picks its relation ("" means its first) and ToySample the
	// facts whose minimal ablation sets are searched (0 means 64).
	Toy         *toy.Folder
	ToyRelation string
	ToySample   int
}

// Counts summarises a distribution of counts.
type Counts struct {
	N      int     `json:"n"`
	Mean   float64 `json:"mean"`
	Min    float64 `json:"min"`
	P10    float64 `json:"p10"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
	Max    float64 `json:"max"`
}

func countsOf(xs []float64) Counts {
	if len(xs) == 0 {
		return Counts{}
	}
	return Counts{N: len(xs), Mean: mean(xs), Min: quantile(xs, 0), P10: quantile(xs, 0.1), Median: quantile(xs, 0.5), P90: quantile(xs, 0.9), Max: quantile(xs, 1)}
}

// SAEStats are the active SAE features per token.
type SAEStats struct {
	Description string `json:"description"`
	Note        string `json:"note,omitempty"`
	Hook        string `json:"hook"`
	DSAE        int    `json:"d_sae"`
	Processing  string `json:"processing"`
	PrependBOS  bool   `json:"prepend_bos"`
	// NameToken counts the active features at the final name token of
	// every athlete that fits the model; KnownNameToken only the studied
	// known ones; AllTokens every token of the athletes' prompts but BOS.
	NameToken      Counts    `json:"name_token"`
	KnownNameToken Counts    `json:"known_name_token"`
	AllTokens      Counts    `json:"all_tokens"`
	NameActive     []float64 `json:"name_token_active"`
}

// ToyStats are a toy model's facts per neuron.
type ToyStats struct {
	Dir       string          `json:"dir"`
	Mechanism *toy.Mechanism  `json:"mechanism"`
	Baselines []toy.Baseline  `json:"baselines"`
	Model     toy.ModelConfig `json:"model"`
	// Recalled is the number of the relation's facts recalled.
	Recalled       int     `json:"recalled"`
	FactsPerNeuron float64 `json:"facts_per_neuron"` // Recalled / neurons
}

// SuperpositionResult is the superposition study on one model.
type SuperpositionResult struct {
	Header
	Effects       *LayerEffects     `json:"effects,omitempty"`
	LookupLayers  []int             `json:"lookup_layers"`
	LookupNeurons int               `json:"lookup_neurons"`
	KnownFacts    int               `json:"known_facts"`
	Conjunction   *ConjunctionStats `json:"conjunction,omitempty"`
	SAE           *SAEStats         `json:"sae,omitempty"`
	Toy           *ToyStats         `json:"toy,omitempty"`
}

// Superposition measures what bears on computation in superposition: the
// facts this model knows against the MLP neurons of the layers that look
// them up, how AND gates are shared between facts, the number of active SAE
// features at the final name token (with an SAE), and how many facts a toy
// model stores per neuron (with a toy model).
func Superposition(ctx context.Context, m *gpt2.Model, tok *gpt2.Tokenizer, athletes []Athlete, cfg SuperpositionConfig) (*SuperpositionResult, error) {
	start := time.Now()
	cfg.defaults()
	if cfg.Alternates == 0 {
		cfg.Alternates = 4
	}
	res := &SuperpositionResult{Header: newHeader(StudySuperposition, m, cfg.PrependBOS)}
	h := &res.Header
	t0 := time.Now()
	set, err := cfg.selectAthletes(ctx, m, tok, athletes)
	if err != nil {
		return nil, err
	}
	h.timed("score athletes", len(set.all), t0)
	h.Dataset = set.info
	res.KnownFacts = set.info.Known
	prompts, labels := set.knownPrompts()
	if len(prompts) > 0 {
		t0 = time.Now()
		st, err := measureNames(ctx, m, prompts, false)
		if err != nil {
			return nil, err
		}
		eff, cleanLeads, err := ablateLayers(ctx, m, prompts, labels, set.sportTokens, st, cfg.Progress)
		if err != nil {
			return nil, err
		}
		res.Effects, res.LookupLayers = eff, eff.lookupLayers()
		res.LookupNeurons = len(res.LookupLayers) * m.DMLP()
		h.timed("layer ablations", len(prompts), t0)
		if len(res.LookupLayers) > 0 {
			t0 = time.Now()
			res.Conjunction, _, err = conjunctionTests(ctx, m, tok, set, prompts, labels, cleanLeads, st,
				conjunctionOptions{alternates: cfg.Alternates, seed: cfg.Seed, layers: res.LookupLayers}, cfg.Progress)
			if err != nil {
				return nil, err
			}
			h.timed("conjunction tests", len(prompts), t0)
		}
	}
	if cfg.SAE != nil {
		t0 = time.Now()
		if res.SAE, err = saeCounts(ctx, tok, set, cfg.SAE, m); err != nil {
			return nil, err
		}
		h.timed("SAE features", res.SAE.NameToken.N, t0)
	}
	if cfg.Toy != nil {
		t0 = time.Now()
		if res.Toy, err = toyCounts(ctx, cfg.Toy, cfg.ToyRelation, cfg.ToySample, cfg.Seed); err != nil {
			return nil, err
		}
		h.timed("toy model mechanism", res.Toy.Mechanism.Facts, t0)
	}
	res.Findings = superpositionFindings(res, cfg)
	h.Seconds = time.Since(start).Seconds()
	return res, nil
}

// saeCounts encodes the SAE's hook at every athlete prompt's tokens and
// counts the active (positive) latents.
func saeCounts(ctx context.Context, tok *gpt2.Tokenizer, set *athleteSet, in *SAEInput, studied *gpt2.Model) (*SAEStats, error) {
	s := in.SAE
	m := in.Model
	if m == nil {
		m = studied
	}
	hook := in.Hook
	if hook == "" {
		hook = s.Config.Metadata.HookName
	}
	if err := m.CheckHookName(hook); err != nil {
		return nil, fmt.Errorf("reproduce: SAE hook: %w", err)
	}
	if s.Config.Metadata.HookHeadIndex != nil {
		return nil, fmt.Errorf("reproduce: SAEs of one attention head (hook_head_index) are not supported here")
	}
	out := &SAEStats{Description: in.Description, Note: in.Note, Hook: hook, DSAE: s.Config.DSAE, Processing: m.Processing.String(), PrependBOS: in.PrependBOS}
	var facts []analysis.Fact
	known := map[string]bool{}
	for _, k := range set.known {
		known[set.all[k].Fact.Subject] = true
	}
	for _, p := range set.all {
		facts = append(facts, p.Fact)
	}
	prompts, _, err := buildPrompts(m, tok, facts, in.PrependBOS)
	if err != nil {
		return nil, err
	}
	toks := make([][]int, len(prompts))
	maxLen := 1
	for i, p := range prompts {
		toks[i] = p.Tokens
		maxLen = max(maxLen, len(p.Tokens))
	}
	var name, knownName, all []float64
	err = forGroups(ctx, m, toks, cachedRows(maxLen, s.Config.DIn+s.Config.DSAE), gpt2.RunOptions{Cache: gpt2.HookName(hook), Logits: gpt2.LogitsNone}, func(idx []int, res *gpt2.Result) error {
		act := res.Cache[hook]
		if act == nil {
			return fmt.Errorf("reproduce: the run did not reach %s", hook)
		}
		P := act.Shape[1]
		width := len(act.Data) / (act.Shape[0] * P)
		if width != s.Config.DIn {
			return fmt.Errorf("reproduce: the SAE has d_in %d but %s gives %d values per token", s.Config.DIn, hook, width)
		}
		x := act.Data
		feats, err := s.Encode(x, act.Shape[0]*P)
		if err != nil {
			return err
		}
		for r, i := range idx {
			p := prompts[i]
			for pos := 0; pos < P; pos++ {
				if p.BOS && pos == 0 {
					continue
				}
				row := feats[(r*P+pos)*s.Config.DSAE : (r*P+pos+1)*s.Config.DSAE]
				n := 0
				for _, v := range row {
					if v > 0 {
						n++
					}
				}
				all = append(all, float64(n))
				if pos == p.LastSubject() {
					name = append(name, float64(n))
					if known[p.Fact.Subject] {
						knownName = append(knownName, float64(n))
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out.NameToken, out.KnownNameToken, out.AllTokens, out.NameActive = countsOf(name), countsOf(knownName), countsOf(all), name
	return out, nil
}

// toyCounts runs the toy package's mechanism analysis.
func toyCounts(ctx context.Context, f *toy.Folder, relation string, sample int, seed uint64) (*ToyStats, error) {
	mech, err := toy.Analyze(ctx, f, toy.MechanismOptions{Relation: relation, Sample: sample, Seed: seed})
	if err != nil {
		return nil, err
	}
	ts := &ToyStats{Dir: f.Dir, Mechanism: mech, Baselines: f.World.Baselines(), Model: f.State.Model}
	ts.Recalled = int(mech.Recall*float64(mech.Facts) + 0.5)
	ts.FactsPerNeuron = float64(ts.Recalled) / float64(mech.Neurons)
	return ts, nil
}

// Verdict thresholds of the superposition study.
const (
	saeL0Low, saeL0High = 30, 100
	sharedMin           = 1.5 // "many" facts per neuron and "several" neurons per fact
	toyRecall           = 0.9
	toyMLPDrop          = 0.5
)

func superpositionFindings(r *SuperpositionResult, cfg SuperpositionConfig) []Finding {
	n, total := r.Dataset.Used, r.Dataset.Total
	what := fmt.Sprintf("athletes (P(right sport) > %g)", cfg.Threshold)
	underRule := fmt.Sprintf("lookup layers as in fact-finding (mean-ablating the MLP output at the final name token removes ≥ %.0f%% of the sport logit lead); supported if the known athletes are fewer than the lookup layers' MLP neurons; needs ≥ %d known athletes", 100*lookupThreshold, cfg.MinFacts)
	saeRule := fmt.Sprintf("supported if the median number of positive SAE latents at the final name token is between %d and %d", saeL0Low, saeL0High)
	sharedRule := fmt.Sprintf("AND neurons from the conjunction test (see fact-finding) among the lookup layers' neurons at the final name token; supported if an AND neuron gates more than %.1f facts on average and a fact with AND neurons has more than %.1f", sharedMin, sharedMin)
	toyRule := fmt.Sprintf("supported if the toy model recalls ≥ %.0f%% of more facts than it has MLP neurons, and mean-ablating every MLP neuron lowers its recall by ≥ %.0f points (the MLP stores them)", 100*toyRecall, 100*toyMLPDrop)

	out := []Finding{
		{Claim: claim(ClaimSupUnderdetermined), N: n},
		{Claim: claim(ClaimSupSAEL0)},
		{Claim: claim(ClaimSupSharedANDs), N: n},
		{Claim: claim(ClaimSupToy)},
	}
	if v, stop := countVerdict(underRule, n, total, cfg.MinFacts, what); stop {
		out[0].Verdict = v
		out[0].Ours = fmt.Sprintf("%d of %d athletes known", r.KnownFacts, total)
		out[0].Brief = fmt.Sprintf("%d of %d known", r.KnownFacts, total)
		v.Rule = sharedRule
		out[2].Verdict = v
		out[2].Ours, out[2].Brief = out[0].Ours, out[0].Brief
	} else {
		if len(r.LookupLayers) == 0 {
			out[0].Verdict = verdict(NotFound, underRule, "no lookup layer: no MLP at the final name token removes %.0f%% of the lead", 100*lookupThreshold)
			out[0].Ours = fmt.Sprintf("%d known athletes; no lookup layer", r.KnownFacts)
			out[0].Brief = "no lookup layer"
		} else {
			ratio := float64(r.KnownFacts) / float64(r.LookupNeurons)
			out[0].Value = num(ratio)
			out[0].Brief = fmt.Sprintf("%d facts / %d neurons", r.KnownFacts, r.LookupNeurons)
			out[0].Ours = fmt.Sprintf("%d known athletes on %d neurons of MLPs %s (%.3g facts per neuron)", r.KnownFacts, r.LookupNeurons, layerList(r.LookupLayers), ratio)
			if ratio < 1 {
				out[0].Verdict = verdict(Supported, underRule, "%d known athletes against %d lookup neurons", r.KnownFacts, r.LookupNeurons)
			} else {
				out[0].Verdict = verdict(NotSupported, underRule, "%d known athletes outnumber the %d lookup neurons", r.KnownFacts, r.LookupNeurons)
			}
		}
		switch c := r.Conjunction; {
		case len(r.LookupLayers) == 0:
			out[2].Verdict = verdict(NotFound, sharedRule, "no lookup layer whose neurons could be tested")
			out[2].Brief = "no lookup layer"
		case c == nil:
			out[2].Verdict = verdict(Inconclusive, sharedRule, "too few distinct first and last names among the known athletes for the AND test")
		case c.ANDPairs == 0:
			out[2].N = c.Facts
			out[2].Verdict = verdict(NotFound, sharedRule, "no neuron passes the AND test for any of the %d facts", c.Facts)
		default:
			out[2].N = c.Facts
			out[2].Value = num(c.FactsPerANDNeuron)
			out[2].Brief = fmt.Sprintf("%.2f facts per AND neuron, %.2f neurons per fact", c.FactsPerANDNeuron, c.NeuronsPerANDFact)
			out[2].Ours = fmt.Sprintf("%d AND gates on %d neurons: %.2f facts per AND neuron, %.2f AND neurons per fact that has one (%d of %d facts)", c.ANDPairs, c.ANDNeurons, c.FactsPerANDNeuron, c.NeuronsPerANDFact, c.FactsWithAND, c.Facts)
			if c.FactsPerANDNeuron > sharedMin && c.NeuronsPerANDFact > sharedMin {
				out[2].Verdict = verdict(Supported, sharedRule, "AND neurons are shared (%.2f facts each) and facts use several (%.2f each)", c.FactsPerANDNeuron, c.NeuronsPerANDFact)
			} else {
				out[2].Verdict = verdict(NotSupported, sharedRule, "%.2f facts per AND neuron and %.2f AND neurons per fact", c.FactsPerANDNeuron, c.NeuronsPerANDFact)
			}
		}
	}

	// SAE.
	switch s := r.SAE; {
	case s == nil:
		out[1].Verdict = verdict(NotMeasured, saeRule, "no SAE given")
	case s.NameToken.N == 0:
		out[1].Verdict = verdict(NotFound, saeRule, "no athlete prompt fits the model")
	default:
		out[1].N = s.NameToken.N
		out[1].Value = num(s.NameToken.Median)
		out[1].Brief = fmt.Sprintf("median %.0f", s.NameToken.Median)
		out[1].Ours = fmt.Sprintf("median %.0f active latents at the final name token (p10 %.0f, p90 %.0f, mean %.1f; %d tokens); %.0f over all tokens of the prompts; %s at %s",
			s.NameToken.Median, s.NameToken.P10, s.NameToken.P90, s.NameToken.Mean, s.NameToken.N, s.AllTokens.Median, s.Description, s.Hook)
		if s.NameToken.Median >= saeL0Low && s.NameToken.Median <= saeL0High {
			out[1].Verdict = verdict(Supported, saeRule, "a median of %.0f latents are active at the final name token", s.NameToken.Median)
		} else {
			out[1].Verdict = verdict(NotSupported, saeRule, "a median of %.0f latents are active at the final name token", s.NameToken.Median)
		}
	}

	// Toy model.
	if t := r.Toy; t == nil {
		out[3].Verdict = verdict(NotMeasured, toyRule, "no toy model given")
	} else {
		mc := t.Mechanism
		out[3].N = mc.Facts
		out[3].Value = num(t.FactsPerNeuron)
		out[3].Brief = fmt.Sprintf("%.1f facts per neuron", t.FactsPerNeuron)
		out[3].Ours = fmt.Sprintf("%d-layer toy model, %d MLP neurons, recalls %d of %d %s facts (%.1f per neuron); %s with every MLP neuron mean-ablated",
			mc.Layers, mc.Neurons, t.Recalled, mc.Facts, mc.Relation, t.FactsPerNeuron, pct(mc.AblatedRecall))
		if a := mc.Ablation; a != nil && a.Reached > 0 {
			out[3].Ours += fmt.Sprintf("; removing half a fact's logit lead takes %.1f neurons on average, ≈ %.1f facts per neuron over the relation", a.MeanSize, a.FactsPerNeuronAll)
		}
		switch {
		case mc.Recall >= toyRecall && t.Recalled > mc.Neurons && mc.Recall-mc.AblatedRecall >= toyMLPDrop:
			out[3].Verdict = verdict(Supported, toyRule, "the MLP's %d neurons store %d facts (%.1f per neuron)", mc.Neurons, t.Recalled, t.FactsPerNeuron)
		case mc.Recall < toyRecall:
			out[3].Verdict = verdict(NotSupported, toyRule, "the toy model recalls only %s of its facts", pct(mc.Recall))
		case t.Recalled <= mc.Neurons:
			out[3].Verdict = verdict(NotSupported, toyRule, "the toy model has as many neurons (%d) as recalled facts (%d)", mc.Neurons, t.Recalled)
		default:
			out[3].Verdict = verdict(NotSupported, toyRule, "recall only drops from %s to %s without the MLP: the facts are not stored in it", pct(mc.Recall), pct(mc.AblatedRecall))
		}
	}
	return out
}
