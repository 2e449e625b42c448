package toy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/gpt2"
)

var update = flag.Bool("update", false, "rewrite testdata/tokenizer/{vocab.json,merges.txt} from NewVocabulary")

const gpt2Tokenizer = "../../shared/data/gpt2-tokenizer"

// TestInventoryIsGPT2Words checks against GPT-2's own vocab.json that every
// word of the toy worlds is one GPT-2 token, bare and with a leading space,
// so that the prompts are GPT-2's words.
func TestInventoryIsGPT2Words(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(gpt2Tokenizer, "vocab.json"))
	if err != nil {
		t.Skipf("GPT-2 vocabulary not available: %v", err)
	}
	var vocab map[string]int
	if err := json.Unmarshal(b, &vocab); err != nil {
		t.Fatal(err)
	}
	// Names open prompts, so they must be tokens bare as well; the other
	// words only ever follow a space.
	for _, w := range inventory() {
		forms := []string{"Ġ" + w}
		if slices.Contains(firstNamePool, w) || slices.Contains(lastNamePool, w) {
			forms = append(forms, w)
		}
		for _, form := range forms {
			if _, ok := vocab[form]; !ok {
				t.Errorf("%q is not a GPT-2 token", form)
			}
		}
	}
	if slices.ContainsFunc(firstNamePool, func(s string) bool { return slices.Contains(lastNamePool, s) }) {
		t.Error("first and last name pools overlap")
	}
	if len(firstNamePool) != MaxPool || len(lastNamePool) != MaxPool {
		t.Errorf("pools have %d and %d names, want %d", len(firstNamePool), len(lastNamePool), MaxPool)
	}
}

// TestVocabularyFiles pins the generated vocab.json and merges.txt to the
// committed copies that make_golden.py reads, and checks that the byte
// tokens get GPT-2's ids 0–255 (against GPT-2's vocab.json).
func TestVocabularyFiles(t *testing.T) {
	v := NewVocabulary()
	dir := "testdata/tokenizer"
	if *update {
		if err := v.WriteFiles(dir); err != nil {
			t.Fatal(err)
		}
	}
	for name, got := range map[string][]byte{"vocab.json": v.VocabJSON(), "merges.txt": v.MergesTxt()} {
		want, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from testdata/tokenizer/%s (regenerate with -update and rerun make_golden.py)", name, name)
		}
	}
	if v.Tokens[v.EOT] != gpt2.EndOfText || v.EOT != v.Size()-1 {
		t.Errorf("EOT is id %d of %d", v.EOT, v.Size())
	}
	b, err := os.ReadFile(filepath.Join(gpt2Tokenizer, "vocab.json"))
	if err != nil {
		t.Skipf("GPT-2 vocabulary not available: %v", err)
	}
	var vocab map[string]int
	if err := json.Unmarshal(b, &vocab); err != nil {
		t.Fatal(err)
	}
	for id, tok := range v.Tokens[:256] {
		if vocab[tok] != id {
			t.Errorf("byte token %q has id %d here, %d in GPT-2", tok, id, vocab[tok])
		}
	}
}

// TestTokenizerMatchesEncoderPy compares GPT-2's tokenizer code loading the
// toy vocabulary with golden ids from a Python re-implementation of OpenAI's
// encoder.py (testdata/tokenizer/make_golden.py), and checks that every toy
// prompt is one token per word.
func TestTokenizerMatchesEncoderPy(t *testing.T) {
	tok, err := gpt2.LoadTokenizer("testdata/tokenizer")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("testdata/tokenizer/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden []struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	}
	if err := json.Unmarshal(b, &golden); err != nil {
		t.Fatal(err)
	}
	if len(golden) < 100 {
		t.Fatalf("only %d golden texts", len(golden))
	}
	for _, g := range golden {
		if got := tok.Encode(g.Text); !slices.Equal(got, g.IDs) {
			t.Errorf("Encode(%q) = %v, encoder.py gives %v", g.Text, got, g.IDs)
		}
	}
	w, err := NewWorld(WorldConfig{Seed: 3, People: 4096, Relations: Relations(), Values: 8})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := Encode(tok, w.Facts())
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 2*4096 {
		t.Fatalf("%d examples", len(ex))
	}
}

func TestWorld(t *testing.T) {
	cfg := WorldConfig{Seed: 7, People: 600, Relations: []string{"sport", "city"}, Values: 4}
	w, err := NewWorld(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := NewWorld(cfg)
	if !reflect.DeepEqual(w, again) {
		t.Fatal("same seed, different worlds")
	}
	cfg.Seed = 8
	other, _ := NewWorld(cfg)
	if reflect.DeepEqual(w.People, other.People) {
		t.Fatal("different seeds, same people")
	}
	if err := w.Validate(); err != nil {
		t.Fatal(err)
	}
	// ⌈√1200⌉ = 35 names per pool, every one of them used.
	if len(w.FirstNames) != 35 || len(w.LastNames) != 35 {
		t.Errorf("pools %d × %d, want 35 × 35", len(w.FirstNames), len(w.LastNames))
	}
	// Recount by brute force: each value 150 times, each name's people
	// spread over the values within one of uniform.
	for _, rel := range w.Relations {
		total := map[string]int{}
		for _, p := range w.People {
			total[p.Attributes[rel.Name]]++
		}
		for _, v := range rel.Values {
			if total[v] != 150 {
				t.Errorf("%s %s: %d people, want 150", rel.Name, v, total[v])
			}
		}
		for _, name := range append(slices.Clone(w.FirstNames), w.LastNames...) {
			counts := map[string]int{}
			n := 0
			for _, p := range w.People {
				if p.First == name || p.Last == name {
					counts[p.Attributes[rel.Name]]++
					n++
				}
			}
			for _, v := range rel.Values {
				if d := float64(counts[v]) - float64(n)/4; d > 1.5 || d < -1.5 {
					t.Errorf("%s %s: %d of %d people have %s", rel.Name, name, counts[v], n, v)
				}
			}
		}
	}
	for _, b := range w.Baselines() {
		if b.Chance != 0.25 || b.FirstOnly > 0.36 || b.LastOnly > 0.36 {
			t.Errorf("baseline %+v: names alone predict too much", b)
		}
	}
	facts := w.Facts()
	if len(facts) != 1200 || facts[0].Prompt != w.People[0].Name()+" plays the sport of" || facts[600].Prompt != w.People[0].Name()+" lives in the city of" {
		t.Errorf("facts: %d, %q, %q", len(facts), facts[0].Prompt, facts[600].Prompt)
	}
	af := w.AnalysisFacts()
	if af[0].Text() != facts[0].Prompt || af[0].Target != facts[0].Answer || len(af[0].Contrasts) != 3 || slices.Contains(af[0].Contrasts, af[0].Target) {
		t.Errorf("analysis fact %+v does not match %+v", af[0], facts[0])
	}
	var buf strings.Builder
	for _, f := range af[:3] {
		b, _ := json.Marshal(f)
		buf.Write(b)
		buf.WriteByte('\n')
	}
	back, err := analysis.ReadFactsJSONL(strings.NewReader(buf.String()))
	if err != nil || !reflect.DeepEqual(back, af[:3]) {
		t.Errorf("facts.jsonl round trip: %v", err)
	}
}

func TestWorldConfigErrors(t *testing.T) {
	for _, c := range []WorldConfig{
		{People: 0},
		{People: 5000},
		{People: 10, FirstNames: 2, LastNames: 2},
		{People: 10, Relations: []string{"color"}},
		{People: 10, Relations: []string{"sport", "sport"}},
		{People: 10, Values: 9},
		{People: 10, FirstNames: 65},
	} {
		if _, err := NewWorld(c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
