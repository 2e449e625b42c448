package main

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/reproduce"
	"github.com/factlens/factlens/sae"
	"github.com/factlens/factlens/toy"
)

const sharedFacts = "../../../shared/data/facts"

// reproduceOutcome decodes a study's JSON output into its findings.
func reproduceFindings(t *testing.T, stdout string) (reproduce.Header, map[string]reproduce.Status) {
	t.Helper()
	var h reproduce.Header
	if err := json.Unmarshal([]byte(stdout), &h); err != nil {
		t.Fatalf("JSON: %v\n%s", err, stdout[:min(len(stdout), 500)])
	}
	st := map[string]reproduce.Status{}
	for _, f := range h.Findings {
		st[f.Claim.ID] = f.Verdict.Status
	}
	return h, st
}

// TestReproduceRendersEveryFormat runs every study on the shipped toy model
// in every format: JSON carries the findings, text and Markdown the claims
// table, HTML the figures.
func TestReproduceRendersEveryFormat(t *testing.T) {
	dir, err := toy.DemoDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]reproduce.Status{
		"rome":           {reproduce.ClaimROMEATE: reproduce.Supported, reproduce.ClaimROMEMLP: reproduce.NotSupported},
		"fact-finding":   {reproduce.ClaimFFLookup: reproduce.NotSupported, reproduce.ClaimFFCounterfactual: reproduce.Supported},
		"superposition":  {reproduce.ClaimSupToy: reproduce.Supported, reproduce.ClaimSupSAEL0: reproduce.NotMeasured},
		"sparse-probing": {reproduce.ClaimSPName: reproduce.NotSupported},
	}
	for _, study := range reproduceStudies {
		t.Run(study, func(t *testing.T) {
			args := []string{"reproduce", study, "--model", dir, "--limit", "40", "--seed", "3"}
			out := factlens(t, "", append(args, "--format", "json")...)
			if out.code != 0 {
				t.Fatalf("exit %d: %s", out.code, out.stderr)
			}
			h, st := reproduceFindings(t, out.stdout)
			if h.Study != study || h.Model != dir || h.Processing != "raw Hugging Face" || h.Dataset.Seed != 3 || h.Dataset.Used != 40 {
				t.Errorf("header %+v", h)
			}
			for id, s := range want[study] {
				if st[id] != s {
					t.Errorf("%s: %s, want %s", id, st[id], s)
				}
			}
			for _, format := range []string{"text", "md", "html"} {
				file := filepath.Join(t.TempDir(), "report."+format)
				out := factlens(t, "", append(args, "--format", format, "--out", file)...)
				if out.code != 0 || out.stdout != "" {
					t.Fatalf("%s: exit %d, stdout %q: %s", format, out.code, out.stdout, out.stderr)
				}
				b, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				doc := string(b)
				for _, s := range []string{"Claims", "this model", "verdict", "Verdicts and their rules", "Sources", "seed", "filter", "raw Hugging Face", "Rule:"} {
					if !strings.Contains(doc, s) {
						t.Errorf("%s report lacks %q", format, s)
					}
				}
				if format == "html" && study != "superposition" && !strings.Contains(doc, "<svg") {
					t.Errorf("html report has no figure")
				}
			}
		})
	}
}

// TestReproduceRandomCheckpoint runs every study on a random GPT-2-shaped
// checkpoint with the real tokenizer and datasets: it knows no fact, and the
// verdicts say so.
func TestReproduceRandomCheckpoint(t *testing.T) {
	dir := tinyCheckpoint(t)
	for _, study := range reproduceStudies {
		t.Run(study, func(t *testing.T) {
			out := factlens(t, "", "reproduce", study, "--model", dir, "--facts-dir", sharedFacts, "--format", "json", "--toy", "none")
			if study != "superposition" {
				out = factlens(t, "", "reproduce", study, "--model", dir, "--facts-dir", sharedFacts, "--format", "json")
			}
			if out.code != 0 {
				t.Fatalf("exit %d: %s", out.code, out.stderr)
			}
			h, st := reproduceFindings(t, out.stdout)
			if h.Dataset.Known != 0 || h.Dataset.Total == 0 {
				t.Errorf("dataset %+v", h.Dataset)
			}
			for id, s := range st {
				ok := s == reproduce.NotFound || s == reproduce.NotMeasured || (id == reproduce.ClaimSPName && s == reproduce.NotSupported)
				if !ok {
					t.Errorf("%s: %s on a random model", id, s)
				}
			}
		})
	}
}

func TestReproduceUsage(t *testing.T) {
	dir := tinyCheckpoint(t)
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"reproduce"}, 1, "name a study"},
		{[]string{"reproduce", "frobnicate"}, 1, "unknown study"},
		{[]string{"reproduce", "fact-finding", "--model", dir, "--facts-dir", sharedFacts, "--prompt", "no placeholder"}, 1, "--prompt"},
		{[]string{"reproduce", "fact-finding", "--model", dir, "--facts-dir", sharedFacts, "--threshold", "1.5"}, 1, "--threshold"},
		{[]string{"reproduce", "rome", "--model", dir, "--samples", "0"}, 1, "--samples"},
		{[]string{"reproduce", "rome", "--model", dir, "--dataset", "no/such.jsonl"}, 1, "no such file"},
		{[]string{"reproduce", "sparse-probing", "--model", dir, "--facts-dir", sharedFacts, "--ks", "4096"}, 1, "--ks"},
		{[]string{"reproduce", "fact-finding", "--model", dir, "--facts-dir", "no/such/dir"}, 2, "--facts-dir"},
	}
	for _, tt := range tests {
		out := factlens(t, "", tt.args...)
		if out.code != tt.code || !strings.Contains(out.stderr, tt.contains) {
			t.Errorf("%v: exit %d, want %d; stderr lacks %q:\n%s", tt.args, out.code, tt.code, tt.contains, out.stderr)
		}
	}
}

// TestReproduceSuperpositionWithSAE reads a TopK SAE (k = 8, so at most 8
// latents fire per token) trained, its cfg says, on TransformerLens-processed
// weights: the study runs it on a processed copy of the model.
func TestReproduceSuperpositionWithSAE(t *testing.T) {
	dir := tinyCheckpoint(t)
	const dIn, dSAE = 16, 64
	s := &sae.SAE{Config: sae.Config{Architecture: sae.TopK, DIn: dIn, DSAE: dSAE, K: 8, Normalization: sae.NormNone, ReshapeActivations: "none", DType: "float32",
		Metadata:           sae.Metadata{HookName: "blocks.1.hook_resid_pre", ModelName: "tiny", ContextSize: 32, PrependBOS: true},
		RequiresProcessing: sae.ProcessingOf(gpt2.TransformerLensProcessing())}}
	rng := rand.New(rand.NewPCG(5, 5))
	s.WEnc, s.BEnc, s.WDec, s.BDec = make([]float32, dIn*dSAE), make([]float32, dSAE), make([]float32, dSAE*dIn), make([]float32, dIn)
	for i := range s.WEnc {
		s.WEnc[i], s.WDec[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	for i := range s.BEnc {
		s.BEnc[i] = 1 // every pre-activation positive: exactly k fire
	}
	saeDir := filepath.Join(t.TempDir(), "sae")
	if err := s.Save(saeDir); err != nil {
		t.Fatal(err)
	}
	out := factlens(t, "", "reproduce", "superposition", "--model", dir, "--facts-dir", sharedFacts, "--toy", "none", "--sae", saeDir, "--format", "json")
	if out.code != 0 {
		t.Fatalf("exit %d: %s", out.code, out.stderr)
	}
	var res reproduce.SuperpositionResult
	if err := json.Unmarshal([]byte(out.stdout), &res); err != nil {
		t.Fatal(err)
	}
	st := res.SAE
	if st == nil || st.NameToken.N == 0 || st.NameToken.Median != 8 || st.NameToken.Max != 8 || st.AllTokens.Min != 8 || !st.PrependBOS {
		t.Fatalf("SAE counts %+v", st)
	}
	if res.Processing != "raw Hugging Face" || st.Processing == res.Processing {
		t.Errorf("model processing %q, SAE read under %q; want the SAE's own", res.Processing, st.Processing)
	}
	if f := res.Finding(reproduce.ClaimSupSAEL0); f == nil || f.Verdict.Status != reproduce.NotSupported || f.Value == nil || *f.Value != 8 {
		t.Errorf("SAE finding %+v", f)
	}
}
