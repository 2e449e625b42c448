package analysis

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"testing"

	"github.com/factlens/factlens/gpt2"
)

func TestConjunctionCallsPlantedGateAND(t *testing.T) {
	ctx := context.Background()
	m := toyModel(t, gpt2.Processing{})
	opts := ConjunctionOptions{Template: "T {} p", Tokenizer: toyTokenizer(t), Layers: []int{0}}
	r, err := ConjunctionTest(ctx, m, NamePair{"A", "X"}, []string{"B", "C"}, []string{"Y", "Z"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if r.Tested != 8 || r.Tau != 0.5 || r.MinAct != 0.5 || r.Point != "mlp.hook_post" {
		t.Errorf("tested %d tau %v minAct %v point %q", r.Tested, r.Tau, r.MinAct, r.Point)
	}
	if len(r.AND) != 1 || r.AND[0].Layer != 0 || r.AND[0].Neuron != toyAND {
		t.Fatalf("AND neurons %+v, want exactly L0N%d", r.AND, toyAND)
	}
	gate := r.AND[0]
	// Pre-activations ≈ 2 (both), ≈ −2 (one part), ≈ −6 (neither) through
	// gelu_new: ≈ 2, slightly negative, ≈ 0.
	if math.Abs(gate.Act-2) > 0.1 || gate.FirstOnly > 0 || gate.FirstOnly < -0.1 || gate.LastOnly > 0 || gate.LastOnly < -0.1 || math.Abs(gate.Neither) > 0.01 {
		t.Errorf("gate activations %+v, want ≈ 2, (−0.1, 0], (−0.1, 0], 0", gate)
	}
	want := gate.Act - gate.FirstOnly - gate.LastOnly + gate.Neither
	if math.Abs(gate.Interaction-want) > 1e-12 || gate.Interaction < 2 {
		t.Errorf("interaction %.4f, want %.4f (> 2)", gate.Interaction, want)
	}
	var det *NeuronConjunction
	for i := range r.Top {
		if r.Top[i].Neuron == toyDetect {
			det = &r.Top[i]
		}
	}
	if det == nil {
		t.Fatal("the detector neuron is not among the top neurons")
	}
	if det.AND || math.Abs(det.Interaction) > 0.1 || det.Act < 1.5 || det.LastOnly < 1.5 {
		t.Errorf("single-token detector %+v: fires on X with or without A, so no AND and ≈ 0 interaction", *det)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("result does not marshal: %v", err)
	}

	// A name that is not a fact has no gate.
	r, err = ConjunctionTest(ctx, m, NamePair{"C", "X"}, []string{"A", "B"}, []string{"Y", "Z"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.AND) != 0 {
		t.Errorf("C X: AND neurons %+v, want none", r.AND)
	}
}

func TestSurveyConjunctions(t *testing.T) {
	ctx := context.Background()
	m := toyModel(t, gpt2.Processing{})
	opts := ConjunctionOptions{Template: "T {} p", Tokenizer: toyTokenizer(t)}
	names := []NamePair{{"A", "X"}, {"B", "Y"}, {"C", "Z"}}
	s, err := SurveyConjunctions(ctx, m, names, 2, 3, opts)
	if err != nil {
		t.Fatal(err)
	}
	if s.Tested != 16 || s.FactsWithAND != 2 || s.ANDPairs != 2 || s.ANDNeurons != 2 || s.MoreGatesThanNeurons {
		t.Errorf("tested %d, facts with AND %d, pairs %d, neurons %d, more gates %v; want 16, 2, 2, 2, false", s.Tested, s.FactsWithAND, s.ANDPairs, s.ANDNeurons, s.MoreGatesThanNeurons)
	}
	if !slices.Equal(s.NeuronsPerFact, []int{1, 1, 0}) || !slices.Equal(s.FactsPerNeuronHistogram, []int{0, 2}) {
		t.Errorf("neurons per fact %v, histogram %v", s.NeuronsPerFact, s.FactsPerNeuronHistogram)
	}
	got := map[int][]int{}
	for _, n := range s.TopNeurons {
		got[n.Neuron] = n.Facts
	}
	if !slices.Equal(got[toyAND], []int{0}) || !slices.Equal(got[toyAND2], []int{1}) {
		t.Errorf("top neurons %+v", s.TopNeurons)
	}
	if s.MeanNeuronsPerFact != 2.0/3 || s.MeanFactsPerANDNeuron != 1 {
		t.Errorf("means %v %v", s.MeanNeuronsPerFact, s.MeanFactsPerANDNeuron)
	}
	if _, err := SurveyConjunctions(ctx, m, names, 3, 1, opts); err == nil {
		t.Error("too few names for the alternates: no error")
	}
}

func TestSplitName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want NamePair
		ok   bool
	}{
		{"Hank Aaron", NamePair{"Hank", "Aaron"}, true},
		{"Zdeno Chára", NamePair{"Zdeno", "Chára"}, true},
		{"R.A. Dickey", NamePair{"R.A.", "Dickey"}, true},
		{"Martin St. Louis", NamePair{"Martin", "St. Louis"}, true},
		{"Pelé", NamePair{}, false},
	} {
		got, ok := SplitName(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("SplitName(%q) = %+v, %v", tc.in, got, ok)
		}
	}
}
