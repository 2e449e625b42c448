package analysis

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Fact is one subject–relation–object fact: Prompt is a template in which
// "{}" stands for the subject, Target the expected continuation (with its
// leading space, as GPT-2 tokenizes continuations), Contrasts alternative
// answers for logit differences. This is also the JSON Lines format users
// supply.
type Fact struct {
	ID        string   `json:"id,omitempty"`
	Subject   string   `json:"subject"`
	Prompt    string   `json:"prompt"`
	Target    string   `json:"target"`
	Contrasts []string `json:"contrasts,omitempty"`
	Relation  string   `json:"relation,omitempty"`
}

// Text is the prompt with the subject filled in.
func (f Fact) Text() string { return strings.Replace(f.Prompt, "{}", f.Subject, 1) }

func (f Fact) validate() error {
	switch {
	case f.Subject == "":
		return errors.New("empty subject")
	case strings.Count(f.Prompt, "{}") != 1:
		return fmt.Errorf("prompt %q must contain \"{}\" exactly once", f.Prompt)
	case f.Target == "":
		return errors.New("empty target")
	}
	return nil
}

// knownRecord is one entry of ROME's known_1000.json.
type knownRecord struct {
	KnownID    int    `json:"known_id"`
	Subject    string `json:"subject"`
	Attribute  string `json:"attribute"`
	Template   string `json:"template"`
	Prediction string `json:"prediction"`
	Prompt     string `json:"prompt"`
	RelationID string `json:"relation_id"`
}

// LoadKnownFacts reads ROME's known_1000.json. Each record's prompt (which,
// unlike its template field, is the text ROME traces) becomes the Fact's
// template by putting "{}" where the subject first occurs; the target is the
// attribute with a leading space. Contrasts are left empty: ROME measures
// the answer's probability, not a difference.
func LoadKnownFacts(path string) ([]Fact, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("analysis: %w", err)
	}
	var recs []knownRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("analysis: %s: %w", path, err)
	}
	facts := make([]Fact, 0, len(recs))
	for _, r := range recs {
		i := strings.Index(r.Prompt, r.Subject)
		if i < 0 {
			return nil, fmt.Errorf("analysis: %s: known_id %d: subject %q is not in prompt %q", path, r.KnownID, r.Subject, r.Prompt)
		}
		f := Fact{
			ID:       strconv.Itoa(r.KnownID),
			Subject:  r.Subject,
			Prompt:   r.Prompt[:i] + "{}" + r.Prompt[i+len(r.Subject):],
			Target:   withLeadingSpace(r.Attribute),
			Relation: r.RelationID,
		}
		if err := f.validate(); err != nil {
			return nil, fmt.Errorf("analysis: %s: known_id %d: %w", path, r.KnownID, err)
		}
		facts = append(facts, f)
	}
	return facts, nil
}

// Relation is one relation file of Hernandez et al.'s LRE dataset.
type Relation struct {
	Name            string   `json:"name"`
	PromptTemplates []string `json:"prompt_templates"`
	ZeroShot        []string `json:"prompt_templates_zs"`
	Properties      struct {
		RelationType string `json:"relation_type"`
		DomainName   string `json:"domain_name"`
		RangeName    string `json:"range_name"`
		Symmetric    bool   `json:"symmetric"`
	} `json:"properties"`
	Samples []struct {
		Subject string `json:"subject"`
		Object  string `json:"object"`
	} `json:"samples"`
}

// Objects lists the relation's distinct objects in order of first appearance.
func (r *Relation) Objects() []string {
	var objs []string
	for _, s := range r.Samples {
		if !slices.Contains(objs, s.Object) {
			objs = append(objs, s.Object)
		}
	}
	return objs
}

// LoadRelation reads one LRE relation file (e.g. person_plays_pro_sport.json).
func LoadRelation(path string) (*Relation, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("analysis: %w", err)
	}
	var r Relation
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("analysis: %s: %w", path, err)
	}
	if len(r.PromptTemplates) == 0 {
		return nil, fmt.Errorf("analysis: %s: no prompt_templates", path)
	}
	return &r, nil
}

// Facts turns the relation's samples into facts with prompt template
// PromptTemplates[template]; each fact's contrasts are the relation's other
// objects (for person_plays_pro_sport: the other four sports).
func (r *Relation) Facts(template int) ([]Fact, error) {
	if template < 0 || template >= len(r.PromptTemplates) {
		return nil, fmt.Errorf("analysis: relation %q has %d prompt templates, not %d", r.Name, len(r.PromptTemplates), template+1)
	}
	objs := r.Objects()
	facts := make([]Fact, 0, len(r.Samples))
	for i, s := range r.Samples {
		f := Fact{ID: strconv.Itoa(i), Subject: s.Subject, Prompt: r.PromptTemplates[template], Target: withLeadingSpace(s.Object), Relation: r.Name}
		for _, o := range objs {
			if o != s.Object {
				f.Contrasts = append(f.Contrasts, withLeadingSpace(o))
			}
		}
		if err := f.validate(); err != nil {
			return nil, fmt.Errorf("analysis: relation %q sample %d: %w", r.Name, i, err)
		}
		facts = append(facts, f)
	}
	return facts, nil
}

// ReadFactsJSONL reads facts, one JSON object per line ({"subject", "prompt",
// "target", "contrasts"}, optionally "id" and "relation"); blank lines are
// skipped, unknown fields are an error (a misspelt key would otherwise be
// silently dropped). A target or contrast without a leading space gets one.
func ReadFactsJSONL(r io.Reader) ([]Fact, error) {
	var facts []Fact
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		var f Fact
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("analysis: facts line %d: %w", line, err)
		}
		if err := f.validate(); err != nil {
			return nil, fmt.Errorf("analysis: facts line %d: %w", line, err)
		}
		f.Target = withLeadingSpace(f.Target)
		for i, c := range f.Contrasts {
			f.Contrasts[i] = withLeadingSpace(c)
		}
		if f.ID == "" {
			f.ID = strconv.Itoa(line)
		}
		facts = append(facts, f)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("analysis: facts: %w", err)
	}
	return facts, nil
}

func withLeadingSpace(s string) string {
	if strings.HasPrefix(s, " ") {
		return s
	}
	return " " + s
}
