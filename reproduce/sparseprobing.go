package reproduce

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/gpt2"
)

// SparseProbingConfig controls the sparse-probing study.
type SparseProbingConfig struct {
	AthleteConfig
	// Ks are the probe sizes; nil means 1, 2, 4, …, 64 (up to d_mlp).
	Ks []int
	// Layers probed; nil means all.
	Layers []int
}

// ProbeGrid is one sparse-probing task: held-out F1 by layer and k, over
// the MLP neurons (mlp.hook_post) at the final name token.
type ProbeGrid struct {
	Task        string   `json:"task"`
	Description string   `json:"description"`
	Classes     []string `json:"classes"`
	Examples    int      `json:"examples"`
	Positives   int      `json:"positives,omitempty"` // binary tasks
	Train       int      `json:"train"`
	Test        int      `json:"test"`
	Ks          []int    `json:"ks"`
	Layers      []int    `json:"layers"`
	// F1[i][j] is the held-out F1 (macro-F1 for more than two classes) of
	// the probe with Ks[j] neurons at layer Layers[i].
	F1 [][]float64 `json:"f1"`
	// The best single neuron (k = 1) over the layers; Neuron is -1 for
	// multi-class tasks, whose k = 1 probes use one neuron per class.
	BestK1Layer  int     `json:"best_k1_layer"`
	BestK1Neuron int     `json:"best_k1_neuron"`
	BestK1F1     float64 `json:"best_k1_f1"`
}

// SparseProbingResult is the sparse-probing study on one model.
type SparseProbingResult struct {
	Header
	Sport       *ProbeGrid `json:"sport,omitempty"`
	SportBinary *ProbeGrid `json:"sport_binary,omitempty"`
	Names       *ProbeGrid `json:"names,omitempty"`
}

// SparseProbing fits k-sparse probes (Gurnee et al.) on every layer's MLP
// neurons at the final name token for two tasks: the sport of the athletes
// the model knows, and detecting a multi-token athlete name against the same
// last name after another athlete's first name.
func SparseProbing(ctx context.Context, m *gpt2.Model, tok *gpt2.Tokenizer, athletes []Athlete, cfg SparseProbingConfig) (*SparseProbingResult, error) {
	start := time.Now()
	cfg.defaults()
	ks := cfg.Ks
	if ks == nil {
		for k := 1; k <= 64 && k <= m.DMLP(); k *= 2 {
			ks = append(ks, k)
		}
	}
	for _, k := range ks {
		if k < 1 || k > m.DMLP() {
			return nil, fmt.Errorf("reproduce: probe size %d outside 1..%d neurons", k, m.DMLP())
		}
	}
	layers := cfg.Layers
	if layers == nil {
		for l := 0; l < m.NLayer(); l++ {
			layers = append(layers, l)
		}
	}
	for _, l := range layers {
		if l < 0 || l >= m.NLayer() {
			return nil, fmt.Errorf("reproduce: layer %d outside the model's %d", l, m.NLayer())
		}
	}
	res := &SparseProbingResult{Header: newHeader(StudySparseProbing, m, cfg.PrependBOS)}
	h := &res.Header
	t0 := time.Now()
	set, err := cfg.selectAthletes(ctx, m, tok, athletes)
	if err != nil {
		return nil, err
	}
	h.timed("score athletes", len(set.all), t0)
	h.Dataset = set.info
	h.set("probes", fmt.Sprintf("k-sparse logistic probes on mlp.hook_post at the final name token: top-k neurons by class mean difference, L2 1e-3, 30%% held out (stratified, seed %d); k = %v", cfg.Seed, ks))

	// Sport, over the known athletes.
	t0 = time.Now()
	prompts, labels := set.knownPrompts()
	counts := make([]int, len(set.sports))
	for _, l := range labels {
		counts[l]++
	}
	var classes []string
	remap := make([]int, len(set.sports))
	for s, c := range counts {
		remap[s] = -1
		if c >= 2 {
			remap[s] = len(classes)
			classes = append(classes, set.sports[s])
		}
	}
	if len(classes) >= 2 {
		var toks [][]int
		var pos, y []int
		for i, p := range prompts {
			if remap[labels[i]] >= 0 {
				toks, pos, y = append(toks, p.Tokens), append(pos, p.LastSubject()), append(y, remap[labels[i]])
			}
		}
		chosen := slices.Index(classes, "basketball")
		if chosen < 0 {
			for c := range classes {
				if chosen < 0 || countOf(y, c) > countOf(y, chosen) {
					chosen = c
				}
			}
		}
		yb := make([]int, len(y))
		for i, v := range y {
			if v == chosen {
				yb[i] = 1
			}
		}
		res.Sport = &ProbeGrid{Task: "sport", Description: "which sport a known athlete plays (macro-F1 over sports, one-vs-rest probes of k neurons each)",
			Classes: classes, Examples: len(y), Ks: ks, Layers: layers, BestK1Neuron: -1}
		res.SportBinary = &ProbeGrid{Task: "plays " + classes[chosen], Description: fmt.Sprintf("whether a known athlete plays %s (F1 of the positive class)", classes[chosen]),
			Classes: []string{"other", classes[chosen]}, Examples: len(y), Positives: countOf(y, chosen), Ks: ks, Layers: layers}
		grids := []*ProbeGrid{res.Sport, res.SportBinary}
		ys := [][]int{y, yb}
		if err := probeLayers(ctx, m, toks, pos, layers, grids, ys, cfg.Seed, cfg.Progress); err != nil {
			return nil, err
		}
	}
	h.timed("sport probes", len(prompts), t0)

	// Multi-token names, over every athlete of the list.
	t0 = time.Now()
	if names, err := nameDetection(ctx, m, tok, set, layers, ks, cfg); err != nil {
		return nil, err
	} else {
		res.Names = names
	}
	h.timed("name-detection probes", len(set.all), t0)
	res.Findings = sparseProbingFindings(res, cfg)
	h.Seconds = time.Since(start).Seconds()
	return res, nil
}

func countOf(y []int, c int) int {
	n := 0
	for _, v := range y {
		if v == c {
			n++
		}
	}
	return n
}

// nameDetection builds the name task: positives are athletes whose name
// spans two or more tokens, at their last name token; each negative is the
// same last name after another athlete's first name (a name that is not an
// athlete's), at the same token.
func nameDetection(ctx context.Context, m *gpt2.Model, tok *gpt2.Tokenizer, set *athleteSet, layers, ks []int, cfg SparseProbingConfig) (*ProbeGrid, error) {
	athlete := map[string]bool{}
	var pos []int
	var firsts []string
	for i, p := range set.all {
		athlete[p.Fact.Subject] = true
		n, ok := analysis.SplitName(p.Fact.Subject)
		if ok && p.SubjectEnd-p.SubjectStart >= 2 {
			pos = append(pos, i)
			if !slices.Contains(firsts, n.First) {
				firsts = append(firsts, n.First)
			}
		}
	}
	pos = sampleIndices(pos, cfg.Limit, cfg.Seed)
	g := &ProbeGrid{Task: "multi-token name", Description: "whether the token ends an athlete's multi-token name, against the same last name after another athlete's first name (F1 of the positive class)",
		Classes: []string{"other first name", "athlete"}, Ks: ks, Layers: layers}
	if len(firsts) < 2 {
		g.Positives = len(pos)
		return g, nil
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x4a3e))
	var toks [][]int
	var at, y []int
	for _, i := range pos {
		p := set.all[i]
		n, _ := analysis.SplitName(p.Fact.Subject)
		var neg *analysis.Prompt
		for try := 0; try < 20 && neg == nil; try++ {
			f := firsts[rng.IntN(len(firsts))]
			other := analysis.NamePair{First: f, Last: n.Last}.Subject()
			if f == n.First || athlete[other] {
				continue
			}
			q, err := analysis.BuildPrompt(tok, analysis.Fact{ID: "negative", Subject: other, Prompt: set.template, Target: p.Fact.Target}, analysis.PromptOptions{PrependBOS: set.bos})
			if err != nil {
				return nil, err
			}
			if len(q.Tokens) <= m.NCtx() && q.Tokens[q.LastSubject()] == p.Tokens[p.LastSubject()] {
				neg = q
			}
		}
		if neg == nil {
			continue
		}
		toks = append(toks, p.Tokens, neg.Tokens)
		at = append(at, p.LastSubject(), neg.LastSubject())
		y = append(y, 1, 0)
	}
	g.Examples, g.Positives = len(y), len(y)/2
	if g.Positives < 2 {
		return g, nil
	}
	if err := probeLayers(ctx, m, toks, at, layers, []*ProbeGrid{g}, [][]int{y}, cfg.Seed, cfg.Progress); err != nil {
		return nil, err
	}
	return g, nil
}

// probeLayers reads mlp.hook_post at the given positions for groups of
// layers (bounded memory) and fits every grid's probes at every layer.
func probeLayers(ctx context.Context, m *gpt2.Model, toks [][]int, pos, layers []int, grids []*ProbeGrid, ys [][]int, seed uint64, progress Progress) error {
	dm := m.DMLP()
	chunk := max(1, cachedFloats/(batchTokens*dm))
	for _, g := range grids {
		g.F1 = make([][]float64, len(layers))
		g.BestK1F1 = -1
	}
	for s := 0; s < len(layers); s += chunk {
		ls := layers[s:min(s+chunk, len(layers))]
		rows, err := analysis.ActivationsAt(ctx, m, toks, pos, "mlp.hook_post", ls)
		if err != nil {
			return err
		}
		for j, l := range ls {
			progress.report("probes", s+j, len(layers))
			X := make([][]float32, len(rows))
			for i, r := range rows {
				X[i] = r[j*dm : (j+1)*dm]
			}
			for gi, g := range grids {
				pr, err := analysis.SparseProbe(X, ys[gi], g.Classes, analysis.ProbeOptions{Ks: g.Ks, Seed: seed})
				if err != nil {
					return fmt.Errorf("reproduce: %s probe at layer %d: %w", g.Task, l, err)
				}
				g.Train, g.Test = pr.Train, pr.Test
				f1 := make([]float64, len(pr.PerK))
				for kk, pk := range pr.PerK {
					f1[kk] = pk.F1
				}
				g.F1[s+j] = f1
				if pk := pr.PerK[0]; pk.K == 1 && pk.F1 > g.BestK1F1 {
					g.BestK1F1, g.BestK1Layer = pk.F1, l
					if len(g.Classes) == 2 {
						g.BestK1Neuron = pk.Features[0][0]
					}
				}
			}
		}
	}
	progress.report("probes", len(layers), len(layers))
	return nil
}

// Verdict thresholds of the sparse-probing study.
const (
	spNameF1     = 0.8  // a probe "detects" the names at this F1
	spPoorNeuron = 0.7  // the best single neuron is "poor" below this F1
	spGain       = 0.15 // "more neurons help": F1 at the largest k minus F1 at k = 1
	spReadable   = 0.6  // below this F1 at the largest k the sport is not readable from neurons
)

// k1 is the index of k = 1 in the grid's Ks, or -1.
func (g *ProbeGrid) k1() int { return slices.Index(g.Ks, 1) }

func sparseProbingFindings(r *SparseProbingResult, cfg SparseProbingConfig) []Finding {
	L := r.Layers
	nameRule := fmt.Sprintf("supported if at some layer at depth ≤ %.1f the largest probe reaches held-out F1 ≥ %.2f while that layer's best single neuron (k = 1) stays at least %.2f below it; not supported if a single early neuron already does as well, or no early layer reaches %.2f; needs ≥ %d multi-token names", earlyDepth, spNameF1, spGain, spNameF1, cfg.MinFacts)
	sportRule := fmt.Sprintf("binary probe for one sport (basketball when known, else the most common); supported if the best single neuron's F1 is below %.2f and, at the layer where the largest k does best, the largest k beats k = 1 by ≥ %.2f; inconclusive if even the largest k stays below %.2f; needs ≥ %d known athletes", spPoorNeuron, spGain, spReadable, cfg.MinFacts)
	out := []Finding{{Claim: claim(ClaimSPName)}, {Claim: claim(ClaimSPSport), N: r.Dataset.Used}}

	// Names.
	g := r.Names
	switch {
	case g == nil || g.Positives == 0:
		out[0].Verdict = verdict(NotFound, nameRule, "no athlete's name spans two or more tokens with a counterfactual first name that is not an athlete's")
	case g.k1() < 0:
		out[0].Verdict = verdict(NotMeasured, nameRule, "k = 1 is not among the probe sizes")
	case g.Positives < cfg.MinFacts || g.F1 == nil:
		out[0].N = g.Positives
		out[0].Verdict = verdict(Inconclusive, nameRule, "n too small: %d multi-token names with a counterfactual; the rule needs at least %d", g.Positives, cfg.MinFacts)
	default:
		out[0].N = g.Positives
		last := len(g.Ks) - 1
		bestI := -1 // the early layer where the largest probe does best
		for i, l := range g.Layers {
			if depth(l, L) <= earlyDepth && (bestI < 0 || g.F1[i][last] > g.F1[bestI][last]) {
				bestI = i
			}
		}
		out[0].Ours = fmt.Sprintf("best single neuron L%dN%d, F1 %.3f; %d names against %d counterfactual names", g.BestK1Layer, g.BestK1Neuron, g.BestK1F1, g.Positives, g.Positives)
		if bestI < 0 {
			out[0].Verdict = verdict(NotSupported, nameRule, "none of the model's %d layers is in the first half of the network", L)
			break
		}
		top, one := g.F1[bestI][last], g.F1[bestI][g.k1()]
		out[0].Value = num(top)
		out[0].Brief = fmt.Sprintf("F1 %.2f (k=%d) vs %.2f (k=1) at layer %d", top, g.Ks[last], one, g.Layers[bestI])
		out[0].Ours = fmt.Sprintf("layer %d: F1 %.3f with %d neurons, %.3f with the best single one; ", g.Layers[bestI], top, g.Ks[last], one) + out[0].Ours
		switch {
		case top < spNameF1:
			out[0].Verdict = verdict(NotSupported, nameRule, "no early layer detects the names (best F1 %.3f with %d neurons, layer %d)", top, g.Ks[last], g.Layers[bestI])
		case top-one < spGain:
			out[0].Verdict = verdict(NotSupported, nameRule, "a single neuron of layer %d does nearly as well (F1 %.3f) as %d (%.3f)", g.Layers[bestI], one, g.Ks[last], top)
		default:
			out[0].Verdict = verdict(Supported, nameRule, "at layer %d, %d neurons detect the names with F1 %.3f, the best single neuron only %.3f", g.Layers[bestI], g.Ks[last], top, one)
		}
	}

	// Sport.
	if v, stop := countVerdict(sportRule, r.Dataset.Used, r.Dataset.Total, cfg.MinFacts, fmt.Sprintf("athletes (P(right sport) > %g)", cfg.Threshold)); stop {
		out[1].Verdict = v
		out[1].Ours = fmt.Sprintf("%d of %d athletes known", r.Dataset.Known, r.Dataset.Total)
		out[1].Brief = fmt.Sprintf("%d of %d known", r.Dataset.Known, r.Dataset.Total)
		return out
	}
	b := r.SportBinary
	switch {
	case b == nil || b.F1 == nil:
		out[1].Verdict = verdict(Inconclusive, sportRule, "fewer than two sports have two known athletes")
	case b.k1() < 0:
		out[1].Verdict = verdict(NotMeasured, sportRule, "k = 1 is not among the probe sizes")
	default:
		last := len(b.Ks) - 1
		bestI := 0
		for i := range b.Layers {
			if b.F1[i][last] > b.F1[bestI][last] {
				bestI = i
			}
		}
		top, atK1 := b.F1[bestI][last], b.F1[bestI][b.k1()]
		gain := top - atK1
		out[1].N = b.Examples
		out[1].Value = num(b.BestK1F1)
		out[1].Brief = fmt.Sprintf("k=1 F1 %.2f; k=%d %.2f", b.BestK1F1, b.Ks[last], top)
		out[1].Ours = fmt.Sprintf("%s: best single neuron L%dN%d, F1 %.3f; %d neurons reach F1 %.3f at layer %d (k = 1 there: %.3f); %d known athletes, %d positive",
			b.Task, b.BestK1Layer, b.BestK1Neuron, b.BestK1F1, b.Ks[last], top, b.Layers[bestI], atK1, b.Examples, b.Positives)
		switch {
		case top < spReadable:
			out[1].Verdict = verdict(Inconclusive, sportRule, "the sport is not readable from the MLP neurons at all (F1 %.3f with %d neurons)", top, b.Ks[last])
		case b.BestK1F1 < spPoorNeuron && gain >= spGain:
			out[1].Verdict = verdict(Supported, sportRule, "the best single neuron reaches F1 %.3f, %d neurons %.3f", b.BestK1F1, b.Ks[last], top)
		case b.BestK1F1 >= spPoorNeuron:
			out[1].Verdict = verdict(NotSupported, sportRule, "a single neuron (L%dN%d) already reaches F1 %.3f", b.BestK1Layer, b.BestK1Neuron, b.BestK1F1)
		default:
			out[1].Verdict = verdict(NotSupported, sportRule, "more neurons add only %.3f F1", gain)
		}
	}
	return out
}
