package toy

import (
	"strings"
	"testing"
)

func TestMemorized(t *testing.T) {
	for _, tc := range []struct {
		facts       int
		acc, chance float64
		want        int
	}{
		{1000, 1, 0.25, 1000},
		{1000, 0.25, 0.25, 0},
		{1000, 0.2, 0.25, 0},
		{1000, 0.625, 0.25, 500}, // knows 500, guesses 1 in 4 of the other 500
		{4, 1, 1, 0},
	} {
		if got := memorized(tc.facts, tc.acc, tc.chance); got != tc.want {
			t.Errorf("memorized(%d, %v, %v) = %d, want %d", tc.facts, tc.acc, tc.chance, got, tc.want)
		}
	}
}

// TestSweepSummary checks the capacity arithmetic on hand-made points.
func TestSweepSummary(t *testing.T) {
	pt := func(facts, dmlp int, acc float64) SweepPoint {
		p := SweepPoint{People: facts, Facts: facts, DMLP: dmlp, Neurons: dmlp, Accuracy: acc, Chance: 0.25}
		p.Memorized = memorized(facts, acc, 0.25)
		p.FactsPerNeuron = float64(p.Memorized) / float64(dmlp)
		return p
	}
	r := &SweepResult{Config: SweepConfig{Threshold: 0.9, World: WorldConfig{Values: 4}}, Points: []SweepPoint{
		pt(100, 2, 1), pt(200, 2, 0.5), pt(400, 2, 0.25),
		pt(100, 4, 1), pt(200, 4, 0.95), pt(400, 4, 0.6),
		pt(100, 8, 1), pt(200, 8, 1), pt(400, 8, 0.92),
	}}
	r.summarise()
	want := []Capacity{
		{DMLP: 2, Neurons: 2, MaxFactsAtThreshold: 100, FactsPerNeuron: 50, MostMemorized: 100},
		{DMLP: 4, Neurons: 4, MaxFactsAtThreshold: 200, FactsPerNeuron: 50, MostMemorized: 187},
		{DMLP: 8, Neurons: 8, MaxFactsAtThreshold: 400, FactsPerNeuron: 50, MostMemorized: 357},
	}
	for i, c := range r.Capacities {
		if c != want[i] {
			t.Errorf("capacity %d: %+v, want %+v", i, c, want[i])
		}
	}
	// Best: 100 facts on 2 neurons (50/neuron) beats 357 on 8 (44.6).
	if r.Best == nil || r.Best.DMLP != 2 || r.Best.Facts != 100 {
		t.Errorf("best %+v", r.Best)
	}
	if r.MarginalFrom != 4 || r.MarginalTo != 8 || r.MarginalFactsPerNeuron != 50 {
		t.Errorf("marginal %d→%d: %v", r.MarginalFrom, r.MarginalTo, r.MarginalFactsPerNeuron)
	}
	if h := r.Headline(); !strings.Contains(h, "50.0 facts per MLP neuron") || !strings.Contains(h, "from 4 to 8 neurons") {
		t.Errorf("headline %q", h)
	}
}
