package toy

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"

	"github.com/factlens/factlens/analysis"
)

// MaxPool is the size of each name pool: a world has at most MaxPool²
// people.
const MaxPool = 64

// WorldConfig fixes a synthetic world. Together with Seed it determines every
// name and every attribute.
type WorldConfig struct {
	Seed   uint64 `json:"seed"`
	People int    `json:"people"`
	// FirstNames and LastNames are the sizes of the name pools the people
	// are drawn from (at most MaxPool each); 0 picks ⌈√(2·People)⌉, so the
	// people fill about half of the first × last grid and every name is
	// shared by about √(People/2) people.
	FirstNames int `json:"first_names"`
	LastNames  int `json:"last_names"`
	// Relations names the attributes every person has: "sport", "city"
	// (default: sport only).
	Relations []string `json:"relations"`
	// Values is the number of values each relation takes (2 to 8; 0 means 4).
	Values int `json:"values"`
}

// Relations lists the relation names a world can have.
func Relations() []string {
	names := make([]string, len(relationSpecs))
	for i, r := range relationSpecs {
		names[i] = r.name
	}
	return names
}

// withDefaults fills zero fields and checks the rest.
func (c WorldConfig) withDefaults() (WorldConfig, error) {
	if c.People < 1 {
		return c, fmt.Errorf("toy: world needs at least 1 person, not %d", c.People)
	}
	auto := int(math.Ceil(math.Sqrt(2 * float64(c.People))))
	auto = max(2, min(MaxPool, auto))
	if c.FirstNames == 0 {
		c.FirstNames = auto
	}
	if c.LastNames == 0 {
		c.LastNames = auto
	}
	if c.FirstNames < 1 || c.FirstNames > MaxPool || c.LastNames < 1 || c.LastNames > MaxPool {
		return c, fmt.Errorf("toy: name pools of %d first and %d last names: each must be 1..%d", c.FirstNames, c.LastNames, MaxPool)
	}
	if c.People > c.FirstNames*c.LastNames {
		return c, fmt.Errorf("toy: %d people do not fit in %d first × %d last names", c.People, c.FirstNames, c.LastNames)
	}
	if len(c.Relations) == 0 {
		c.Relations = []string{"sport"}
	}
	for i, r := range c.Relations {
		if relationByName(r) == nil {
			return c, fmt.Errorf("toy: unknown relation %q (want one of %s)", r, strings.Join(Relations(), ", "))
		}
		if slices.Contains(c.Relations[:i], r) {
			return c, fmt.Errorf("toy: relation %q listed twice", r)
		}
	}
	if c.Values == 0 {
		c.Values = 4
	}
	if c.Values < 2 || c.Values > 8 {
		return c, fmt.Errorf("toy: %d values per relation: want 2..8", c.Values)
	}
	return c, nil
}

func relationByName(name string) *relationSpec {
	for i := range relationSpecs {
		if relationSpecs[i].name == name {
			return &relationSpecs[i]
		}
	}
	return nil
}

// Relation is one attribute of the people of a world.
type Relation struct {
	Name string `json:"name"`
	// Template is the prompt, with {first} and {last} for the name; the
	// answer is the value with a leading space, as GPT-2 continues text.
	Template string   `json:"template"`
	Values   []string `json:"values"`
}

// Person is one (first name, last name) pair and its attributes, keyed by
// relation name.
type Person struct {
	First      string            `json:"first"`
	Last       string            `json:"last"`
	Attributes map[string]string `json:"attributes"`
}

// Name is "First Last".
func (p Person) Name() string { return p.First + " " + p.Last }

// World is a set of people whose attributes are known exactly.
type World struct {
	Config     WorldConfig `json:"config"`
	FirstNames []string    `json:"first_names"`
	LastNames  []string    `json:"last_names"`
	Relations  []Relation  `json:"relations"`
	People     []Person    `json:"people"`
}

// NewWorld draws a world: People distinct cells of the first × last grid,
// uniformly, and for each relation a value per person such that every value
// is used equally often overall and, as nearly as possible, equally often
// among the people sharing a first name and among those sharing a last
// name. Knowing one part of a name then says (almost) nothing about the
// attribute: recalling it is computing an AND of the two tokens.
func NewWorld(cfg WorldConfig) (*World, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x746f79)) // "toy"
	w := &World{
		Config:     cfg,
		FirstNames: slices.Clone(firstNamePool[:cfg.FirstNames]),
		LastNames:  slices.Clone(lastNamePool[:cfg.LastNames]),
	}
	cells := rng.Perm(cfg.FirstNames * cfg.LastNames)[:cfg.People]
	w.People = make([]Person, cfg.People)
	firstOf, lastOf := make([]int, cfg.People), make([]int, cfg.People)
	for i, c := range cells {
		firstOf[i], lastOf[i] = c/cfg.LastNames, c%cfg.LastNames
		w.People[i] = Person{First: w.FirstNames[firstOf[i]], Last: w.LastNames[lastOf[i]], Attributes: map[string]string{}}
	}
	for _, name := range cfg.Relations {
		spec := relationByName(name)
		rel := Relation{Name: spec.name, Template: spec.template, Values: slices.Clone(spec.values[:cfg.Values])}
		w.Relations = append(w.Relations, rel)
		vals := balancedValues(rng, firstOf, lastOf, cfg.FirstNames, cfg.LastNames, cfg.Values)
		for i, v := range vals {
			w.People[i].Attributes[name] = rel.Values[v]
		}
	}
	return w, nil
}

// balancedValues assigns one of k values to each person: a shuffled list
// with every value equally often, then random swaps of two people's values
// kept whenever they bring the per-first-name and per-last-name value counts
// closer to uniform (sum of squared deviations).
func balancedValues(rng *rand.Rand, firstOf, lastOf []int, nFirst, nLast, k int) []int {
	n := len(firstOf)
	vals := make([]int, n)
	for i := range vals {
		vals[i] = i % k
	}
	rng.Shuffle(n, func(i, j int) { vals[i], vals[j] = vals[j], vals[i] })

	// count[g][v]: people of name group g with value v; first names are
	// groups 0..nFirst-1, last names nFirst..; want[g] = size(g)/k.
	count := make([][]float64, nFirst+nLast)
	want := make([]float64, nFirst+nLast)
	for g := range count {
		count[g] = make([]float64, k)
	}
	groups := func(i int) [2]int { return [2]int{firstOf[i], nFirst + lastOf[i]} }
	for i, v := range vals {
		for _, g := range groups(i) {
			count[g][v]++
			want[g] += 1 / float64(k)
		}
	}
	sq := func(g, v int) float64 { d := count[g][v] - want[g]; return d * d }
	// The cells a swap touches, possibly repeated: cost is summed over the
	// distinct ones only.
	var cells [][2]int
	localCost := func() float64 {
		var c float64
		for i, cell := range cells {
			if !slices.Contains(cells[:i], cell) {
				c += sq(cell[0], cell[1])
			}
		}
		return c
	}
	move := func(i, from, to int) {
		for _, g := range groups(i) {
			count[g][from]--
			count[g][to]++
		}
	}
	if n < 2 {
		return vals
	}
	for range 40 * n {
		i, j := rng.IntN(n), rng.IntN(n)
		a, b := vals[i], vals[j]
		if a == b {
			continue
		}
		cells = cells[:0]
		for _, p := range []int{i, j} {
			for _, g := range groups(p) {
				cells = append(cells, [2]int{g, a}, [2]int{g, b})
			}
		}
		before := localCost()
		move(i, a, b)
		move(j, b, a)
		if localCost() < before-1e-9 {
			vals[i], vals[j] = b, a
			continue
		}
		move(i, b, a)
		move(j, a, b)
	}
	return vals
}

// Fact is one (person, relation) pair as a prompt and its answer.
type Fact struct {
	Person   int    `json:"person"` // index into World.People
	Relation string `json:"relation"`
	First    string `json:"first"`
	Last     string `json:"last"`
	// Prompt is the full text the model reads; Answer is the continuation,
	// with its leading space.
	Prompt string `json:"prompt"`
	Answer string `json:"answer"`
}

// Facts lists every fact of the world: for each relation in order, every
// person in order.
func (w *World) Facts() []Fact {
	var facts []Fact
	for _, rel := range w.Relations {
		for i, p := range w.People {
			facts = append(facts, Fact{
				Person: i, Relation: rel.Name, First: p.First, Last: p.Last,
				Prompt: fillTemplate(rel.Template, p.First, p.Last),
				Answer: " " + p.Attributes[rel.Name],
			})
		}
	}
	return facts
}

func fillTemplate(template, first, last string) string {
	return strings.NewReplacer("{first}", first, "{last}", last).Replace(template)
}

// AnalysisFacts returns the world's facts in package analysis' form: the
// subject is "First Last", the contrasts the relation's other values.
func (w *World) AnalysisFacts() []analysis.Fact {
	var out []analysis.Fact
	for _, f := range w.Facts() {
		rel := w.relation(f.Relation)
		var contrasts []string
		for _, v := range rel.Values {
			if " "+v != f.Answer {
				contrasts = append(contrasts, " "+v)
			}
		}
		out = append(out, analysis.Fact{
			ID:        fmt.Sprintf("%s/%d", f.Relation, f.Person),
			Subject:   f.First + " " + f.Last,
			Prompt:    strings.Replace(rel.Template, "{first} {last}", "{}", 1),
			Target:    f.Answer,
			Contrasts: contrasts,
			Relation:  f.Relation,
		})
	}
	return out
}

func (w *World) relation(name string) *Relation {
	for i := range w.Relations {
		if w.Relations[i].Name == name {
			return &w.Relations[i]
		}
	}
	return nil
}

// Baseline is how well an attribute can be guessed without the conjunction
// of both names.
type Baseline struct {
	Relation string `json:"relation"`
	// Chance is the frequency of the most common value.
	Chance float64 `json:"chance"`
	// FirstOnly and LastOnly are the best accuracy of any rule that sees only
	// the first (last) name: the majority value among the people sharing it.
	FirstOnly float64 `json:"first_only"`
	LastOnly  float64 `json:"last_only"`
}

// Baselines measures, for each relation, what a model that does not combine
// first and last name could reach at best.
func (w *World) Baselines() []Baseline {
	var out []Baseline
	for _, rel := range w.Relations {
		n := float64(len(w.People))
		b := Baseline{Relation: rel.Name}
		overall := map[string]int{}
		byFirst, byLast := map[string]map[string]int{}, map[string]map[string]int{}
		for _, p := range w.People {
			v := p.Attributes[rel.Name]
			overall[v]++
			for _, m := range []struct {
				by  map[string]map[string]int
				key string
			}{{byFirst, p.First}, {byLast, p.Last}} {
				if m.by[m.key] == nil {
					m.by[m.key] = map[string]int{}
				}
				m.by[m.key][v]++
			}
		}
		b.Chance = float64(maxCount(overall)) / n
		for _, c := range byFirst {
			b.FirstOnly += float64(maxCount(c)) / n
		}
		for _, c := range byLast {
			b.LastOnly += float64(maxCount(c)) / n
		}
		out = append(out, b)
	}
	return out
}

func maxCount(m map[string]int) int {
	best := 0
	for _, c := range m {
		best = max(best, c)
	}
	return best
}

// Validate checks that a world read from a file is consistent: names from
// its pools, each (first, last) pair once, every attribute one of its
// relation's values.
func (w *World) Validate() error {
	if len(w.People) == 0 {
		return fmt.Errorf("toy: world has no people")
	}
	if len(w.Relations) == 0 {
		return fmt.Errorf("toy: world has no relations")
	}
	seen := map[string]bool{}
	for i, p := range w.People {
		if !slices.Contains(w.FirstNames, p.First) || !slices.Contains(w.LastNames, p.Last) {
			return fmt.Errorf("toy: person %d %q is not drawn from the world's name pools", i, p.Name())
		}
		if seen[p.Name()] {
			return fmt.Errorf("toy: person %q appears twice", p.Name())
		}
		seen[p.Name()] = true
		for _, rel := range w.Relations {
			if !slices.Contains(rel.Values, p.Attributes[rel.Name]) {
				return fmt.Errorf("toy: person %d %q: %s %q is not one of %v", i, p.Name(), rel.Name, p.Attributes[rel.Name], rel.Values)
			}
		}
	}
	return nil
}

// ReadWorld reads the world.json of a toy model folder.
func ReadWorld(path string) (*World, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("toy: %w", err)
	}
	var w World
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("toy: %s: %w", path, err)
	}
	if err := w.Validate(); err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return &w, nil
}
