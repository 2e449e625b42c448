package reproduce

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/gpt2"
)

// Prompt templates of the athlete studies; "{}" stands for the name.
const (
	// OneShotTemplate is Fact Finding's one-shot prompt.
	OneShotTemplate = "Fact: Tiger Woods plays the sport of golf\nFact: {} plays the sport of"
	// ZeroShotTemplate is the LRE relation's own template.
	ZeroShotTemplate = "{} plays the sport of"
)

// DatasetInfo states which facts a study ran on and how they were chosen.
type DatasetInfo struct {
	Name     string   `json:"name"`
	Paths    []string `json:"paths"`
	Template string   `json:"template,omitempty"` // the prompt, when every fact shares one
	Total    int      `json:"total"`              // facts in the files
	// TooLong facts were left out because their prompt does not fit the
	// model's context.
	TooLong int    `json:"too_long,omitempty"`
	Filter  string `json:"filter"` // the filter in words, with its threshold
	Known   int    `json:"known"`  // facts passing the filter
	Limit   int    `json:"limit,omitempty"`
	Seed    uint64 `json:"seed"`
	// Used facts were studied: all known ones, or a sample of Limit of them
	// drawn with Seed.
	Used int `json:"used"`
}

// Athlete is one name and the sport the person plays.
type Athlete struct {
	Name  string `json:"name"`
	Sport string `json:"sport"`
}

// LoadFacts reads a fact dataset: ROME's known_1000.json (a JSON array), an
// LRE relation file (a JSON object with samples; its first template), or
// JSON Lines facts (*.jsonl, analysis.ReadFactsJSONL's format).
func LoadFacts(path string) ([]analysis.Fact, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reproduce: %w", err)
	}
	var facts []analysis.Fact
	switch {
	case strings.HasSuffix(path, ".jsonl"):
		facts, err = analysis.ReadFactsJSONL(bytes.NewReader(b))
	case bytes.HasPrefix(bytes.TrimSpace(b), []byte("[")):
		facts, err = analysis.LoadKnownFacts(path)
	default:
		var rel *analysis.Relation
		if rel, err = analysis.LoadRelation(path); err == nil {
			facts, err = rel.Facts(0)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reproduce: %s: %w", path, err)
	}
	if len(facts) == 0 {
		return nil, fmt.Errorf("reproduce: %s holds no facts", path)
	}
	return facts, nil
}

// LoadAthletes reads athlete lists and joins them: LRE relation files (.json:
// subject → object), JSON Lines facts (.jsonl: subject → target, keeping
// facts whose relation is empty or names a sport) and CSV files (.csv with
// "athlete" and "sport" columns, as Fact Finding's sports.csv). A name
// already listed keeps its first sport.
func LoadAthletes(paths ...string) ([]Athlete, error) {
	var out []Athlete
	seen := map[string]bool{}
	add := func(name, sport string) {
		name, sport = strings.TrimSpace(name), strings.TrimSpace(sport)
		if name == "" || sport == "" || seen[name] {
			return
		}
		seen[name] = true
		out = append(out, Athlete{Name: name, Sport: sport})
	}
	for _, path := range paths {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".jsonl":
			f, err := os.Open(path)
			if err != nil {
				return nil, fmt.Errorf("reproduce: %w", err)
			}
			facts, err := analysis.ReadFactsJSONL(f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("reproduce: %s: %w", path, err)
			}
			for _, fa := range facts {
				if fa.Relation == "" || strings.Contains(strings.ToLower(fa.Relation), "sport") {
					add(fa.Subject, fa.Target)
				}
			}
		case ".csv":
			if err := readAthleteCSV(path, add); err != nil {
				return nil, err
			}
		default:
			rel, err := analysis.LoadRelation(path)
			if err != nil {
				return nil, fmt.Errorf("reproduce: %w", err)
			}
			for _, s := range rel.Samples {
				add(s.Subject, s.Object)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("reproduce: no athletes in %s", strings.Join(paths, ", "))
	}
	return out, nil
}

func readAthleteCSV(path string, add func(name, sport string)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reproduce: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return fmt.Errorf("reproduce: %s: %w", path, err)
	}
	ai, si := -1, -1
	for i, h := range header {
		switch strings.ToLower(strings.TrimSpace(h)) {
		case "athlete", "name", "subject":
			ai = i
		case "sport":
			si = i
		}
	}
	if ai < 0 || si < 0 {
		return fmt.Errorf("reproduce: %s: the header %q lacks an athlete and a sport column", path, header)
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reproduce: %s: %w", path, err)
		}
		if ai < len(rec) && si < len(rec) {
			add(rec[ai], rec[si])
		}
	}
}

// buildPrompts tokenizes facts for the model, leaving out (and counting)
// those longer than its context.
func buildPrompts(m *gpt2.Model, tok *gpt2.Tokenizer, facts []analysis.Fact, bos bool) (prompts []*analysis.Prompt, tooLong int, err error) {
	for _, f := range facts {
		p, err := analysis.BuildPrompt(tok, f, analysis.PromptOptions{PrependBOS: bos})
		if err != nil {
			return nil, 0, err
		}
		if len(p.Tokens) > m.NCtx() {
			tooLong++
			continue
		}
		if p.Target >= m.VocabSize() || slices.ContainsFunc(p.Tokens, func(t int) bool { return t >= m.VocabSize() }) {
			return nil, 0, fmt.Errorf("reproduce: fact %s has token ids beyond the model's %d: tokenizer and model do not match", f.ID, m.VocabSize())
		}
		prompts = append(prompts, p)
	}
	return prompts, tooLong, nil
}

// sampleIndices returns limit of idx drawn with seed, in their original
// order, or idx itself when limit is 0 or not smaller.
func sampleIndices(idx []int, limit int, seed uint64) []int {
	if limit <= 0 || limit >= len(idx) {
		return idx
	}
	rng := rand.New(rand.NewPCG(seed, 0x5a3b1e))
	pick := rng.Perm(len(idx))[:limit]
	slices.Sort(pick)
	out := make([]int, len(pick))
	for i, j := range pick {
		out[i] = idx[j]
	}
	return out
}

// athleteSet is a list of athletes as prompts: every one that fits the
// model, its sport, and which the model knows.
type athleteSet struct {
	info        DatasetInfo
	template    string
	bos         bool
	sports      []string // class names, in order of first appearance
	sportTokens []int    // first token of " sport"
	all         []*analysis.Prompt
	label       []int // sport index of each of all
	scores      []analysis.FactScore
	known       []int // indices into all of the studied known athletes
}

// athleteOptions say how athletes become prompts and which are kept.
type athleteOptions struct {
	Name      string   // dataset name for the report
	Paths     []string // files the athletes came from
	Template  string   // "" means OneShotTemplate
	BOS       bool
	Threshold float64 // P(sport) the model must give; 0 means 0.5
	Limit     int
	Seed      uint64
}

// selectAthletes tokenizes athletes, scores every one, and keeps those the
// model gives more than Threshold probability on the first token of the
// right sport (Fact Finding's filter), then a seeded sample of Limit.
func selectAthletes(ctx context.Context, m *gpt2.Model, tok *gpt2.Tokenizer, athletes []Athlete, o athleteOptions) (*athleteSet, error) {
	if o.Template == "" {
		o.Template = OneShotTemplate
	}
	if strings.Count(o.Template, "{}") != 1 {
		return nil, fmt.Errorf("reproduce: prompt template %q must contain \"{}\" once", o.Template)
	}
	if o.Threshold == 0 {
		o.Threshold = 0.5
	}
	if o.Threshold < 0 || o.Threshold >= 1 {
		return nil, fmt.Errorf("reproduce: probability threshold %v outside (0, 1)", o.Threshold)
	}
	s := &athleteSet{template: o.Template, bos: o.BOS}
	for _, a := range athletes {
		if !slices.Contains(s.sports, a.Sport) {
			s.sports = append(s.sports, a.Sport)
		}
	}
	for _, sp := range s.sports {
		ids := tok.Encode(" " + sp)
		if len(ids) == 0 {
			return nil, fmt.Errorf("reproduce: sport %q has no tokens", sp)
		}
		if j := slices.Index(s.sportTokens, ids[0]); j >= 0 {
			return nil, fmt.Errorf("reproduce: sports %q and %q start with the same token %q; the studies tell sports apart by their first token", s.sports[j], sp, tok.Token(ids[0]))
		}
		if ids[0] >= m.VocabSize() {
			return nil, fmt.Errorf("reproduce: sport %q's token id %d is beyond the model's vocabulary of %d", sp, ids[0], m.VocabSize())
		}
		s.sportTokens = append(s.sportTokens, ids[0])
	}
	facts := make([]analysis.Fact, len(athletes))
	for i, a := range athletes {
		f := analysis.Fact{ID: fmt.Sprint(i), Subject: a.Name, Prompt: o.Template, Target: " " + a.Sport, Relation: "plays sport"}
		for _, sp := range s.sports {
			if sp != a.Sport {
				f.Contrasts = append(f.Contrasts, " "+sp)
			}
		}
		facts[i] = f
	}
	var err error
	s.all, s.info.TooLong, err = buildPrompts(m, tok, facts, o.BOS)
	if err != nil {
		return nil, err
	}
	s.info = DatasetInfo{Name: o.Name, Paths: o.Paths, Template: o.Template, Total: len(athletes), TooLong: s.info.TooLong,
		Filter: fmt.Sprintf("P(first token of the right sport) > %g over the whole vocabulary (Fact Finding's filter)", o.Threshold),
		Limit:  o.Limit, Seed: o.Seed}
	if len(s.all) == 0 && len(athletes) > 0 {
		return nil, fmt.Errorf("reproduce: every prompt of %s is longer than the model's context of %d tokens; try a shorter prompt template", o.Name, m.NCtx())
	}
	for _, p := range s.all {
		id, _ := parseIndex(p.Fact.ID)
		s.label = append(s.label, slices.Index(s.sports, athletes[id].Sport))
	}
	if s.scores, err = analysis.ScoreFacts(ctx, m, s.all); err != nil {
		return nil, err
	}
	var known []int
	for i, sc := range s.scores {
		if sc.TargetProb > o.Threshold {
			known = append(known, i)
		}
	}
	s.info.Known = len(known)
	s.known = sampleIndices(known, o.Limit, o.Seed)
	s.info.Used = len(s.known)
	return s, nil
}

func parseIndex(s string) (int, error) {
	var i int
	_, err := fmt.Sscan(s, &i)
	return i, err
}

// knownPrompts returns the studied known athletes' prompts and labels.
func (s *athleteSet) knownPrompts() ([]*analysis.Prompt, []int) {
	ps := make([]*analysis.Prompt, len(s.known))
	ls := make([]int, len(s.known))
	for i, k := range s.known {
		ps[i], ls[i] = s.all[k], s.label[k]
	}
	return ps, ls
}
