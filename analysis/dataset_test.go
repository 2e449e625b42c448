package analysis

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/factlens/factlens/gpt2"
)

const sharedData = "../../shared/data"

var (
	gpt2TokOnce sync.Once
	gpt2Tok     *gpt2.Tokenizer
	gpt2TokErr  error
)

func gpt2Tokenizer(t testing.TB) *gpt2.Tokenizer {
	t.Helper()
	gpt2TokOnce.Do(func() { gpt2Tok, gpt2TokErr = gpt2.LoadTokenizer(filepath.Join(sharedData, "gpt2-tokenizer")) })
	if gpt2TokErr != nil {
		t.Fatalf("GPT-2 tokenizer (shared test data): %v", gpt2TokErr)
	}
	return gpt2Tok
}

// TestKnownFactsSubjectSpans loads ROME's known_1000 and checks, for every
// fact, the property ROME's find_token_range guarantees: the subject's tokens
// decode to the subject (with the template's space before it, when there is
// one), and the tokens before them decode to the rest of the prefix.
func TestKnownFactsSubjectSpans(t *testing.T) {
	facts, err := LoadKnownFacts(filepath.Join(sharedData, "facts/rome/known_1000.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(facts) != 1209 {
		t.Errorf("%d facts, the file holds 1209", len(facts))
	}
	f0 := facts[0]
	if f0.Subject != "Vinson Massif" || f0.Prompt != "{} is located in the continent of" || f0.Target != " Antarctica" || f0.Relation != "P30" || f0.ID != "0" {
		t.Errorf("first fact %+v", f0)
	}
	tok := gpt2Tokenizer(t)
	for _, bos := range []bool{false, true} {
		mismatched := 0
		for _, f := range facts {
			p, err := BuildPrompt(tok, f, PromptOptions{PrependBOS: bos})
			if err != nil {
				t.Fatalf("fact %s: %v", f.ID, err)
			}
			if bos && (p.Tokens[0] != 50256 || !p.BOS) {
				t.Fatalf("fact %s: no BOS", f.ID)
			}
			subj, _ := tok.Decode(p.Tokens[p.SubjectStart:p.SubjectEnd])
			before, _ := tok.Decode(p.Tokens[:p.SubjectStart])
			prefix, _, _ := strings.Cut(f.Prompt, "{}")
			if bos {
				prefix = "<|endoftext|>" + prefix
			}
			if subj == f.Subject && before == prefix || subj == " "+f.Subject && before+" " == prefix {
				continue
			}
			// A token may straddle the subject's edge (ROME's range then
			// includes it); it must still cover the subject.
			if !strings.Contains(subj, f.Subject) {
				t.Errorf("fact %s: subject tokens %q do not cover %q", f.ID, subj, f.Subject)
			}
			mismatched++
		}
		t.Logf("bos=%v: %d facts with a straddling token", bos, mismatched)
		if mismatched > 5 {
			t.Errorf("%d facts have a token straddling the subject's edge; expected only a few", mismatched)
		}
	}
}

func TestBuildPrompt(t *testing.T) {
	tok := gpt2Tokenizer(t)
	for _, tc := range []struct {
		fact       Fact
		bos        bool
		strs       []string
		start, end int
		target     string
		contrasts  []string
	}{
		{Fact{Subject: "Michael Jordan", Prompt: "{} plays the sport of", Target: " basketball", Contrasts: []string{" baseball", " basketball", " football"}}, false,
			[]string{"Michael", " Jordan", " plays", " the", " sport", " of"}, 0, 2, " basketball", []string{" baseball", " football"}},
		{Fact{Subject: "Michael Jordan", Prompt: "Fact: {} plays the sport of", Target: " basketball"}, true,
			[]string{"<|endoftext|>", "Fact", ":", " Michael", " Jordan", " plays", " the", " sport", " of"}, 3, 5, " basketball", nil},
	} {
		p, err := BuildPrompt(tok, tc.fact, PromptOptions{PrependBOS: tc.bos})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.Strs, tc.strs) || p.SubjectStart != tc.start || p.SubjectEnd != tc.end {
			t.Errorf("%q: tokens %q subject [%d, %d); want %q [%d, %d)", tc.fact.Text(), p.Strs, p.SubjectStart, p.SubjectEnd, tc.strs, tc.start, tc.end)
		}
		if tok.Token(p.Target) != tc.target {
			t.Errorf("target %q, want %q", tok.Token(p.Target), tc.target)
		}
		var cs []string
		for _, c := range p.Contrasts {
			cs = append(cs, tok.Token(c))
		}
		if !slices.Equal(cs, tc.contrasts) {
			t.Errorf("contrasts %q, want %q (the target itself dropped)", cs, tc.contrasts)
		}
	}
	if _, err := BuildPrompt(tok, Fact{Subject: "X", Prompt: "no placeholder", Target: " y"}, PromptOptions{}); err == nil {
		t.Error("template without {}: no error")
	}
}

func TestLoadRelation(t *testing.T) {
	r, err := LoadRelation(filepath.Join(sharedData, "facts/lre/person_plays_pro_sport.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Samples) != 318 || r.PromptTemplates[0] != "{} plays the sport of" {
		t.Fatalf("%d samples, template %q", len(r.Samples), r.PromptTemplates[0])
	}
	objs := r.Objects()
	slices.Sort(objs)
	if !slices.Equal(objs, []string{"baseball", "basketball", "football", "hockey", "soccer"}) {
		t.Errorf("objects %q", objs)
	}
	facts, err := r.Facts(0)
	if err != nil {
		t.Fatal(err)
	}
	f := facts[1]
	if f.Subject != "Roberto Clemente" || f.Target != " baseball" || len(f.Contrasts) != 4 || slices.Contains(f.Contrasts, " baseball") {
		t.Errorf("fact 1 %+v", f)
	}
	if _, err := r.Facts(1); err == nil {
		t.Error("template 1 of 1: no error")
	}
	tok := gpt2Tokenizer(t)
	for _, f := range facts {
		p, err := BuildPrompt(tok, f, PromptOptions{})
		if err != nil {
			t.Fatalf("%s: %v", f.Subject, err)
		}
		if len(p.Contrasts) != 4 {
			t.Errorf("%s: %d contrast tokens; every sport is one GPT-2 token", f.Subject, len(p.Contrasts))
		}
	}
}

func TestReadFactsJSONL(t *testing.T) {
	in := `{"subject": "Michael Jordan", "prompt": "{} plays the sport of", "target": "basketball", "contrasts": ["baseball", " football"]}

{"subject": "Paris", "prompt": "{} is the capital of", "target": " France", "id": "p1"}
`
	facts, err := ReadFactsJSONL(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(facts) != 2 || facts[0].Target != " basketball" || !slices.Equal(facts[0].Contrasts, []string{" baseball", " football"}) || facts[0].ID != "1" || facts[1].ID != "p1" {
		t.Errorf("facts %+v", facts)
	}
	for _, bad := range []string{
		`{"subject": "A", "prompt": "no placeholder", "target": "x"}`,
		`{"subject": "A", "prompt": "{} {}", "target": "x"}`,
		`{"subject": "", "prompt": "{} x", "target": "x"}`,
		`{"subject": "A", "prompt": "{} x"}`,
		`{"subject": "A", "prompt": "{} x", "target": "x", "typo": 1}`,
		`not json`,
	} {
		if _, err := ReadFactsJSONL(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestScoreFacts(t *testing.T) {
	m := toyModel(t, gpt2.Processing{})
	tok := toyTokenizer(t)
	var prompts []*Prompt
	for _, f := range []Fact{
		{Subject: "A X", Prompt: "T {} p", Target: " q", Contrasts: []string{" r"}},
		{Subject: "B Y", Prompt: "T {} p", Target: " r", Contrasts: []string{" q", " u"}},
		{Subject: "C Z", Prompt: "T {} p", Target: " q"},
		{Subject: "A X", Prompt: "T T {} p", Target: " q"},
	} {
		p, err := BuildPrompt(tok, f, PromptOptions{})
		if err != nil {
			t.Fatal(err)
		}
		prompts = append(prompts, p)
	}
	if p := prompts[0]; p.SubjectStart != 1 || p.SubjectEnd != 3 || p.Target != toyQ {
		t.Fatalf("toy prompt %+v", p)
	}
	scores, err := ScoreFacts(context.Background(), m, prompts)
	if err != nil {
		t.Fatal(err)
	}
	if !scores[0].Correct() || !scores[1].Correct() || scores[2].Correct() || !scores[3].Correct() {
		t.Errorf("correct: %v %v %v %v", scores[0].Correct(), scores[1].Correct(), scores[2].Correct(), scores[3].Correct())
	}
	if scores[0].TargetProb < 0.9 || scores[0].LogitDiff < 7 || scores[1].LogitDiff < 7 || scores[2].LogitDiff != 0 {
		t.Errorf("scores %+v", scores)
	}
}
