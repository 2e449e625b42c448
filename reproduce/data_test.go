package reproduce

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestLoadAthletes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	csv := write("sports.csv", "athlete,sport,log_prob_one_shot\nMichael Jordan,basketball,-0.1\nTom Brady,football,-0.2\nHank Aaron,baseball,-0.3\n")
	jsonl := write("facts.jsonl", `{"subject":"Tom Brady","prompt":"{} plays","target":" hockey","relation":"sport"}
{"subject":"Paris","prompt":"{} is in","target":" France","relation":"city"}
{"subject":"Wayne Gretzky","prompt":"{} plays","target":"hockey"}
`)
	got, err := LoadAthletes(csv, jsonl, lreSport)
	if err != nil {
		t.Fatal(err)
	}
	// The CSV's three, the JSON Lines' one new sport fact (Tom Brady keeps
	// football, Paris is not a sport fact), then the LRE's 318 minus
	// duplicates.
	if got[0] != (Athlete{"Michael Jordan", "basketball"}) || got[1] != (Athlete{"Tom Brady", "football"}) || got[3] != (Athlete{"Wayne Gretzky", "hockey"}) {
		t.Errorf("first athletes %v", got[:4])
	}
	if slices.ContainsFunc(got, func(a Athlete) bool { return a.Name == "Paris" }) {
		t.Error("a city fact was read as an athlete")
	}
	lre, err := LoadAthletes(lreSport)
	if err != nil {
		t.Fatal(err)
	}
	if len(lre) != 318 {
		t.Errorf("LRE has %d athletes, want 318", len(lre))
	}
	if _, err := LoadAthletes(write("bad.csv", "name,team\nx,y\n")); err == nil {
		t.Error("a CSV without a sport column loaded")
	}
}

func TestLoadFactsFormats(t *testing.T) {
	for _, c := range []struct {
		path string
		n    int
	}{{knownFacts, 1209}, {lreSport, 318}, {filepath.Join("testdata", "planted", "facts.jsonl"), 30}} {
		facts, err := LoadFacts(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if len(facts) != c.n {
			t.Errorf("%s: %d facts, want %d", c.path, len(facts), c.n)
		}
	}
}

// TestStatistics compares with numpy: np.quantile (linear) and
// np.std(ddof=1)/sqrt(n) of [3, 1, 4, 1, 5, 9, 2, 6].
func TestStatistics(t *testing.T) {
	xs := []float64{3, 1, 4, 1, 5, 9, 2, 6}
	for _, c := range []struct{ q, want float64 }{{0, 1}, {0.1, 1}, {0.5, 3.5}, {0.9, 6.8999999999999995}, {1, 9}} {
		if got := quantile(xs, c.q); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("quantile %.1f = %v, numpy %v", c.q, got, c.want)
		}
	}
	if got := stderr(xs); math.Abs(got-0.9716977043151993) > 1e-12 {
		t.Errorf("stderr = %v", got)
	}
	if !math.IsNaN(stderr([]float64{1})) || !math.IsNaN(quantile(nil, 0.5)) {
		t.Error("statistics of too few values are not NaN")
	}
}

func TestSampleIndices(t *testing.T) {
	idx := []int{2, 3, 5, 7, 11, 13, 17}
	a, b := sampleIndices(idx, 3, 9), sampleIndices(idx, 3, 9)
	if !slices.Equal(a, b) || len(a) != 3 || !slices.IsSorted(a) {
		t.Errorf("sample %v, again %v", a, b)
	}
	if !slices.Equal(sampleIndices(idx, 0, 1), idx) || !slices.Equal(sampleIndices(idx, 10, 1), idx) {
		t.Error("a limit of 0 or above the count does not keep everything")
	}
}
