package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/weights"
)

// The analysis commands on the tiny random checkpoint. Their numbers are
// checked against facts that do not come from the analysis package: other
// commands' outputs (run's logits, cache's activations), and identities any
// correct implementation obeys (patching the only differing token at layer 0
// restores the clean run; the last block's output at the last position
// fixes the logits).

const (
	factsDir = "../../../shared/data/facts"
	jordan   = "Michael Jordan plays the sport of"
)

// jsonOf runs factlens and decodes its JSON output into v.
func jsonOf(t *testing.T, v any, args ...string) {
	t.Helper()
	out := factlens(t, "", args...)
	if out.code != 0 {
		t.Fatalf("%v: exit %d: %s", args, out.code, out.stderr)
	}
	if err := json.Unmarshal([]byte(out.stdout), v); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out.stdout)
	}
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// runTop returns the top predictions `factlens run` reports.
func runTop(t *testing.T, dir string, k int, prompt string, extra ...string) []prediction {
	t.Helper()
	var res runResult
	jsonOf(t, &res, append([]string{"run", "--model", dir, "--format", "json", "--top", fmt.Sprint(k), prompt}, extra...)...)
	return res.Top
}

func TestDLASumsToRunLogits(t *testing.T) {
	dir := tinyCheckpoint(t)
	for _, extra := range [][]string{nil, {"--processing", "tl", "--prepend-bos"}} {
		t.Run(strings.Join(extra, " "), func(t *testing.T) {
			top := runTop(t, dir, 5, jordan, extra...)
			target, contrast := top[0], top[4]
			want := float64(target.Logit) - float64(contrast.Logit)
			var r dlaReport
			jsonOf(t, &r, append([]string{"dla", "--model", dir, "--format", "json", "--target-id", fmt.Sprint(target.ID),
				"--contrast-id", fmt.Sprint(contrast.ID), jordan}, extra...)...)
			d := r.DLA
			if !near(d.LogitDiff, want, 1e-4) {
				t.Errorf("logit diff %v, run's logits give %v", d.LogitDiff, want)
			}
			sum := d.Embed + d.PosEmbed + d.Constant
			for l := range d.Attn {
				sum += d.Attn[l] + d.MLP[l]
				var heads float64
				for _, h := range d.Heads[l] {
					heads += h
				}
				if !near(heads+d.AttnBias[l], d.Attn[l], 1e-4) {
					t.Errorf("layer %d: heads %v + b_O %v ≠ attention output %v", l, heads, d.AttnBias[l], d.Attn[l])
				}
			}
			if !near(sum, want, 1e-3) {
				t.Errorf("embed + pos + attention + MLP + constant = %v, run's logit difference %v", sum, want)
			}
			if len(d.Heads) != 2 || len(d.Heads[0]) != 2 || len(d.TopNeurons) != 20 {
				t.Errorf("heads %dx%d, %d top neurons; want 2x2, 20", len(d.Heads), len(d.Heads[0]), len(d.TopNeurons))
			}
			final := r.Lens.Rows[len(r.Lens.Rows)-1]
			if len(r.Lens.Rows) != 3 || final.TargetRank != 0 || !near(final.TargetProb, target.Prob, 1e-5) {
				t.Errorf("logit lens: %d rows, final rank %d prob %v; run's top token has prob %v", len(r.Lens.Rows), final.TargetRank, final.TargetProb, target.Prob)
			}
		})
	}
	// The default target is the model's top token, and text output names it.
	out := factlens(t, "", "dla", "--model", dir, jordan)
	top := runTop(t, dir, 1, jordan)
	if out.code != 0 || !strings.Contains(out.stdout, "logit('"+top[0].Token+"')") || !strings.Contains(out.stdout, "Logit lens") {
		t.Errorf("dla text: exit %d\n%s%s", out.code, out.stdout, out.stderr)
	}
}

func TestTargetTokenErrors(t *testing.T) {
	dir := tinyCheckpoint(t)
	var tok tokenizeResult
	jsonOf(t, &tok, "tokenize", "--model", dir, "--format", "json", " xyzzyplugh")
	var quoted []string
	for _, s := range tok.Tokens {
		quoted = append(quoted, "'"+s+"'")
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"multi-token target", []string{"dla", "--target", " xyzzyplugh", jordan}, 1, fmt.Sprintf("is %d tokens (%s)", len(tok.IDs), strings.Join(quoted, " "))},
		{"space hint", []string{"dla", "--contrast", "baseball", jordan}, 1, `--contrast "baseball" is 2 tokens ('base' 'ball'), not one; " baseball" (with a leading space) is one token`},
		{"id outside vocabulary", []string{"dla", "--target-id", "50257", jordan}, 1, "outside the vocabulary"},
		{"text and id", []string{"dla", "--target", " the", "--target-id", "262", jordan}, 1, "target"},
		{"same target and contrast", []string{"dla", "--target", " the", "--contrast-id", "262", jordan}, 1, "same token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := factlens(t, "", append([]string{tt.args[0], "--model", dir}, tt.args[1:]...)...)
			if out.code != tt.code || !strings.Contains(out.stderr, tt.contains) {
				t.Errorf("exit %d (want %d), stderr lacks %q:\n%s", out.code, tt.code, tt.contains, out.stderr)
			}
		})
	}
}

func TestTraceGrid(t *testing.T) {
	dir := tinyCheckpoint(t)
	const prompt = "The player Michael Jordan plays the sport of"
	for _, bos := range []bool{false, true} {
		t.Run(fmt.Sprint("bos=", bos), func(t *testing.T) {
			args := []string{"trace", "--model", dir, "--format", "json", "--subject", "Michael Jordan", "--noise-std", "0.5", "--samples", "3", prompt}
			var extra []string
			if bos {
				extra = []string{"--prepend-bos"}
			}
			var r traceReport
			jsonOf(t, &r, append(args, extra...)...)
			tr := r.Trace
			P, off := 8, 0
			if bos {
				P, off = 9, 1
			}
			if len(tr.Tokens) != P || tr.SubjectStart != 2+off || tr.SubjectEnd != 4+off {
				t.Fatalf("%d tokens, subject [%d, %d); want %d, [%d, %d)", len(tr.Tokens), tr.SubjectStart, tr.SubjectEnd, P, 2+off, 4+off)
			}
			for _, kind := range []string{"hidden", "mlp", "attn"} {
				g := tr.Scores[analysis.TraceKind(kind)]
				if len(g) != P {
					t.Fatalf("%s: %d rows, want %d positions", kind, len(g), P)
				}
				for p := range g {
					if len(g[p]) != 2 {
						t.Fatalf("%s: position %d has %d layers, want 2", kind, p, len(g[p]))
					}
				}
			}
			// Restoring the last block's output at the last position restores
			// the clean logits, hence the clean probability.
			if got := tr.Scores["hidden"][P-1][1]; !near(got, tr.CleanProb, 1e-6) {
				t.Errorf("hidden state restored at the last layer and position gives %v, clean is %v", got, tr.CleanProb)
			}
			// The default target is the model's top token, with run's probability.
			top := runTop(t, dir, 1, prompt, extra...)[0]
			if tr.Target != top.ID || !tr.Correct || !near(tr.CleanProb, top.Prob, 1e-5) {
				t.Errorf("target %d (correct %v) clean prob %v; run's top is %d with %v", tr.Target, tr.Correct, tr.CleanProb, top.ID, top.Prob)
			}
			if r.Noise != 0.5 || r.Samples != 3 || r.Window != 1 || r.Seed != 1 {
				t.Errorf("settings %+v", r.traceSettings)
			}
		})
	}
}

func TestTraceErrors(t *testing.T) {
	dir := tinyCheckpoint(t)
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"subject not in prompt", []string{"--subject", "Tom Brady", "--noise-std", "1", jordan}, 1, `--subject "Tom Brady" does not occur in the prompt`},
		{"no subject", []string{"--noise-std", "1", jordan}, 1, "--subject is required"},
		{"text and dataset", []string{"--dataset", "sport", jordan}, 1, "not both"},
		{"missing facts folder", []string{"--dataset", "sport", "--facts-dir", "no/such/dir"}, 2, "pass --facts-dir"},
		{"noise needs facts", []string{"--subject", "Michael", "--facts-dir", "no/such/dir", jordan}, 2, "--noise-std"},
		{"unknown dataset", []string{"--dataset", "nosuch"}, 1, "unknown --dataset"},
		{"unknown filter", []string{"--dataset", "sport", "--facts-dir", factsDir, "--filter", "some"}, 1, "--filter"},
		{"nothing known", []string{"--dataset", "sport", "--facts-dir", factsDir, "--noise-std", "1"}, 2, "no fact of sport passes --filter correct"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := factlens(t, "", append([]string{"trace", "--model", dir}, tt.args...)...)
			if out.code != tt.code || !strings.Contains(out.stderr, tt.contains) {
				t.Errorf("exit %d (want %d), stderr lacks %q:\n%s", out.code, tt.code, tt.contains, out.stderr)
			}
		})
	}
}

func TestTraceDataset(t *testing.T) {
	dir := tinyCheckpoint(t)
	facts := filepath.Join(t.TempDir(), "facts.jsonl")
	lines := `{"subject": "Michael Jordan", "prompt": "{} plays the sport of", "target": "basketball"}
{"subject": "Tom Brady", "prompt": "{} plays the sport of", "target": " football"}

{"subject": "Paris", "prompt": "The city of {} is in", "target": " France", "id": "p"}
`
	if err := os.WriteFile(facts, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	var r traceDatasetReport
	jsonOf(t, &r, "trace", "--model", dir, "--dataset", facts, "--filter", "none", "--samples", "2", "--format", "json")
	s := r.Summary
	if r.Dataset.Total != 3 || r.Dataset.Used != 3 || len(r.Traces) != 3 || s == nil || s.Facts != 3 {
		t.Fatalf("dataset %+v, %d traces, summary %+v", r.Dataset, len(r.Traces), s)
	}
	// Three facts: three first-subject, last-subject and last-token samples;
	// two-token subjects have no middle token; "Paris" is one token.
	if want := []int{3, 0, 3, 3}; !slices.Equal(s.Counts[:4], want) || s.Counts[5] != 3 {
		t.Errorf("bucket counts %v", s.Counts)
	}
	for kind, aie := range s.AIE {
		if len(aie) != 6 || len(aie[0]) != 2 {
			t.Errorf("%s: AIE %dx%d, want 6 buckets × 2 layers", kind, len(aie), len(aie[0]))
		}
	}
	if !near(s.ATE, s.MeanClean-s.MeanCorrupted, 1e-12) {
		t.Errorf("ATE %v ≠ %v − %v", s.ATE, s.MeanClean, s.MeanCorrupted)
	}
	// ν = 3σ of the subjects' token embeddings; the tiny checkpoint's wte is
	// drawn from N(0, 0.2²).
	if !(r.Noise > 0.5 && r.Noise < 0.7) || !strings.Contains(r.NoiseSource, "3 subjects") {
		t.Errorf("noise %v (%s), want about 3 × 0.2", r.Noise, r.NoiseSource)
	}
	if r.Facts[2].ID != "p" || r.Facts[0].Target != " basketball" {
		t.Errorf("facts %+v", r.Facts)
	}

	// The sport dataset, subsampled with a seed: the same seed draws the
	// same facts, and the report states the dataset, filter and sample.
	sample := func(seed string) []string {
		var r traceDatasetReport
		jsonOf(t, &r, "trace", "--model", dir, "--dataset", "sport", "--facts-dir", factsDir, "--filter", "none", "--limit", "2",
			"--samples", "1", "--kinds", "hidden", "--seed", seed, "--format", "json")
		if r.Dataset.Total != 318 || r.Dataset.Kept != 318 || r.Dataset.Used != 2 || len(r.Summary.AIE) != 1 {
			t.Fatalf("dataset %+v, kinds %d", r.Dataset, len(r.Summary.AIE))
		}
		return []string{r.Facts[0].Subject, r.Facts[1].Subject}
	}
	if a, b := sample("1"), sample("1"); !slices.Equal(a, b) {
		t.Errorf("seed 1 drew %v, then %v", a, b)
	}
	out := factlens(t, "", "trace", "--model", dir, "--dataset", "sport", "--facts-dir", factsDir, "--filter", "none", "--limit", "2",
		"--samples", "1", "--kinds", "mlp")
	for _, want := range []string{"dataset: sport", "filter: none", "sample: 2 of 318 kept facts, drawn with seed 1", "ATE", "last subject token"} {
		if !strings.Contains(out.stdout, want) {
			t.Errorf("text report lacks %q:\n%s", want, out.stdout)
		}
	}
}

// pairArgs are clean and corrupted prompts that differ in one token (1).
var pairArgs = []string{"--clean", jordan, "--corrupted", "Michael Smith plays the sport of"}

func TestPatchIdentities(t *testing.T) {
	dir := tinyCheckpoint(t)
	top := runTop(t, dir, 2, jordan)
	corrTop := runTop(t, dir, 50257, "Michael Smith plays the sport of")
	var r patchReport
	jsonOf(t, &r, append([]string{"patch", "--model", dir, "--format", "json", "--target-id", fmt.Sprint(top[0].ID), "--contrast-id", fmt.Sprint(top[1].ID)}, pairArgs...)...)
	p := r.Patch
	if want := float64(top[0].Logit) - float64(top[1].Logit); !near(p.CleanLogitDiff, want, 1e-4) {
		t.Errorf("clean logit diff %v, run's %v", p.CleanLogitDiff, want)
	}
	var ct, cc float64
	for _, pr := range corrTop {
		switch pr.ID {
		case top[0].ID:
			ct = float64(pr.Logit)
		case top[1].ID:
			cc = float64(pr.Logit)
		}
	}
	if !near(p.CorruptedLogitDiff, ct-cc, 1e-4) {
		t.Errorf("corrupted logit diff %v, run's %v", p.CorruptedLogitDiff, ct-cc)
	}
	const P, L, H = 6, 2, 2
	if len(p.ResidPre) != L || len(p.ResidPre[0]) != P || len(p.HeadOutAllPos) != L || len(p.HeadOutAllPos[0]) != H ||
		len(p.HeadOutByPos) != L || len(p.HeadOutByPos[0]) != P || len(p.HeadOutByPos[0][0]) != H {
		t.Fatalf("grid shapes wrong: %+v", p)
	}
	for q := 0; q < P; q++ {
		// Layer 0's residual stream at the one differing position restores
		// the whole clean run (normalized metric 1); elsewhere it changes
		// nothing (0).
		want := 0.0
		if q == 1 {
			want = 1
		}
		if !near(p.ResidPre[0][q], want, 1e-3) {
			t.Errorf("resid_pre L0 position %d: %v, want %v", q, p.ResidPre[0][q], want)
		}
	}
	// Before the differing token the two runs are identical: no patch there
	// changes anything.
	for l := 0; l < L; l++ {
		if p.ResidPre[l][0] != 0 || p.AttnOut[l][0] != 0 || p.MLPOut[l][0] != 0 || p.HeadOutByPos[l][0][0] != 0 {
			t.Errorf("layer %d position 0 patches are not zero", l)
		}
	}
	for _, format := range []string{"text", "md", "html"} {
		out := factlens(t, "", append([]string{"patch", "--model", dir, "--format", format, "--kinds", "resid_pre,head_out_all_pos",
			"--target-id", fmt.Sprint(top[0].ID), "--contrast-id", fmt.Sprint(top[1].ID)}, pairArgs...)...)
		if out.code != 0 || !strings.Contains(out.stdout, "Jordan") || strings.Contains(out.stdout, "MLP outputs") {
			t.Errorf("%s: exit %d: %s", format, out.code, out.stderr)
		}
	}

	tests := []struct {
		name     string
		args     []string
		contains string
	}{
		{"identical prompts", []string{"--clean", jordan, "--corrupted", jordan}, "same tokens"},
		{"different lengths", []string{"--clean", jordan, "--corrupted", "Tom plays the sport of"}, "--corrupted is 5 ('Tom' ' plays' ' the' ' sport' ' of')"},
		{"missing corrupted", []string{"--clean", jordan}, "corrupted"},
		{"unknown kind", append([]string{"--kinds", "resid_mid"}, pairArgs...), "unknown --kinds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := factlens(t, "", append([]string{"patch", "--model", dir}, tt.args...)...)
			if out.code != 1 || !strings.Contains(out.stderr, tt.contains) {
				t.Errorf("exit %d, stderr lacks %q:\n%s", out.code, tt.contains, out.stderr)
			}
		})
	}
}

func TestNeurons(t *testing.T) {
	dir := tinyCheckpoint(t)
	top := runTop(t, dir, 2, jordan)
	ids := []string{"--target-id", fmt.Sprint(top[0].ID), "--contrast-id", fmt.Sprint(top[1].ID)}
	var r neuronsReport
	jsonOf(t, &r, append(append([]string{"neurons", "--model", dir, "--format", "json", "--positions", "1,last", "--top", "10"}, ids...), pairArgs...)...)
	if want := float64(top[0].Logit) - float64(top[1].Logit); !near(r.CleanLogitDiff, want, 1e-4) {
		t.Errorf("clean logit diff %v, run's %v", r.CleanLogitDiff, want)
	}
	if !slices.Equal(r.Positions, []int{1, 5}) || r.Scored != 2*2*64 || len(r.Candidates) != 10 {
		t.Fatalf("positions %v, %d scored, %d candidates", r.Positions, r.Scored, len(r.Candidates))
	}
	for l, row := range r.AttributionByLayerPos {
		for q, v := range row {
			// Unscored positions are zero; so is the last block at position 1,
			// whose output no later position reads.
			if (q != 1 && q != 5 || l == 1 && q == 1) && v != 0 {
				t.Errorf("attribution at layer %d position %d is %v, want 0", l, q, v)
			}
		}
	}
	for _, c := range r.Candidates {
		if c.Pos != 1 && c.Pos != 5 {
			t.Errorf("candidate at unscored position %d", c.Pos)
		}
		if c.Layer == 1 && c.Pos == 1 && (c.Patch != 0 || c.Ablation != 0) {
			t.Errorf("L1 neuron at position 1 has effects %+v", c)
		}
	}
	if s := r.MinimalSet; s != nil {
		if !near(s.Goal, 0.5*s.CleanLogitDiff, 1e-9) || len(s.Neurons) != len(s.LogitDiffs) || s.Reached != (last(s.LogitDiffs) <= s.Goal) {
			t.Errorf("minimal set %+v", s)
		}
	} else if r.CleanLogitDiff > 0 || r.MinimalSetNote == "" {
		t.Errorf("no minimal set, note %q, clean logit diff %v", r.MinimalSetNote, r.CleanLogitDiff)
	}

	// Mean ablation over sport's last subject tokens: the report says so.
	out := factlens(t, "", append(append([]string{"neurons", "--model", dir, "--positions", "1", "--top", "5", "--ablation", "mean",
		"--reference", "sport", "--reference-limit", "8", "--reference-position", "last-subject", "--facts-dir", factsDir}, ids...), pairArgs...)...)
	if out.code != 0 || !strings.Contains(out.stdout, "mean ablation over 8 reference prompts of sport at their last-subject token") {
		t.Errorf("mean ablation: exit %d: %s\n%s", out.code, out.stderr, out.stdout)
	}
	for _, tt := range []struct{ args []string }{
		{[]string{"--positions", "6"}}, {[]string{"--positions", "x"}}, {[]string{"--ablation", "noise"}},
	} {
		out := factlens(t, "", append(append(append([]string{"neurons", "--model", dir}, tt.args...), ids...), pairArgs...)...)
		if out.code != 1 {
			t.Errorf("%v: exit %d, want 1: %s", tt.args, out.code, out.stderr)
		}
	}
}

// cachedPost returns blocks.L.mlp.hook_post of prompt from `factlens cache`.
func cachedPost(t *testing.T, dir, prompt string) map[string][]float32 {
	t.Helper()
	file := filepath.Join(t.TempDir(), "acts.safetensors")
	if out := factlens(t, "", "cache", "--model", dir, "--hooks", "blocks.*.mlp.hook_post", "--out", file, prompt); out.code != 0 {
		t.Fatalf("cache: %s", out.stderr)
	}
	f, err := weights.OpenSafetensors(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	acts := map[string][]float32{}
	for _, l := range []string{"0", "1"} {
		v, err := f.Float32("blocks." + l + ".mlp.hook_post")
		if err != nil {
			t.Fatal(err)
		}
		acts[l] = slices.Clone(v) // v may be a view of the file's mapping, gone after Close
	}
	return acts
}

func TestConjunctionMatchesCache(t *testing.T) {
	dir := tinyCheckpoint(t)
	top := runTop(t, dir, 1, jordan)[0]
	var r conjunctionReport
	jsonOf(t, &r, "conjunction", "--model", dir, "--format", "json", "--name", "Michael Jordan", "--other-firsts", "Tom,John",
		"--other-lasts", "Smith,Brown", "--top", "8", "--target-id", fmt.Sprint(top.ID))
	c := r.Result
	if c.Tested != 2*64 || len(c.Top) != 8 || c.Point != "mlp.hook_post" {
		t.Fatalf("tested %d, %d top, point %s", c.Tested, len(c.Top), c.Point)
	}
	// Every name is two single tokens, so the last name token is position 1
	// and hook_post there comes straight from `factlens cache`; d_mlp is 64.
	at := func(acts map[string][]float32, n analysisNeuron) float64 {
		return float64(acts[fmt.Sprint(n.layer)][1*64+n.neuron])
	}
	ab := cachedPost(t, dir, jordan)
	abPrime := []map[string][]float32{cachedPost(t, dir, "Michael Smith plays the sport of"), cachedPost(t, dir, "Michael Brown plays the sport of")}
	for _, n := range c.Top {
		ref := analysisNeuron{n.Layer, n.Neuron}
		if !near(n.Act, at(ab, ref), 1e-5) {
			t.Errorf("%s: act %v, cache has %v", neuronName(n.Layer, n.Neuron), n.Act, at(ab, ref))
		}
		if want := (at(abPrime[0], ref) + at(abPrime[1], ref)) / 2; !near(n.FirstOnly, want, 1e-5) {
			t.Errorf("%s: mean act(A B′) %v, cache gives %v", neuronName(n.Layer, n.Neuron), n.FirstOnly, want)
		}
		and := n.Act >= 0.5 && n.Interaction >= 0.5*n.Act && math.Max(n.FirstOnly, n.LastOnly) <= 0.5*n.Act
		if n.AND != and || !near(n.Interaction, n.Act-n.FirstOnly-n.LastOnly+n.Neither, 1e-9) {
			t.Errorf("%s: verdict %v, interaction %v from %+v", neuronName(n.Layer, n.Neuron), n.AND, n.Interaction, n)
		}
	}
	if b := r.Behaviour; b == nil || !near(b.Prob, top.Prob, 1e-5) {
		t.Errorf("behaviour %+v; run gives P = %v", b, top.Prob)
	}

	for _, tt := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"--name", "Madonna", "--other-firsts", "A", "--other-lasts", "B"}, 1, "not a first and a last name"},
		{[]string{"--name", "Michael Jordan", "--dataset", "sport"}, 1, "either --name or --dataset"},
		{[]string{"--name", "Michael Jordan", "--facts-dir", "no/such/dir"}, 2, "--other-firsts"},
		{[]string{"--name", "Michael Jordan", "--other-firsts", "A", "--other-lasts", "B", "--layers", "2"}, 1, "--layers 2 is outside"},
	} {
		out := factlens(t, "", append([]string{"conjunction", "--model", dir}, tt.args...)...)
		if out.code != tt.code || !strings.Contains(out.stderr, tt.contains) {
			t.Errorf("%v: exit %d (want %d), stderr lacks %q:\n%s", tt.args, out.code, tt.code, tt.contains, out.stderr)
		}
	}
}

type analysisNeuron struct{ layer, neuron int }

func TestConjunctionSurvey(t *testing.T) {
	dir := tinyCheckpoint(t)
	var r conjunctionSurveyReport
	jsonOf(t, &r, "conjunction", "--model", dir, "--format", "json", "--dataset", "sport", "--facts-dir", factsDir,
		"--filter", "none", "--limit", "12", "--min-act", "0.1")
	s := r.Survey
	if r.Template != "{} plays the sport of" || r.Dataset.Used != 12 || len(s.Names)+len(r.Skipped)+r.Repeated != 12 {
		t.Fatalf("template %q, dataset %+v, %d names, %d skipped", r.Template, r.Dataset, len(s.Names), len(r.Skipped))
	}
	var pairs, neurons, weighted int
	for _, k := range s.NeuronsPerFact {
		pairs += k
	}
	for k, n := range s.FactsPerNeuronHistogram {
		neurons += n
		weighted += k * n
	}
	if pairs != s.ANDPairs || neurons != s.ANDNeurons || weighted != s.ANDPairs {
		t.Errorf("counts disagree: Σ per fact %d, Σ histogram %d, Σ k·histogram %d; pairs %d, neurons %d", pairs, neurons, weighted, s.ANDPairs, s.ANDNeurons)
	}
	out := factlens(t, "", "conjunction", "--model", dir, "--dataset", "sport", "--facts-dir", factsDir, "--filter", "none", "--limit", "12", "--min-act", "0.1")
	for _, want := range []string{"AND criterion: act ≥ 0.1, interaction ≥ 0.5·act", "filter: none", "neurons tested per fact", "Facts by their number of AND neurons"} {
		if !strings.Contains(out.stdout, want) {
			t.Errorf("survey report lacks %q", want)
		}
	}
}

func TestProbe(t *testing.T) {
	dir := tinyCheckpoint(t)
	// Every "cat" fact reads the same vector at layer 0's residual stream
	// (token and position embeddings of "cat" at position 0), every "dog"
	// fact another: one coordinate separates them, so F1 is exactly 1.
	var b strings.Builder
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&b, `{"subject": "cat", "prompt": "{} number %d is", "target": " A"}`+"\n", i)
		fmt.Fprintf(&b, `{"subject": "dog", "prompt": "{} number %d is", "target": " B"}`+"\n", i)
	}
	facts := filepath.Join(t.TempDir(), "pets.jsonl")
	if err := os.WriteFile(facts, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var r probeReport
	jsonOf(t, &r, "probe", "--model", dir, "--format", "json", "--dataset", facts, "--point", "hook_resid_pre", "--layer", "0", "--k", "1,2")
	if !slices.Equal(r.Classes, []string{" A", " B"}) || len(r.Layers) != 1 || len(r.Layers[0].Result.PerK) != 2 {
		t.Fatalf("classes %v, %d layers", r.Classes, len(r.Layers))
	}
	for _, pk := range r.Layers[0].Result.PerK {
		if pk.F1 != 1 || pk.Accuracy != 1 {
			t.Errorf("k = %d: F1 %v accuracy %v, want 1", pk.K, pk.F1, pk.Accuracy)
		}
	}

	var s probeReport
	jsonOf(t, &s, "probe", "--model", dir, "--format", "json", "--dataset", "sport", "--facts-dir", factsDir, "--limit", "60", "--k", "1,4")
	res := s.Layers[1].Result
	if len(s.Layers) != 2 || s.Layers[1].Layer != 1 || res.Features != 64 || res.Train+res.Test != 60 || len(s.Classes) != 5 {
		t.Errorf("sport probe: %d layers, %d features, %d+%d examples, classes %v", len(s.Layers), res.Features, res.Train, res.Test, s.Classes)
	}
	var total int
	for _, n := range s.Counts {
		total += n
	}
	if total != 60 {
		t.Errorf("class counts %v do not add up to 60", s.Counts)
	}
	out := factlens(t, "", "probe", "--model", dir, "--dataset", "sport", "--facts-dir", factsDir, "--limit", "60", "--k", "1,4", "--format", "html")
	if out.code != 0 || !strings.Contains(out.stdout, "<svg") {
		t.Errorf("probe html: exit %d: %s", out.code, out.stderr)
	}
	for _, tt := range []struct {
		args     []string
		contains string
	}{
		{[]string{"--dataset", facts, "--layer", "2"}, "--layer 2 is outside"},
		{[]string{"--dataset", facts, "--k", "1,x"}, "--k"},
		{[]string{"--dataset", facts, "--position", "middle"}, "--position"},
		{[]string{"--dataset", facts, "--show-k", "3"}, "--show-k 3"},
		{[]string{}, "--dataset is required"},
	} {
		out := factlens(t, "", append([]string{"probe", "--model", dir}, tt.args...)...)
		if out.code != 1 || !strings.Contains(out.stderr, tt.contains) {
			t.Errorf("%v: exit %d, stderr lacks %q:\n%s", tt.args, out.code, tt.contains, out.stderr)
		}
	}
}

func TestAnalysisReportsWriteFiles(t *testing.T) {
	dir := tinyCheckpoint(t)
	file := filepath.Join(t.TempDir(), "trace.html")
	out := factlens(t, "", "trace", "--model", dir, "--subject", "Michael Jordan", "--noise-std", "0.5", "--samples", "2",
		"--format", "html", "--out", file, jordan)
	b, err := os.ReadFile(file)
	if out.code != 0 || err != nil || out.stdout != "" {
		t.Fatalf("exit %d, %v, stdout %q: %s", out.code, err, out.stdout, out.stderr)
	}
	for _, want := range []string{"<svg", "Hidden states", "MLP", "Attention", "noise ν = 0.5"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("trace.html lacks %q", want)
		}
	}
	md := factlens(t, "", "dla", "--model", dir, "--format", "md", "--target", " basketball", "--contrast", " baseball", jordan)
	if md.code != 0 || !strings.Contains(md.stdout, "| L1 |") {
		t.Errorf("dla md: exit %d: %s", md.code, md.stderr)
	}
}

// TestTraceKnownFacts traces facts a trained model knows: the toy demo
// model (toy/testdata/demo, a one-layer GPT-2 trained on its world's facts).
// ROME's filter keeps them, and corrupting the subject lowers the answer's
// probability.
func TestTraceKnownFacts(t *testing.T) {
	demo := "../../toy/testdata/demo"
	if _, err := os.Stat(filepath.Join(demo, "facts.jsonl")); err != nil {
		t.Skip("no toy demo model")
	}
	var r traceDatasetReport
	jsonOf(t, &r, "trace", "--model", demo, "--dataset", filepath.Join(demo, "facts.jsonl"), "--limit", "6", "--samples", "4", "--format", "json")
	s := r.Summary
	if r.Dataset.Filter != "correct" || r.Dataset.Kept == 0 || r.Dataset.Used != 6 || s.Facts != 6 {
		t.Fatalf("dataset %+v, summary facts %d", r.Dataset, s.Facts)
	}
	for _, f := range r.Facts {
		if !f.Correct {
			t.Errorf("fact %s kept by the correct filter but traced as incorrect", f.ID)
		}
	}
	if !(s.MeanClean > 0.5 && s.ATE > 0.1) {
		t.Errorf("mean clean %v, ATE %v: corrupting known subjects should lower the answer's probability", s.MeanClean, s.ATE)
	}
}
