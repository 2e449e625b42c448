package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/factlens/factlens/toy"
)

func TestToyWorld(t *testing.T) {
	out := factlens(t, "", "toy", "world", "--people", "40", "--relations", "sport,city", "--format", "json")
	if out.code != 0 {
		t.Fatalf("exit %d: %s", out.code, out.stderr)
	}
	var res toyWorldResult
	if err := json.Unmarshal([]byte(out.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Facts != 80 || len(res.World.People) != 40 || len(res.Baselines) != 2 {
		t.Errorf("world: %d facts, %d people, %d baselines", res.Facts, len(res.World.People), len(res.Baselines))
	}
	if out := factlens(t, "", "toy", "world", "--people", "0"); out.code != 1 {
		t.Errorf("--people 0: exit %d", out.code)
	}
}

// TestToyTrainRunsThroughModelFlag trains a tiny model with the CLI, then
// runs it through the ordinary --model path and resumes it.
func TestToyTrainRunsThroughModelFlag(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "toy")
	args := func(maxSteps string, extra ...string) []string {
		return append([]string{"toy", "train", "-q", "--people", "64", "--d-model", "16", "--d-mlp", "64", "--lr", "3e-3", "--batch", "64",
			"--eval-every", "25", "--max-steps", maxSteps, "--format", "json", dir}, extra...)
	}
	out := factlens(t, "", args("50")...)
	if out.code != 0 {
		t.Fatalf("exit %d: %s", out.code, out.stderr)
	}
	var res toyTrainResult
	if err := json.Unmarshal([]byte(out.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.State.Step != 50 || res.State.Final == nil || res.StepsPerSecond <= 0 {
		t.Fatalf("state %+v", res.State)
	}
	w, err := toy.ReadWorld(filepath.Join(dir, toy.WorldFile))
	if err != nil {
		t.Fatal(err)
	}
	p := w.People[0]
	run := factlens(t, "", "run", "--model", dir, "--format", "json", "-k", "1", p.Name()+" plays the sport of")
	if run.code != 0 {
		t.Fatalf("run: exit %d: %s", run.code, run.stderr)
	}
	var rr runResult
	if err := json.Unmarshal([]byte(run.stdout), &rr); err != nil {
		t.Fatal(err)
	}
	if len(rr.IDs) != 6 {
		t.Errorf("prompt %q is %d tokens, want one per word", p.Name()+" plays the sport of", len(rr.IDs))
	}

	// A second train into the same folder needs --resume.
	if again := factlens(t, "", args("50")...); again.code != 1 {
		t.Errorf("train into an existing model: exit %d", again.code)
	}
	out = factlens(t, "", args("100", "--resume")...)
	if out.code != 0 {
		t.Fatalf("resume: exit %d: %s", out.code, out.stderr)
	}
	if err := json.Unmarshal([]byte(out.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.State.Step <= 50 {
		t.Errorf("resumed run stopped at step %d", res.State.Step)
	}
	for _, bad := range [][]string{
		{"--demo", "--people", "5"},
		{"--people", "0"},
		{"--heads", "3"},
		{"--lr", "-1"},
	} {
		args := append(append([]string{"toy", "train"}, bad...), filepath.Join(t.TempDir(), "d"))
		if out := factlens(t, "", args...); out.code != 1 {
			t.Errorf("%v: exit %d, want 1 (usage): %s", bad, out.code, out.stderr)
		}
	}
}

func TestToyEvalAndMechanismOnDemo(t *testing.T) {
	dir, err := toy.DemoDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	out := factlens(t, "", "toy", "eval", "--format", "json", dir)
	if out.code != 0 {
		t.Fatalf("exit %d: %s", out.code, out.stderr)
	}
	var ev toyEvalResult
	if err := json.Unmarshal([]byte(out.stdout), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Recall.Correct != 1024 || len(ev.Relations) != 2 || len(ev.Missed) != 0 {
		t.Errorf("demo eval: %d correct, %d relations, %d missed", ev.Recall.Correct, len(ev.Relations), len(ev.Missed))
	}
	html := filepath.Join(t.TempDir(), "mech.html")
	out = factlens(t, "", "toy", "mechanism", "--sample", "8", "--format", "html", "--out", html, dir)
	if out.code != 0 {
		t.Fatalf("mechanism: exit %d: %s", out.code, out.stderr)
	}
	b, err := os.ReadFile(html)
	if err != nil || !strings.Contains(string(b), "AND neurons") || !strings.Contains(string(b), "<svg") {
		t.Errorf("mechanism report: %v", err)
	}
	if out := factlens(t, "", "toy", "mechanism", "--relation", "color", dir); out.code != 2 {
		t.Errorf("unknown relation: exit %d", out.code)
	}
}

func TestToySweepReport(t *testing.T) {
	html := filepath.Join(t.TempDir(), "sweep.html")
	out := factlens(t, "", "toy", "sweep", "-q", "--people", "16,32", "--d-mlp", "4,16", "--d-model", "16", "--lr", "3e-3",
		"--max-steps", "200", "--eval-every", "100", "--format", "html", "--out", html)
	if out.code != 0 {
		t.Fatalf("exit %d: %s", out.code, out.stderr)
	}
	b, err := os.ReadFile(html)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"facts-per-neuron", "<svg", "d_mlp 16", "Capacity per MLP width"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("sweep report lacks %q", want)
		}
	}
	out = factlens(t, "", "toy", "sweep", "-q", "--people", "16", "--d-mlp", "4", "--d-model", "16", "--max-steps", "100", "--format", "json")
	var res toySweepResult
	if err := json.Unmarshal([]byte(out.stdout), &res); err != nil {
		t.Fatalf("%v: %s", err, out.stderr)
	}
	if len(res.Points) != 1 || res.Points[0].Facts != 16 || res.Headline == "" {
		t.Errorf("sweep json: %+v", res)
	}
	saved := filepath.Join(t.TempDir(), "sweep.json")
	if err := os.WriteFile(saved, []byte(out.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	md := factlens(t, "", "toy", "sweep", "--from", saved, "--format", "md")
	if md.code != 0 || !strings.Contains(md.stdout, res.Headline) {
		t.Errorf("--from: exit %d: %s", md.code, md.stderr)
	}
}
