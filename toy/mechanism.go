package toy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/gpt2"
)

// MechanismOptions control Analyze.
type MechanismOptions struct {
	// Relation to study; "" means the world's first.
	Relation string
	// Alternates is the number of other first and last names the
	// conjunction test pairs each name with; 0 means 4.
	Alternates int
	// Sample is the number of facts (drawn with Seed) whose minimal
	// ablation sets are searched; 0 means 64.
	Sample int
	// Fraction of logit(answer) − logit(strongest other value) an ablation
	// set must remove; 0 means 0.5.
	Fraction float64
	Seed     uint64 // 0 means 1
	// Tau and MinAct are the AND verdict's parameters
	// (analysis.ConjunctionOptions); 0 means its defaults.
	Tau, MinAct float64
}

// AblationSizes summarises the minimal ablation sets of a sample of facts:
// how many neurons each fact needs, and how many of the sampled facts each
// neuron takes part in.
type AblationSizes struct {
	Method   analysis.AblationMethod `json:"method"`
	Fraction float64                 `json:"fraction"`
	Facts    int                     `json:"facts"`
	Reached  int                     `json:"reached"` // facts whose set removed the fraction
	// Sizes[i] is the size of fact i's set (only facts that reached it).
	Sizes      []int   `json:"sizes"`
	MeanSize   float64 `json:"mean_size"`
	MedianSize int     `json:"median_size"`
	MaxSize    int     `json:"max_size"`
	// UsedNeurons is the number of distinct neurons in any set;
	// MeanFactsPerUsedNeuron the mean number of sampled facts whose set
	// holds such a neuron.
	UsedNeurons            int     `json:"used_neurons"`
	MeanFactsPerUsedNeuron float64 `json:"mean_facts_per_used_neuron"`
	// FactsPerNeuronAll extrapolates to every fact of the relation: facts ×
	// MeanSize / neurons, the number of facts each neuron would serve on
	// average if the sample is representative.
	FactsPerNeuronAll float64 `json:"facts_per_neuron_all"`
}

// Mechanism is how a toy model recalls one relation.
type Mechanism struct {
	Relation string `json:"relation"`
	Facts    int    `json:"facts"`
	Layers   int    `json:"layers"`
	DMLP     int    `json:"d_mlp"`
	Neurons  int    `json:"neurons"`
	// Recall of the relation's facts, and with every MLP neuron
	// mean-ablated (see MLPAblatedRecall).
	Recall        float64 `json:"recall"`
	AblatedRecall float64 `json:"ablated_recall"`
	// FinalToken is the conjunction survey read at the prompt's last token
	// (where a 1-layer model must form the AND); LastName the same at the
	// last name token (where Fact Finding looks in a multi-layer model).
	FinalToken *analysis.ConjunctionSurvey `json:"final_token"`
	LastName   *analysis.ConjunctionSurvey `json:"last_name_token"`
	Ablation   *AblationSizes              `json:"ablation"`
	// FactsPerNeuron is Facts / Neurons: the AND gates each neuron would
	// carry if every fact were one gate.
	FactsPerNeuron float64 `json:"facts_per_neuron"`
	// Verdict compares the counts with computation in superposition.
	Verdict string `json:"verdict"`
}

// Analyze runs package analysis' conjunction survey and neuron ablations on
// a toy model for one relation: how many neurons act as AND gates of
// (first, last), how many facts each serves, how many neurons each fact
// needs, and how that compares with the theory of computation in
// superposition (many ANDs per neuron, several neurons per AND).
func Analyze(ctx context.Context, f *Folder, opts MechanismOptions) (*Mechanism, error) {
	if opts.Alternates == 0 {
		opts.Alternates = 4
	}
	if opts.Sample == 0 {
		opts.Sample = 64
	}
	if opts.Fraction == 0 {
		opts.Fraction = 0.5
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	rel := &f.World.Relations[0]
	if opts.Relation != "" {
		if rel = f.World.relation(opts.Relation); rel == nil {
			return nil, fmt.Errorf("toy: the world has no relation %q", opts.Relation)
		}
	}
	suffix, ok := strings.CutPrefix(rel.Template, "{first} {last}")
	if !ok {
		return nil, fmt.Errorf("toy: template %q does not start with the name", rel.Template)
	}
	m := f.Model
	out := &Mechanism{Relation: rel.Name, Layers: m.NLayer(), DMLP: m.DMLP(), Neurons: m.NLayer() * m.DMLP()}

	var facts []Fact
	for _, fact := range f.World.Facts() {
		if fact.Relation == rel.Name {
			facts = append(facts, fact)
		}
	}
	out.Facts = len(facts)
	out.FactsPerNeuron = float64(out.Facts) / float64(out.Neurons)
	ex, err := Encode(f.Tokenizer, facts)
	if err != nil {
		return nil, err
	}
	rec, err := Evaluate(ctx, m, ex)
	if err != nil {
		return nil, err
	}
	abl, err := MLPAblatedRecall(ctx, m, ex)
	if err != nil {
		return nil, err
	}
	out.Recall, out.AblatedRecall = rec.Accuracy, abl.Accuracy

	// The conjunction test reads the last token of the subject. Reading the
	// prompt's final token instead takes the relation text as part of the
	// last name: "White plays the sport of" is one counterfactual "last
	// name", and the interaction is still act(A,B) − act(A,·) − act(·,B) +
	// act(·,·) over first and last names.
	copts := analysis.ConjunctionOptions{Tokenizer: f.Tokenizer, Tau: opts.Tau, MinAct: opts.MinAct}
	var atLast, atFinal []analysis.NamePair
	for _, fact := range facts {
		atLast = append(atLast, analysis.NamePair{First: fact.First, Last: fact.Last})
		atFinal = append(atFinal, analysis.NamePair{First: fact.First, Last: fact.Last + suffix})
	}
	copts.Template = "{}"
	if out.FinalToken, err = analysis.SurveyConjunctions(ctx, m, atFinal, opts.Alternates, opts.Seed, copts); err != nil {
		return nil, err
	}
	copts.Template = "{}" + suffix
	if out.LastName, err = analysis.SurveyConjunctions(ctx, m, atLast, opts.Alternates, opts.Seed, copts); err != nil {
		return nil, err
	}

	if out.Ablation, err = ablationSizes(ctx, f, rel, facts, ex, rec, opts); err != nil {
		return nil, err
	}
	out.Verdict = verdict(out)
	return out, nil
}

// ablationSizes finds, for a sample of recalled facts, the smallest set of
// final-token neurons (greedy, mean-ablated over the other prompts) whose
// ablation removes opts.Fraction of the answer's lead over the strongest
// other value.
func ablationSizes(ctx context.Context, f *Folder, rel *Relation, facts []Fact, ex []Example, rec *Recall, opts MechanismOptions) (*AblationSizes, error) {
	m := f.Model
	var recalled []int
	for i, o := range rec.Outcomes {
		if o.Correct {
			recalled = append(recalled, i)
		}
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0xab1a7))
	rng.Shuffle(len(recalled), func(i, j int) { recalled[i], recalled[j] = recalled[j], recalled[i] })
	sample := recalled[:min(opts.Sample, len(recalled))]
	slices.Sort(sample)

	var values []int
	for _, v := range rel.Values {
		ids := f.Tokenizer.Encode(" " + v)
		if len(ids) != 1 {
			return nil, fmt.Errorf("toy: value %q is not one token", v)
		}
		values = append(values, ids[0])
	}
	out := &AblationSizes{Method: analysis.AblateMean, Fraction: opts.Fraction, Facts: len(sample)}
	uses := map[[2]int]int{}
	for _, i := range sample {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := ex[i]
		pos := len(e.Tokens) - 1
		// The strongest competitor among the relation's other values.
		res, err := m.Run(ctx, [][]int{e.Tokens}, gpt2.RunOptions{Logits: gpt2.LogitsLast})
		if err != nil {
			return nil, err
		}
		logits := res.Logits.Data
		contrast := -1
		for _, v := range values {
			if v != e.Answer && (contrast < 0 || logits[v] > logits[contrast]) {
				contrast = v
			}
		}
		var refs [][]int
		for j, other := range ex {
			if j != i && len(other.Tokens) == len(e.Tokens) && facts[j].Relation == facts[i].Relation {
				refs = append(refs, other.Tokens)
			}
		}
		refs = refs[:min(64, len(refs))]
		set, err := analysis.MinimalAblationSet(ctx, m, e.Tokens, e.Answer, contrast, analysis.AllNeurons(m, pos), analysis.AblationSetOptions{
			AblationOptions: analysis.AblationOptions{Method: analysis.AblateMean, Reference: refs},
			Fraction:        opts.Fraction,
			Pool:            m.NLayer() * m.DMLP(),
		})
		if err != nil {
			return nil, fmt.Errorf("toy: ablation of %q: %w", facts[i].Prompt, err)
		}
		if !set.Reached {
			continue
		}
		out.Reached++
		out.Sizes = append(out.Sizes, len(set.Neurons))
		for _, n := range set.Neurons {
			uses[[2]int{n.Layer, n.Neuron}]++
		}
	}
	if len(out.Sizes) > 0 {
		sorted := slices.Sorted(slices.Values(out.Sizes))
		sum := 0
		for _, s := range sorted {
			sum += s
		}
		out.MeanSize = float64(sum) / float64(len(sorted))
		out.MedianSize = sorted[len(sorted)/2]
		out.MaxSize = sorted[len(sorted)-1]
		out.UsedNeurons = len(uses)
		out.MeanFactsPerUsedNeuron = float64(sum) / float64(len(uses))
		out.FactsPerNeuronAll = float64(len(facts)) * out.MeanSize / float64(m.NLayer()*m.DMLP())
	}
	return out, nil
}

// verdict states how the measured counts compare with computation in
// superposition: more facts than neurons, each fact spread over several
// neurons and each neuron shared by many facts.
func verdict(r *Mechanism) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d facts on %d MLP neurons: %.1f facts per neuron, so one neuron per fact is impossible", r.Facts, r.Neurons, r.FactsPerNeuron)
	if r.FactsPerNeuron <= 1 {
		b.Reset()
		fmt.Fprintf(&b, "%d facts on %d MLP neurons: there are enough neurons for one per fact", r.Facts, r.Neurons)
	}
	fmt.Fprintf(&b, ". The model recalls %.1f%% of them, %.1f%% with its MLP mean-ablated.", 100*r.Recall, 100*r.AblatedRecall)
	if s := r.FinalToken; s != nil {
		fmt.Fprintf(&b, " At the final token, %d neurons pass the AND test for at least one fact (%d of %d facts have one); an AND neuron serves %.1f facts on average and a fact has %.1f AND neurons.",
			s.ANDNeurons, s.FactsWithAND, len(s.Names), s.MeanFactsPerANDNeuron, s.MeanNeuronsPerFact)
	}
	if r.Layers == 1 && r.LastName != nil {
		fmt.Fprintf(&b, " (The %d AND neurons found at the last name token are the same weights responding there; in a 1-layer model nothing carries their output to the answer.)", r.LastName.ANDNeurons)
	}
	if a := r.Ablation; a != nil && a.Reached > 0 {
		fmt.Fprintf(&b, " Removing %.0f%% of a fact's logit lead takes %.1f neurons on average (median %d, max %d; %d of %d sampled facts), about %.1f facts per neuron over the whole relation.",
			100*a.Fraction, a.MeanSize, a.MedianSize, a.MaxSize, a.Reached, a.Facts, a.FactsPerNeuronAll)
		shared, spread := a.FactsPerNeuronAll > 1.5, a.MeanSize > 1.5
		switch {
		case shared && spread:
			b.WriteString(" That is the pattern computation in superposition predicts: many conjunctions per neuron and several neurons per conjunction, not a dedicated neuron per fact.")
		case shared:
			b.WriteString(" Neurons are shared by many facts, as computation in superposition predicts, but each fact rests on one or two critical neurons rather than on the several redundant neurons per AND of the U-AND construction.")
		case spread:
			b.WriteString(" Each fact is spread over several neurons but neurons are not shared by many facts.")
		default:
			b.WriteString(" About one neuron per fact and one fact per neuron: a lookup table, not computation in superposition.")
		}
	}
	return b.String()
}
