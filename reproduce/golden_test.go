package reproduce

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// plantedGolden is testdata/planted_golden.json, written by
// testdata/make_planted_golden.py from its own numpy forward pass.
type plantedGolden struct {
	SportsOrder   []string                        `json:"sports_order"`
	CleanLead     []float64                       `json:"clean_lead"`
	Effects       map[string][]float64            `json:"effects"`
	NameAttention []float64                       `json:"name_attention"`
	GateRemoved   []float64                       `json:"gate_removed"`
	PairLogits    map[string]map[string][]float64 `json:"pair_sport_logits"`
}

func committedPlanted(t *testing.T) (*gpt2.Model, *gpt2.Tokenizer, []Athlete, *plantedGolden) {
	t.Helper()
	dir := filepath.Join("testdata", "planted")
	ck, err := weights.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	m, err := gpt2.FromCheckpoint(ck, gpt2.Processing{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := gpt2.LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	athletes, err := LoadAthletes(filepath.Join(dir, "facts.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("testdata", "planted_golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g plantedGolden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return m, tok, athletes, &g
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol*(1+math.Abs(want)) }

// TestPlantedMeasurementsMatchNumpy checks the study's own measurements —
// sport leads, layer mean-ablation effects, attention onto the name, the
// single-neuron gate ablations and the counterfactual-name leads — against
// an independent numpy forward pass of the same weights.
func TestPlantedMeasurementsMatchNumpy(t *testing.T) {
	m, tok, athletes, g := committedPlanted(t)
	ctx := context.Background()
	set, err := selectAthletes(ctx, m, tok, athletes, athleteOptions{Template: "T {} p", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if set.info.Known != len(athletes) || len(g.CleanLead) != len(athletes) {
		t.Fatalf("%d of %d athletes known; golden has %d", set.info.Known, len(athletes), len(g.CleanLead))
	}
	prompts, labels := set.knownPrompts()
	st, err := measureNames(ctx, m, prompts, true)
	if err != nil {
		t.Fatal(err)
	}
	eff, clean, err := ablateLayers(ctx, m, prompts, labels, set.sportTokens, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	const tol = 2e-5
	for i := range clean {
		if !near(clean[i], g.CleanLead[i], tol) {
			t.Errorf("athlete %d: clean lead %.6f, numpy %.6f", i, clean[i], g.CleanLead[i])
		}
	}
	for name, got := range map[string][]float64{"mlp_at_final_name_token": eff.MLPAtName, "attn_at_final_name_token": eff.AttnAtName, "mlp_at_final_token": eff.MLPAtFinal} {
		for l, v := range got {
			if math.Abs(v-g.Effects[name][l]) > tol {
				t.Errorf("%s layer %d: %.6f, numpy %.6f", name, l, v, g.Effects[name][l])
			}
		}
	}
	for l, v := range st.nameAttn {
		if math.Abs(v-g.NameAttention[l]) > tol {
			t.Errorf("name attention layer %d: %.6f, numpy %.6f", l, v, g.NameAttention[l])
		}
	}

	cs, cf, err := conjunctionTests(ctx, m, tok, set, prompts, labels, clean, st, conjunctionOptions{alternates: 4, seed: 1, maxChecks: 32, counter: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cs.CleanGateFacts != len(athletes) || cf.Facts != len(athletes) {
		t.Fatalf("%d clean gates, %d counterfactual facts; want one each per athlete", cs.CleanGateFacts, cf.Facts)
	}
	for _, gate := range cs.CleanGates {
		i := -1
		for k, a := range athletes {
			if a.Name == gate.Subject {
				i = k
			}
		}
		if !near(gate.Removed, g.GateRemoved[i], 1e-4) {
			t.Errorf("%s: gate L%dN%d removes %.6f, numpy %.6f (its own neuron)", gate.Subject, gate.Layer, gate.Neuron, gate.Removed, g.GateRemoved[i])
		}
	}

	// The counterfactual leads of one name with chosen alternates, against
	// the numpy logits of every (first, last) pair.
	name := analysis.NamePair{First: "B", Last: "K"}
	of, ol := []string{"A", "D", "F"}, []string{"G", "H", "M"}
	label := -1
	for k, a := range athletes {
		if a.Name == name.Subject() {
			label = labels[k]
		}
	}
	lt, l1, l2, l0, _, err := counterfactualLeads(ctx, m, tok, set, name, of, ol, label)
	if err != nil {
		t.Fatal(err)
	}
	sport := set.sports[label]
	numpyLead := func(firsts, lasts []string) float64 {
		meanLogits := make([]float32, len(set.sports))
		for _, a := range firsts {
			for _, b := range lasts {
				for s, sp := range set.sports {
					idx := indexOf(g.SportsOrder, sp)
					meanLogits[s] += float32(g.PairLogits[a][b][idx] / float64(len(firsts)*len(lasts)))
				}
			}
		}
		return lead(meanLogits, indexOf(set.sports, sport))
	}
	for _, c := range []struct {
		what      string
		got, want float64
	}{
		{"true name", lt, numpyLead([]string{"B"}, []string{"K"})},
		{"first name only", l1, numpyLead([]string{"B"}, ol)},
		{"last name only", l2, numpyLead(of, []string{"K"})},
		{"neither", l0, numpyLead(of, ol)},
	} {
		if math.Abs(c.got-c.want) > 1e-4 {
			t.Errorf("%s: lead %.6f, numpy %.6f", c.what, c.got, c.want)
		}
	}
}

func indexOf(xs []string, x string) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return -1
}
