package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDemoRunsOfflineAndRecallsTheFact runs the whole demo pipeline on the
// shipped toy model with no network: the synthetic world's ground truth
// (Patrick White plays basketball, from the world file, not the model) must
// be the model's top prediction, and every report must be written.
func TestDemoRunsOfflineAndRecallsTheFact(t *testing.T) {
	out := filepath.Join(t.TempDir(), "demo")
	res := factlens(t, "", "demo", "--out", out, "--cache-dir", t.TempDir())
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	m := regexp.MustCompile(`(?m)^\s+1\s+' (\w+)'`).FindStringSubmatch(res.stdout)
	if m == nil || m[1] != "basketball" {
		t.Errorf("top prediction %v, want ' basketball' (the world's fact):\n%s", m, res.stdout)
	}
	index, err := os.ReadFile(filepath.Join(out, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"activations.html", "dla.html", "conjunction.html", "mechanism.html", "sae-train.html", "sae-features.html"} {
		if !strings.Contains(string(index), `href="`+f+`"`) {
			t.Errorf("index.html does not link %s", f)
		}
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() < 1000 {
			t.Errorf("%s missing or empty: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "sae", "cfg.json")); err != nil {
		t.Errorf("the demo SAE was not saved in SAELens' layout: %v", err)
	}
	bad := factlens(t, "", "demo", "--out", filepath.Join(t.TempDir(), "x"), "--cache-dir", t.TempDir(), "--person", "Nobody Here")
	if bad.code != 1 || !strings.Contains(bad.stderr, "Nobody Here") {
		t.Errorf("unknown person: exit %d, stderr %q", bad.code, bad.stderr)
	}
}
