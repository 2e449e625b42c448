package toy

import (
	"context"
	"fmt"
	"math"
	"slices"
)

// SweepConfig is a capacity sweep: one model trained from scratch for every
// (number of people, d_mlp) pair, all other settings shared.
type SweepConfig struct {
	World WorldConfig `json:"world"` // People is set per point
	Model ModelConfig `json:"model"` // DMLP is set per point
	Train TrainConfig `json:"train"`
	// People and DMLPs are the grid; each world has People·len(Relations)
	// facts.
	People []int `json:"people"`
	DMLPs  []int `json:"d_mlps"`
	// Threshold is the recall a model must reach to count as storing its
	// facts; 0 means 0.9.
	Threshold float64 `json:"threshold"`
}

// SweepPoint is one trained model of a sweep.
type SweepPoint struct {
	People   int     `json:"people"`
	Facts    int     `json:"facts"`
	DMLP     int     `json:"d_mlp"`
	Neurons  int     `json:"neurons"` // MLP neurons in all layers
	Params   int     `json:"params"`  // every parameter of the model
	Accuracy float64 `json:"accuracy"`
	Recalled int     `json:"recalled"`
	// Memorized corrects Recalled for guessing: a model that knows k facts
	// and guesses the rest at chance c recalls k + (Facts − k)·c, so
	// k = Facts·(Accuracy − c)/(1 − c), at least 0. A model stuck at chance
	// memorizes 0 facts however many it recalls.
	Memorized int `json:"memorized"`
	// FactsPerNeuron is Memorized / Neurons.
	FactsPerNeuron float64 `json:"facts_per_neuron"`
	// AblatedAccuracy is the recall of the same model with every MLP neuron
	// mean-ablated (MLPAblatedRecall); MLPFacts is Memorized minus what the
	// ablated model memorizes: the facts that need the MLP's fact-specific
	// output.
	AblatedAccuracy   float64 `json:"ablated_accuracy"`
	MLPFacts          int     `json:"mlp_facts"`
	MLPFactsPerNeuron float64 `json:"mlp_facts_per_neuron"`
	Steps             int     `json:"steps"`
	Seconds           float64 `json:"seconds"`
	StopReason        string  `json:"stop_reason"`
	// Chance is the recall of always answering the most common value;
	// Baseline the best recall without the conjunction (the better of
	// first-name-only and last-name-only rules), both averaged over
	// relations.
	Chance   float64 `json:"chance"`
	Baseline float64 `json:"baseline"`
}

// memorized is the guessing-corrected number of facts known at accuracy acc.
func memorized(facts int, acc, chance float64) int {
	if chance >= 1 {
		return 0
	}
	return max(0, int(math.Round(float64(facts)*(acc-chance)/(1-chance))))
}

// Capacity summarises one d_mlp of a sweep.
type Capacity struct {
	DMLP    int `json:"d_mlp"`
	Neurons int `json:"neurons"`
	// MaxFactsAtThreshold is the largest fact count whose model reached the
	// threshold recall (0 if none did); FactsPerNeuron divides it by Neurons.
	MaxFactsAtThreshold int     `json:"max_facts_at_threshold"`
	FactsPerNeuron      float64 `json:"facts_per_neuron"`
	// MostMemorized is the largest guessing-corrected number of facts any
	// model of this width knows, whatever its recall rate.
	MostMemorized int `json:"most_memorized"`
}

// SweepResult is the whole sweep.
type SweepResult struct {
	Config     SweepConfig  `json:"config"`
	Points     []SweepPoint `json:"points"`
	Capacities []Capacity   `json:"capacities"`
	// Best is the point with the largest facts-per-neuron ratio among those
	// at or above the threshold; nil if none reached it.
	Best *SweepPoint `json:"best,omitempty"`
	// MarginalFactsPerNeuron is the growth of MaxFactsAtThreshold per added
	// neuron between the two widest widths that reached the threshold:
	// the cost of a fact in neurons once attention's share is paid, which
	// the ratio at small widths hides. 0 with fewer than two such widths.
	MarginalFactsPerNeuron float64 `json:"marginal_facts_per_neuron"`
	MarginalFrom           int     `json:"marginal_from_d_mlp,omitempty"`
	MarginalTo             int     `json:"marginal_to_d_mlp,omitempty"`
	// Unconverged counts the points that stopped at MaxSteps: their
	// numbers are lower bounds.
	Unconverged int `json:"unconverged"`
}

// Headline states the sweep's main numbers in words.
func (r *SweepResult) Headline() string {
	th := r.Config.Threshold
	if r.Best == nil {
		return fmt.Sprintf("No model of the sweep reached %.0f%% recall.", 100*th)
	}
	b := r.Best
	m, _ := r.Config.Model.withDefaults()
	out := fmt.Sprintf("Largest facts-per-neuron ratio at ≥%.0f%% recall: %.1f facts per MLP neuron — %d of %d facts recalled (%.1f%%, %d after correcting for guessing) with d_mlp %d × %d layer(s), d_model %d, %d head(s), %s; %d values per relation (chance %.0f%%, best single-name rule %.1f%%), world seed %d, training seed %d, %d steps. With its MLP mean-ablated the same model recalls %.1f%%.",
		100*th, b.FactsPerNeuron, b.Recalled, b.Facts, 100*b.Accuracy, b.Memorized, b.DMLP, m.Layers, m.DModel, m.Heads, m.Activation,
		r.Config.World.Values, 100*b.Chance, 100*b.Baseline, r.Config.World.Seed, r.Config.Train.Seed, b.Steps,
		100*b.AblatedAccuracy)
	if r.MarginalFrom > 0 {
		var from, to Capacity
		for _, c := range r.Capacities {
			switch c.DMLP {
			case r.MarginalFrom:
				from = c
			case r.MarginalTo:
				to = c
			}
		}
		out += fmt.Sprintf(" Widening the MLP from %d to %d neurons raised the facts stored at ≥%.0f%% recall from %d to %d: %.1f facts per added neuron.",
			from.Neurons, to.Neurons, 100*th, from.MaxFactsAtThreshold, to.MaxFactsAtThreshold, r.MarginalFactsPerNeuron)
	}
	if r.Unconverged > 0 {
		out += fmt.Sprintf(" %d of %d models stopped at the step limit; their numbers are lower bounds.", r.Unconverged, len(r.Points))
	}
	return out
}

// Validate checks the settings of every grid point without training.
func (c SweepConfig) Validate() error {
	if len(c.People) == 0 || len(c.DMLPs) == 0 {
		return fmt.Errorf("toy: sweep needs at least one people count and one d_mlp")
	}
	if c.Threshold < 0 || c.Threshold > 1 {
		return fmt.Errorf("toy: sweep threshold %v: want (0, 1]", c.Threshold)
	}
	for _, p := range c.People {
		for _, d := range c.DMLPs {
			o := Options{World: c.World, Model: c.Model, Train: c.Train}
			o.World.People, o.Model.DMLP = p, d
			if err := o.Validate(); err != nil {
				return fmt.Errorf("%w (sweep point %d people, d_mlp %d)", err, p, d)
			}
		}
	}
	return nil
}

// Sweep trains every grid point (small worlds first) and summarises the
// capacity per d_mlp. progress, when set, is called before each point with
// its index and the total.
func Sweep(ctx context.Context, cfg SweepConfig, progress func(i, n int, p SweepPoint)) (*SweepResult, error) {
	if cfg.Threshold == 0 {
		cfg.Threshold = 0.9
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	wc, err := cfg.World.withPeople(cfg.People[0])
	if err != nil {
		return nil, err
	}
	cfg.World.Relations, cfg.World.Values = wc.Relations, wc.Values
	if cfg.Model, err = cfg.Model.withDefaults(); err != nil {
		return nil, err
	}
	if cfg.Train, err = cfg.Train.withDefaults(); err != nil {
		return nil, err
	}
	people := slices.Sorted(slices.Values(cfg.People))
	dmlps := slices.Sorted(slices.Values(cfg.DMLPs))
	res := &SweepResult{Config: cfg}
	n := len(people) * len(dmlps)
	for _, d := range dmlps {
		for _, np := range people {
			w := cfg.World
			w.People = np
			m := cfg.Model
			m.DMLP = d
			pt := SweepPoint{People: np, DMLP: d, Neurons: d * m.Layers}
			if progress != nil {
				progress(len(res.Points), n, pt)
			}
			tr, err := Train(ctx, Options{World: w, Model: m, Train: cfg.Train})
			if err != nil {
				return nil, fmt.Errorf("toy: sweep point %d people, d_mlp %d: %w", np, d, err)
			}
			st := tr.State
			pt.Facts = st.Facts
			pt.Accuracy = st.Final.Accuracy
			pt.Recalled = st.Final.Correct
			pt.Steps, pt.Seconds, pt.StopReason = st.Step, st.Seconds, st.StopReason
			for _, t := range tr.Params {
				pt.Params += len(t.Data)
			}
			pt.Chance, pt.Baseline = worldBaselines(tr.World)
			pt.Memorized = memorized(pt.Facts, pt.Accuracy, pt.Chance)
			pt.FactsPerNeuron = float64(pt.Memorized) / float64(pt.Neurons)
			abl, err := MLPAblatedRecall(ctx, tr.Model, tr.Examples)
			if err != nil {
				return nil, err
			}
			pt.AblatedAccuracy = abl.Accuracy
			pt.MLPFacts = max(0, pt.Memorized-memorized(pt.Facts, abl.Accuracy, pt.Chance))
			pt.MLPFactsPerNeuron = float64(pt.MLPFacts) / float64(pt.Neurons)
			if st.Step >= st.Train.MaxSteps && st.Final.Correct < st.Facts {
				res.Unconverged++
			}
			res.Points = append(res.Points, pt)
		}
	}
	res.summarise()
	return res, nil
}

func (c WorldConfig) withPeople(n int) (WorldConfig, error) {
	c.People = n
	return c.withDefaults()
}

// worldBaselines returns the chance rate and the better of the first-only
// and last-only rules, each averaged over relations.
func worldBaselines(w *World) (chance, single float64) {
	bs := w.Baselines()
	for _, b := range bs {
		chance += b.Chance
		single += math.Max(b.FirstOnly, b.LastOnly)
	}
	return chance / float64(len(bs)), single / float64(len(bs))
}

// summarise fills Capacities, Best and the marginal slope from Points.
func (r *SweepResult) summarise() {
	r.Capacities, r.Best = nil, nil
	byD := map[int]*Capacity{}
	var order []int
	for i := range r.Points {
		p := &r.Points[i]
		c, ok := byD[p.DMLP]
		if !ok {
			c = &Capacity{DMLP: p.DMLP, Neurons: p.Neurons}
			byD[p.DMLP] = c
			order = append(order, p.DMLP)
		}
		c.MostMemorized = max(c.MostMemorized, p.Memorized)
		if p.Accuracy >= r.Config.Threshold {
			c.MaxFactsAtThreshold = max(c.MaxFactsAtThreshold, p.Facts)
			if r.Best == nil || p.FactsPerNeuron > r.Best.FactsPerNeuron {
				r.Best = p
			}
		}
	}
	slices.Sort(order)
	var reached []*Capacity
	for _, d := range order {
		c := byD[d]
		c.FactsPerNeuron = float64(c.MaxFactsAtThreshold) / float64(c.Neurons)
		r.Capacities = append(r.Capacities, *c)
		if c.MaxFactsAtThreshold > 0 {
			reached = append(reached, c)
		}
	}
	if n := len(reached); n >= 2 {
		a, b := reached[n-2], reached[n-1]
		r.MarginalFrom, r.MarginalTo = a.DMLP, b.DMLP
		r.MarginalFactsPerNeuron = float64(b.MaxFactsAtThreshold-a.MaxFactsAtThreshold) / float64(b.Neurons-a.Neurons)
	}
}
