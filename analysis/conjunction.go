package analysis

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/factlens/factlens/gpt2"
)

// NamePair is a two-part subject such as an athlete's first and last name.
type NamePair struct {
	First string `json:"first"`
	Last  string `json:"last"`
}

// Subject is the name as it appears in a prompt: First + " " + Last.
func (n NamePair) Subject() string { return n.First + " " + n.Last }

// SplitName splits a subject at its first space: "Hank Aaron" →
// {Hank, Aaron}, "Zdeno Chára" → {Zdeno, Chára}; ok is false for one word.
func SplitName(subject string) (NamePair, bool) {
	first, last, ok := strings.Cut(strings.TrimSpace(subject), " ")
	if !ok || first == "" || strings.TrimSpace(last) == "" {
		return NamePair{}, false
	}
	return NamePair{First: first, Last: strings.TrimSpace(last)}, true
}

// ConjunctionOptions control the conjunction (AND-gate) test.
type ConjunctionOptions struct {
	// Template with "{}" for the name, e.g. "{} plays the sport of".
	Template string
	// Tokenizer, required.
	Tokenizer *gpt2.Tokenizer
	// PrependBOS puts <|endoftext|> first.
	PrependBOS bool
	// Point is the per-layer neuron hook: "mlp.hook_post" (default) or
	// "mlp.hook_pre".
	Point string
	// Layers whose neurons are tested; nil means all.
	Layers []int
	// Tau is the verdict's fraction; 0 means 0.5.
	Tau float64
	// MinAct is the activation on the true name a neuron needs to count as
	// firing; 0 means 0.5 (GELU neurons of GPT-2 reach a few units).
	MinAct float64
	// TopK neurons listed per fact, by interaction; 0 means 10.
	TopK int
}

func (o *ConjunctionOptions) defaults(m *gpt2.Model) error {
	if o.Tokenizer == nil {
		return fmt.Errorf("analysis: the conjunction test needs a tokenizer")
	}
	if strings.Count(o.Template, "{}") != 1 {
		return fmt.Errorf("analysis: conjunction template %q must contain \"{}\" once", o.Template)
	}
	if o.Point == "" {
		o.Point = "mlp.hook_post"
	}
	if o.Point != "mlp.hook_post" && o.Point != "mlp.hook_pre" {
		return fmt.Errorf("analysis: conjunction point %q is not mlp.hook_post or mlp.hook_pre", o.Point)
	}
	if o.Layers == nil {
		for l := 0; l < m.NLayer(); l++ {
			o.Layers = append(o.Layers, l)
		}
	}
	if o.Tau == 0 {
		o.Tau = 0.5
	}
	if o.Tau < 0 || o.Tau > 1 {
		return fmt.Errorf("analysis: conjunction tau %v outside (0, 1]", o.Tau)
	}
	if o.MinAct == 0 {
		o.MinAct = 0.5
	}
	if o.TopK <= 0 {
		o.TopK = 10
	}
	return nil
}

// NeuronConjunction is one neuron's activations at the last name token on
// the true name (A, B) and on counterfactual names, and its interaction
// act(A,B) − mean act(A,·) − mean act(·,B) + mean act(·,·), where · ranges
// over the other first or last names.
type NeuronConjunction struct {
	Layer       int     `json:"layer"`
	Neuron      int     `json:"neuron"`
	Act         float64 `json:"act"`        // act(A, B)
	FirstOnly   float64 `json:"first_only"` // mean act(A, B′)
	LastOnly    float64 `json:"last_only"`  // mean act(A′, B)
	Neither     float64 `json:"neither"`    // mean act(A′, B′)
	Interaction float64 `json:"interaction"`
	AND         bool    `json:"and"`
}

// verdict applies the AND criterion: the neuron fires on the true name
// (act ≥ MinAct), its interaction is at least Tau·act, and neither one-part
// mean reaches (1 − Tau)·act — it needs both parts, and their joint effect
// is not the sum of their separate effects.
func (c *NeuronConjunction) verdict(tau, minAct float64) {
	c.AND = c.Act >= minAct && c.Interaction >= tau*c.Act && max(c.FirstOnly, c.LastOnly) <= (1-tau)*c.Act
}

// ConjunctionResult is the conjunction test of one name.
type ConjunctionResult struct {
	Name        NamePair `json:"name"`
	OtherFirsts []string `json:"other_firsts"`
	OtherLasts  []string `json:"other_lasts"`
	Point       string   `json:"point"`
	Tau         float64  `json:"tau"`
	MinAct      float64  `json:"min_act"`
	Tested      int      `json:"tested"` // neurons tested (layers × d_mlp)
	// AND lists every tested neuron that passes, by interaction.
	AND []NeuronConjunction `json:"and"`
	// Top lists the TopK neurons by interaction, AND or not.
	Top []NeuronConjunction `json:"top"`
}

// ConjunctionTest reads every neuron of the chosen layers at the last token
// of the name in Template for the true name, for its first name with each
// other last name, for each other first name with its last name, and for
// every pair of other names, and computes each neuron's interaction and AND
// verdict.
func ConjunctionTest(ctx context.Context, m *gpt2.Model, name NamePair, otherFirsts, otherLasts []string, opts ConjunctionOptions) (*ConjunctionResult, error) {
	if err := opts.defaults(m); err != nil {
		return nil, err
	}
	if len(otherFirsts) == 0 || len(otherLasts) == 0 {
		return nil, fmt.Errorf("analysis: the conjunction test needs other first and last names")
	}
	subjects := []string{name.Subject()}
	for _, b := range otherLasts {
		subjects = append(subjects, NamePair{name.First, b}.Subject())
	}
	for _, a := range otherFirsts {
		subjects = append(subjects, NamePair{a, name.Last}.Subject())
	}
	for _, a := range otherFirsts {
		for _, b := range otherLasts {
			subjects = append(subjects, NamePair{a, b}.Subject())
		}
	}
	prompts := make([][]int, len(subjects))
	positions := make([]int, len(subjects))
	for i, s := range subjects {
		toks, _, end, err := tokenizeWithSubject(opts.Tokenizer, opts.Template, s, opts.PrependBOS)
		if err != nil {
			return nil, fmt.Errorf("analysis: conjunction: %w", err)
		}
		prompts[i], positions[i] = toks, end-1
	}
	acts, err := ActivationsAt(ctx, m, prompts, positions, opts.Point, opts.Layers)
	if err != nil {
		return nil, err
	}
	nb, na := len(otherLasts), len(otherFirsts)
	meanOf := func(rows [][]float32, j int) float64 {
		var s float64
		for _, r := range rows {
			s += float64(r[j])
		}
		return s / float64(len(rows))
	}
	firstOnly, lastOnly, neither := acts[1:1+nb], acts[1+nb:1+nb+na], acts[1+nb+na:]
	dm := m.DMLP()
	all := make([]NeuronConjunction, len(acts[0]))
	for j := range all {
		c := &all[j]
		c.Layer, c.Neuron = opts.Layers[j/dm], j%dm
		c.Act = float64(acts[0][j])
		c.FirstOnly, c.LastOnly, c.Neither = meanOf(firstOnly, j), meanOf(lastOnly, j), meanOf(neither, j)
		c.Interaction = c.Act - c.FirstOnly - c.LastOnly + c.Neither
		c.verdict(opts.Tau, opts.MinAct)
	}
	out := &ConjunctionResult{Name: name, OtherFirsts: otherFirsts, OtherLasts: otherLasts, Point: opts.Point, Tau: opts.Tau, MinAct: opts.MinAct, Tested: len(all)}
	order := topIndices(len(all), len(all), func(i int) float64 { return all[i].Interaction })
	for _, i := range order {
		if all[i].AND {
			out.AND = append(out.AND, all[i])
		}
	}
	for _, i := range order[:min(opts.TopK, len(order))] {
		out.Top = append(out.Top, all[i])
	}
	return out, nil
}

// NeuronFacts is one neuron with the facts (indices into the survey's names)
// for which it is an AND gate.
type NeuronFacts struct {
	Layer  int   `json:"layer"`
	Neuron int   `json:"neuron"`
	Facts  []int `json:"facts"`
}

// ConjunctionSurvey is the conjunction test over a dataset of names: how
// many AND gates there are, how many facts each AND neuron serves and how
// many AND neurons each fact has — the counts behind "more AND gates than
// neurons" (many facts per neuron, as computation in superposition predicts)
// versus one dedicated neuron per fact.
type ConjunctionSurvey struct {
	Names        []NamePair `json:"names"`
	Point        string     `json:"point"`
	Tau          float64    `json:"tau"`
	MinAct       float64    `json:"min_act"`
	Alternates   int        `json:"alternates"` // other first and last names per fact
	Seed         uint64     `json:"seed"`
	Tested       int        `json:"tested"` // neurons tested per fact
	FactsWithAND int        `json:"facts_with_and"`
	ANDPairs     int        `json:"and_pairs"`   // (fact, neuron) AND gates
	ANDNeurons   int        `json:"and_neurons"` // distinct neurons that are an AND gate for some fact
	// NeuronsPerFact[i] is the number of AND neurons of fact i.
	NeuronsPerFact []int `json:"neurons_per_fact"`
	// FactsPerNeuronHistogram[k] is the number of neurons that are an AND
	// gate for exactly k facts (index 0 unused).
	FactsPerNeuronHistogram []int   `json:"facts_per_neuron_histogram"`
	MeanNeuronsPerFact      float64 `json:"mean_neurons_per_fact"`
	MeanFactsPerANDNeuron   float64 `json:"mean_facts_per_and_neuron"` // 0 without AND neurons
	// MoreGatesThanNeurons: ANDPairs > ANDNeurons, i.e. neurons are shared
	// between facts.
	MoreGatesThanNeurons bool `json:"more_gates_than_neurons"`
	// TopNeurons are the neurons serving the most facts, most first.
	TopNeurons []NeuronFacts `json:"top_neurons"`
}

// SurveyConjunctions runs ConjunctionTest for every name, with alternates
// other first names and other last names drawn (seeded, without
// replacement) from the other names of the dataset.
func SurveyConjunctions(ctx context.Context, m *gpt2.Model, names []NamePair, alternates int, seed uint64, opts ConjunctionOptions) (*ConjunctionSurvey, error) {
	if err := opts.defaults(m); err != nil {
		return nil, err
	}
	if alternates <= 0 {
		alternates = 4
	}
	if seed == 0 {
		seed = 1
	}
	var firsts, lasts []string
	for _, n := range names {
		if !slices.Contains(firsts, n.First) {
			firsts = append(firsts, n.First)
		}
		if !slices.Contains(lasts, n.Last) {
			lasts = append(lasts, n.Last)
		}
	}
	if len(firsts) <= alternates || len(lasts) <= alternates {
		return nil, fmt.Errorf("analysis: %d distinct first and %d last names are too few for %d alternates each", len(firsts), len(lasts), alternates)
	}
	rng := rand.New(rand.NewPCG(seed, 0xc0a1))
	pick := func(pool []string, not string) []string {
		var out []string
		for _, i := range rng.Perm(len(pool)) {
			if pool[i] != not {
				out = append(out, pool[i])
			}
			if len(out) == alternates {
				break
			}
		}
		return out
	}
	s := &ConjunctionSurvey{Names: names, Point: opts.Point, Tau: opts.Tau, MinAct: opts.MinAct, Alternates: alternates, Seed: seed}
	perNeuron := map[[2]int][]int{}
	for i, n := range names {
		r, err := ConjunctionTest(ctx, m, n, pick(firsts, n.First), pick(lasts, n.Last), opts)
		if err != nil {
			return nil, fmt.Errorf("analysis: survey name %d (%s): %w", i, n.Subject(), err)
		}
		s.Tested = r.Tested
		s.NeuronsPerFact = append(s.NeuronsPerFact, len(r.AND))
		if len(r.AND) > 0 {
			s.FactsWithAND++
		}
		s.ANDPairs += len(r.AND)
		for _, c := range r.AND {
			k := [2]int{c.Layer, c.Neuron}
			perNeuron[k] = append(perNeuron[k], i)
		}
	}
	s.ANDNeurons = len(perNeuron)
	maxFacts := 0
	for k, f := range perNeuron {
		maxFacts = max(maxFacts, len(f))
		s.TopNeurons = append(s.TopNeurons, NeuronFacts{Layer: k[0], Neuron: k[1], Facts: f})
	}
	s.FactsPerNeuronHistogram = make([]int, maxFacts+1)
	for _, f := range perNeuron {
		s.FactsPerNeuronHistogram[len(f)]++
	}
	slices.SortFunc(s.TopNeurons, func(a, b NeuronFacts) int {
		if c := cmp.Compare(len(b.Facts), len(a.Facts)); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Layer, b.Layer); c != 0 {
			return c
		}
		return cmp.Compare(a.Neuron, b.Neuron)
	})
	s.TopNeurons = s.TopNeurons[:min(20, len(s.TopNeurons))]
	s.MeanNeuronsPerFact = float64(s.ANDPairs) / float64(len(names))
	if s.ANDNeurons > 0 {
		s.MeanFactsPerANDNeuron = float64(s.ANDPairs) / float64(s.ANDNeurons)
	}
	s.MoreGatesThanNeurons = s.ANDPairs > s.ANDNeurons
	return s, nil
}
