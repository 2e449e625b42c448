package reproduce

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/factlens/factlens/sae"
	"github.com/factlens/factlens/toy"
)

func openToyDemo(t testing.TB) *toy.Folder {
	t.Helper()
	dir, err := toy.DemoDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := toy.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// checkVerdicts compares each finding's status with want and that the JSON
// form of the result encodes (JSON has no NaN).
func checkVerdicts(t *testing.T, name string, result any, h *Header, want map[string]Status) {
	t.Helper()
	if _, err := json.Marshal(result); err != nil {
		t.Errorf("%s: JSON: %v", name, err)
	}
	for _, f := range h.Findings {
		if f.Verdict.Rule == "" || !strings.HasPrefix(f.Verdict.Text, string(f.Verdict.Status)+": ") {
			t.Errorf("%s %s: verdict %+v lacks its rule or its status in words", name, f.Claim.ID, f.Verdict)
		}
		if f.Claim.Source == "" || f.Claim.Paper == "" {
			t.Errorf("%s %s: claim without source or published figure", name, f.Claim.ID)
		}
	}
	var ids, claims []string
	for _, f := range h.Findings {
		ids = append(ids, f.Claim.ID)
	}
	for _, c := range Claims() {
		if c.Study == h.Study {
			claims = append(claims, c.ID)
		}
	}
	if !slices.Equal(ids, claims) {
		t.Errorf("%s: findings %v, want the study's claims %v", name, ids, claims)
	}
	for id, status := range want {
		f := h.Finding(id)
		if f == nil {
			t.Errorf("%s: no finding %s", name, id)
			continue
		}
		if f.Verdict.Status != status {
			t.Errorf("%s %s: %q, want %s\n  ours: %s", name, id, f.Verdict.Text, status, f.Ours)
		}
	}
}

// TestRandomModelFindsNothing runs every study end to end on a random
// GPT-2-shaped checkpoint with GPT-2's tokenizer: it knows none of the facts,
// so every verdict that needs known facts is "not found".
func TestRandomModelFindsNothing(t *testing.T) {
	m, tok := randomGPT2(t)
	ctx := context.Background()
	facts, err := LoadFacts(knownFacts)
	if err != nil {
		t.Fatal(err)
	}
	athletes, err := LoadAthletes(lreSport)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := ROME(ctx, m, tok, facts, ROMEConfig{Dataset: "known_1000"})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Dataset.Total != 1209 || rr.Dataset.Known != 0 {
		t.Errorf("rome dataset %+v", rr.Dataset)
	}
	checkVerdicts(t, "rome", rr, &rr.Header, map[string]Status{ClaimROMEATE: NotFound, ClaimROMEHidden: NotFound, ClaimROMEMLP: NotFound, ClaimROMEAttn: NotFound})
	if !strings.Contains(rr.Findings[0].Verdict.Text, "knows 0 of 1209 facts") {
		t.Errorf("verdict %q does not give the count", rr.Findings[0].Verdict.Text)
	}
	ff, err := FactFinding(ctx, m, tok, athletes, FactFindingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	checkVerdicts(t, "fact-finding", ff, &ff.Header, map[string]Status{ClaimFFLookup: NotFound, ClaimFFGather: NotFound, ClaimFFProbe: NotFound, ClaimFFNoANDGate: NotFound, ClaimFFCounterfactual: NotFound})

	// A random SAE on the residual stream exercises the SAE path.
	s := randomSAE(m.DModel(), 64, "blocks.1.hook_resid_pre")
	sp, err := Superposition(ctx, m, tok, athletes, SuperpositionConfig{SAE: &SAEInput{SAE: s, Description: "random test SAE"}})
	if err != nil {
		t.Fatal(err)
	}
	checkVerdicts(t, "superposition", sp, &sp.Header, map[string]Status{ClaimSupUnderdetermined: NotFound, ClaimSupSharedANDs: NotFound, ClaimSupToy: NotMeasured})
	if sp.SAE == nil || sp.SAE.NameToken.N != sp.Dataset.Total-sp.Dataset.TooLong || sp.SAE.NameToken.Max > 64 {
		t.Errorf("SAE counts %+v over %d athletes", sp.SAE, sp.Dataset.Total)
	}
	pr, err := SparseProbing(ctx, m, tok, athletes, SparseProbingConfig{AthleteConfig: AthleteConfig{Limit: 60}})
	if err != nil {
		t.Fatal(err)
	}
	// The name task needs no known facts: it is measured and fails.
	checkVerdicts(t, "sparse-probing", pr, &pr.Header, map[string]Status{ClaimSPSport: NotFound, ClaimSPName: NotSupported})
	if pr.Names == nil || pr.Names.Positives < 20 || len(pr.Names.F1) != 2 {
		t.Errorf("name probes %+v", pr.Names)
	}
}

// randomSAE is a standard ReLU SAE with seeded random weights.
func randomSAE(dIn, dSAE int, hook string) *sae.SAE {
	s := &sae.SAE{Config: sae.Config{Architecture: sae.Standard, DIn: dIn, DSAE: dSAE, Normalization: sae.NormNone, ReshapeActivations: "none", DType: "float32",
		Metadata: sae.Metadata{HookName: hook}}}
	s.WEnc, s.BEnc, s.WDec, s.BDec = make([]float32, dIn*dSAE), make([]float32, dSAE), make([]float32, dSAE*dIn), make([]float32, dIn)
	for i := range s.WEnc {
		s.WEnc[i] = float32((i*7919)%13-6) / 6
		s.WDec[i] = s.WEnc[i]
	}
	return s
}

// TestToyDemoVerdicts runs the studies on the shipped 1-layer toy model,
// whose facts are stored in the MLP at the final token: ROME finds the late
// site only, Fact Finding's early-site claims fail, and the toy stores many
// facts per neuron.
func TestToyDemoVerdicts(t *testing.T) {
	f := openToyDemo(t)
	ctx := context.Background()
	facts, err := LoadFacts(filepath.Join(f.Dir, toy.FactsFile))
	if err != nil {
		t.Fatal(err)
	}
	athletes, err := LoadAthletes(filepath.Join(f.Dir, toy.FactsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(athletes) != 512 {
		t.Fatalf("%d athletes in the toy's sport relation, want 512", len(athletes))
	}
	rr, err := ROME(ctx, f.Model, f.Tokenizer, facts, ROMEConfig{Limit: 40})
	if err != nil {
		t.Fatal(err)
	}
	checkVerdicts(t, "rome", rr, &rr.Header, map[string]Status{ClaimROMEATE: Supported, ClaimROMEHidden: NotSupported, ClaimROMEMLP: NotSupported, ClaimROMEAttn: Supported})
	if rr.Dataset.Known != 1024 || rr.Dataset.Used != 40 {
		t.Errorf("rome dataset %+v", rr.Dataset)
	}
	ac := AthleteConfig{Template: ZeroShotTemplate, Limit: 100}
	ff, err := FactFinding(ctx, f.Model, f.Tokenizer, athletes, FactFindingConfig{AthleteConfig: ac})
	if err != nil {
		t.Fatal(err)
	}
	checkVerdicts(t, "fact-finding", ff, &ff.Header, map[string]Status{ClaimFFLookup: NotSupported, ClaimFFGather: NotSupported, ClaimFFProbe: NotSupported, ClaimFFCounterfactual: Supported})
	// The MLP at the final token carries the whole lead.
	if e := ff.Effects; e == nil || e.MLPAtFinal[0] < 0.9 || e.MLPAtName[0] > 0.01 {
		t.Errorf("effects %+v", e)
	}
	sp, err := Superposition(ctx, f.Model, f.Tokenizer, athletes, SuperpositionConfig{AthleteConfig: ac, Toy: f, ToySample: 8})
	if err != nil {
		t.Fatal(err)
	}
	checkVerdicts(t, "superposition", sp, &sp.Header, map[string]Status{ClaimSupUnderdetermined: NotFound, ClaimSupSAEL0: NotMeasured, ClaimSupToy: Supported})
	if sp.Toy.Recalled != 512 || sp.Toy.FactsPerNeuron != 8 {
		t.Errorf("toy %d recalled, %.2f per neuron; want 512 and 8", sp.Toy.Recalled, sp.Toy.FactsPerNeuron)
	}
}

// TestPlantedVerdicts runs the studies on the planted two-layer model,
// built so that Fact Finding's mechanism holds with one clean AND neuron per
// fact: the lookup, gathering, probe and counterfactual claims hold, the
// "no clean AND gate" claim fails, AND neurons are not shared, and neuron
// probes do not generalise to held-out athletes (each athlete has its own
// neuron, so none fires for a test athlete during training).
func TestPlantedVerdicts(t *testing.T) {
	m, tok, dir := plantedModel(t)
	ctx := context.Background()
	athletes := plantedAthletes()
	facts, err := LoadFacts(filepath.Join(dir, "facts.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	rr, err := ROME(ctx, m, tok, facts, ROMEConfig{})
	if err != nil {
		t.Fatal(err)
	}
	checkVerdicts(t, "rome", rr, &rr.Header, map[string]Status{ClaimROMEATE: Supported, ClaimROMEHidden: Supported, ClaimROMEAttn: Supported})
	ac := AthleteConfig{Template: "T {} p"}
	ff, err := FactFinding(ctx, m, tok, athletes, FactFindingConfig{AthleteConfig: ac})
	if err != nil {
		t.Fatal(err)
	}
	checkVerdicts(t, "fact-finding", ff, &ff.Header, map[string]Status{ClaimFFLookup: Supported, ClaimFFGather: Supported, ClaimFFProbe: Supported,
		ClaimFFNoANDGate: NotSupported, ClaimFFCounterfactual: Supported})
	if len(ff.LookupLayers) != 1 || ff.LookupLayers[0] != 0 || ff.Probe.Readable != 1 {
		t.Errorf("lookup layers %v, probe readable at entry %d; want [0] and 1 (L0)", ff.LookupLayers, ff.Probe.Readable)
	}
	sp, err := Superposition(ctx, m, tok, athletes, SuperpositionConfig{AthleteConfig: ac})
	if err != nil {
		t.Fatal(err)
	}
	checkVerdicts(t, "superposition", sp, &sp.Header, map[string]Status{ClaimSupUnderdetermined: Supported, ClaimSupSharedANDs: NotSupported})
	if c := sp.Conjunction; c.ANDPairs != 30 || c.ANDNeurons != 30 {
		t.Errorf("AND gates %d on %d neurons; want 30 on 30", c.ANDPairs, c.ANDNeurons)
	}
	pr, err := SparseProbing(ctx, m, tok, athletes, SparseProbingConfig{AthleteConfig: ac})
	if err != nil {
		t.Fatal(err)
	}
	checkVerdicts(t, "sparse-probing", pr, &pr.Header, map[string]Status{ClaimSPName: NotSupported, ClaimSPSport: Inconclusive})
}

func TestClaimsAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Claims() {
		if seen[c.ID] || c.Short == "" || c.Cite == "" || c.Figure == "" || c.Statement == "" {
			t.Errorf("claim %+v is listed twice or lacks a field", c)
		}
		seen[c.ID] = true
	}
}

func TestStudiesStopWhenCancelled(t *testing.T) {
	m, tok, dir := plantedModel(t)
	facts, err := LoadFacts(filepath.Join(dir, "facts.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ac := AthleteConfig{Template: "T {} p"}
	runs := map[string]func() error{
		"rome": func() error { _, err := ROME(ctx, m, tok, facts, ROMEConfig{}); return err },
		"fact-finding": func() error {
			_, err := FactFinding(ctx, m, tok, plantedAthletes(), FactFindingConfig{AthleteConfig: ac})
			return err
		},
		"superposition": func() error {
			_, err := Superposition(ctx, m, tok, plantedAthletes(), SuperpositionConfig{AthleteConfig: ac})
			return err
		},
		"sparse-probing": func() error {
			_, err := SparseProbing(ctx, m, tok, plantedAthletes(), SparseProbingConfig{AthleteConfig: ac})
			return err
		},
	}
	for name, run := range runs {
		if err := run(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want context.Canceled", name, err)
		}
	}
}
