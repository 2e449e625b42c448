package reproduce

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/gpt2"
)

// This file holds the measurements the athlete studies share: clean-run
// statistics at the final name token, layer-by-layer mean ablations, and the
// conjunction and counterfactual-name tests.

// nameStats are clean-run measurements over the known athletes' prompts.
type nameStats struct {
	// Means over the prompts, per layer: hook_mlp_out and hook_attn_out
	// at the final name token, hook_mlp_out at the final token, and
	// mlp.hook_post at the final name token.
	mlpName, attnName, mlpFinal, postName [][]float32
	// resid[i] is prompt i's residual stream at its final name token:
	// blocks.0.hook_resid_pre, then every layer's hook_resid_post.
	resid [][][]float32
	// nameAttn[l] is, for the head of layer l that does it most, the mean
	// attention weight from the final name token onto the name's earlier
	// tokens, over the names of two or more tokens (multiToken of them).
	nameAttn   []float64
	multiToken int
}

// measureNames runs the prompts once, caching what nameStats needs.
func measureNames(ctx context.Context, m *gpt2.Model, prompts []*analysis.Prompt, wantResid bool) (*nameStats, error) {
	L, d, dm, H := m.NLayer(), m.DModel(), m.DMLP(), m.NHead()
	acc := func(w int) [][]float64 {
		out := make([][]float64, L)
		for l := range out {
			out[l] = make([]float64, w)
		}
		return out
	}
	mlpName, attnName, mlpFinal, postName := acc(d), acc(d), acc(d), acc(dm)
	attn := acc(H)
	st := &nameStats{nameAttn: make([]float64, L)}
	if wantResid {
		st.resid = make([][][]float32, len(prompts))
	}
	var names []string
	for l := 0; l < L; l++ {
		names = append(names, blockHook(l, "hook_mlp_out"), blockHook(l, "hook_attn_out"), blockHook(l, "mlp.hook_post"), blockHook(l, "attn.hook_pattern"))
		if wantResid {
			names = append(names, blockHook(l, "hook_resid_post"))
		}
	}
	if wantResid {
		names = append(names, "blocks.0.hook_resid_pre")
	}
	toks := make([][]int, len(prompts))
	maxLen := 1
	for i, p := range prompts {
		toks[i] = p.Tokens
		maxLen = max(maxLen, len(p.Tokens))
	}
	perToken := L * (4*d + dm + H*maxLen)
	err := forGroups(ctx, m, toks, cachedRows(maxLen, perToken), gpt2.RunOptions{Cache: matchNames(names...), Logits: gpt2.LogitsNone}, func(idx []int, res *gpt2.Result) error {
		for r, i := range idx {
			p := prompts[i]
			name, final := p.LastSubject(), len(p.Tokens)-1
			add := func(dst []float64, src []float32) {
				for j, v := range src {
					dst[j] += float64(v)
				}
			}
			if wantResid {
				st.resid[i] = append(st.resid[i], clone32(res.Cache["blocks.0.hook_resid_pre"].At(r, name)))
			}
			for l := 0; l < L; l++ {
				add(mlpName[l], res.Cache[blockHook(l, "hook_mlp_out")].At(r, name))
				add(attnName[l], res.Cache[blockHook(l, "hook_attn_out")].At(r, name))
				add(mlpFinal[l], res.Cache[blockHook(l, "hook_mlp_out")].At(r, final))
				add(postName[l], res.Cache[blockHook(l, "mlp.hook_post")].At(r, name))
				if wantResid {
					st.resid[i] = append(st.resid[i], clone32(res.Cache[blockHook(l, "hook_resid_post")].At(r, name)))
				}
				if name > p.SubjectStart {
					pat := res.Cache[blockHook(l, "attn.hook_pattern")]
					for hd := 0; hd < H; hd++ {
						row := pat.At(r, hd, name)
						for k := p.SubjectStart; k < name; k++ {
							attn[l][hd] += float64(row[k])
						}
					}
				}
			}
			if name > p.SubjectStart {
				st.multiToken++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	div := func(a [][]float64, n int) [][]float32 {
		out := make([][]float32, len(a))
		for l, row := range a {
			out[l] = make([]float32, len(row))
			for j, v := range row {
				out[l][j] = float32(v / float64(max(1, n)))
			}
		}
		return out
	}
	n := len(prompts)
	st.mlpName, st.attnName, st.mlpFinal, st.postName = div(mlpName, n), div(attnName, n), div(mlpFinal, n), div(postName, n)
	for l := range attn {
		if st.multiToken > 0 {
			st.nameAttn[l] = slices.Max(attn[l]) / float64(st.multiToken)
		}
	}
	return st, nil
}

func clone32(v []float32) []float32 { return slices.Clone(v) }

// LayerEffects are the fractions of the sport's logit lead (the right
// sport's logit minus the mean of the others', at the last position) that
// mean-ablating one layer's output at one position removes: 1 − Σ lead
// ablated / Σ lead clean over the facts.
type LayerEffects struct {
	MLPAtName  []float64 `json:"mlp_at_final_name_token"`
	AttnAtName []float64 `json:"attn_at_final_name_token"`
	MLPAtFinal []float64 `json:"mlp_at_final_token"`
	// CleanLead is the mean lead without ablation.
	CleanLead float64 `json:"clean_lead"`
}

// ablateLayers mean-ablates, for every fact and layer, hook_mlp_out and
// hook_attn_out at the final name token and hook_mlp_out at the final token,
// each alone, replacing the vector by its mean over the facts.
func ablateLayers(ctx context.Context, m *gpt2.Model, prompts []*analysis.Prompt, labels, sportTokens []int, st *nameStats, progress Progress) (*LayerEffects, []float64, error) {
	L := m.NLayer()
	clean := make([]float64, len(prompts))
	sums := make([][]float64, 3)
	for k := range sums {
		sums[k] = make([]float64, L)
	}
	var cleanSum float64
	for i, p := range prompts {
		progress.report("layer ablations", i, len(prompts))
		name, final := p.LastSubject(), len(p.Tokens)-1
		rows := [][]edit{nil}
		for l := 0; l < L; l++ {
			rows = append(rows, []edit{{hook: blockHook(l, "hook_mlp_out"), pos: name, vals: st.mlpName[l]}})
		}
		for l := 0; l < L; l++ {
			rows = append(rows, []edit{{hook: blockHook(l, "hook_attn_out"), pos: name, vals: st.attnName[l]}})
		}
		for l := 0; l < L; l++ {
			rows = append(rows, []edit{{hook: blockHook(l, "hook_mlp_out"), pos: final, vals: st.mlpFinal[l]}})
		}
		logits, err := runEdits(ctx, m, p.Tokens, rows, sportTokens)
		if err != nil {
			return nil, nil, err
		}
		clean[i] = lead(logits[0], labels[i])
		cleanSum += clean[i]
		for k := 0; k < 3; k++ {
			for l := 0; l < L; l++ {
				sums[k][l] += lead(logits[1+k*L+l], labels[i])
			}
		}
	}
	progress.report("layer ablations", len(prompts), len(prompts))
	eff := &LayerEffects{CleanLead: cleanSum / float64(max(1, len(prompts)))}
	frac := func(s []float64) []float64 {
		out := make([]float64, L)
		for l, v := range s {
			if cleanSum != 0 {
				out[l] = 1 - v/cleanSum
			}
		}
		return out
	}
	eff.MLPAtName, eff.AttnAtName, eff.MLPAtFinal = frac(sums[0]), frac(sums[1]), frac(sums[2])
	return eff, clean, nil
}

// lookupThreshold is the fraction of the sport's lead a layer's mean
// ablation must remove for the layer to count as doing the lookup.
const lookupThreshold = 0.10

// lookupLayers lists the layers whose MLP at the final name token removes at
// least lookupThreshold of the lead.
func (e *LayerEffects) lookupLayers() []int {
	var out []int
	for l, v := range e.MLPAtName {
		if v >= lookupThreshold {
			out = append(out, l)
		}
	}
	return out
}

// ConjunctionStats is the AND-gate test over the known athletes with a
// first and a last name: how many neurons pass it per fact, how many facts
// each such neuron serves, and how many facts have a "clean" gate — an AND
// neuron whose mean-ablation alone removes at least half the fact's lead.
type ConjunctionStats struct {
	Point      string  `json:"point"`
	Tau        float64 `json:"tau"`
	MinAct     float64 `json:"min_act"`
	Alternates int     `json:"alternates"`
	Tested     int     `json:"neurons_tested_per_fact"`
	Facts      int     `json:"facts"`
	// FactsWithAND have at least one neuron passing the AND test; ANDPairs
	// counts (fact, neuron) gates over ANDNeurons distinct neurons.
	FactsWithAND int `json:"facts_with_and"`
	ANDPairs     int `json:"and_pairs"`
	ANDNeurons   int `json:"and_neurons"`
	// NeuronsPerANDFact is ANDPairs / FactsWithAND; FactsPerANDNeuron is
	// ANDPairs / ANDNeurons.
	NeuronsPerANDFact float64 `json:"neurons_per_and_fact"`
	FactsPerANDNeuron float64 `json:"facts_per_and_neuron"`
	// FactsPerNeuronHistogram[k] counts AND neurons gating exactly k facts.
	FactsPerNeuronHistogram []int `json:"facts_per_neuron_histogram"`
	// Checked is the most AND neurons ablated per fact (largest
	// interaction first).
	Checked        int         `json:"checked_per_fact"`
	CleanGateFacts int         `json:"clean_gate_facts"`
	CleanGates     []CleanGate `json:"clean_gates"`
	// TopInteractions is, per fact, the neuron with the largest interaction
	// act(A B) − act(A ·) − act(· B) + act(· ·), AND or not, largest first.
	TopInteractions []TopInteraction `json:"top_interactions"`
}

// TopInteraction is one fact's neuron with the largest interaction.
type TopInteraction struct {
	Subject     string  `json:"subject"`
	Layer       int     `json:"layer"`
	Neuron      int     `json:"neuron"`
	Act         float64 `json:"act"`
	Interaction float64 `json:"interaction"`
	AND         bool    `json:"and"`
}

// CleanGate is an AND neuron that carries a fact on its own.
type CleanGate struct {
	Subject     string  `json:"subject"`
	Layer       int     `json:"layer"`
	Neuron      int     `json:"neuron"`
	Interaction float64 `json:"interaction"`
	Removed     float64 `json:"removed"` // fraction of the fact's lead its mean-ablation removes
}

// CounterfactualStats compares each known name's sport lead with what the
// counterfactual names predict additively: lead(A B) against
// lead(A ·) + lead(· B) − lead(· ·), the means over other last names,
// other first names, and both.
type CounterfactualStats struct {
	Facts int `json:"facts"`
	// MeanLead* are means over facts of lead(A B), lead(A ·), lead(· B)
	// and lead(· ·).
	MeanLead        float64 `json:"mean_lead_true"`
	MeanLeadFirst   float64 `json:"mean_lead_first_only"`
	MeanLeadLast    float64 `json:"mean_lead_last_only"`
	MeanLeadNeither float64 `json:"mean_lead_neither"`
	// Unexplained is Σ interaction / Σ (lead(A B) − lead(· ·)): the share
	// of the true name's effect that the counterfactual names, added, do not
	// account for.
	Unexplained float64 `json:"unexplained"`
	// AdditiveCorrect counts facts whose additive prediction still ranks the
	// right sport first among the sports.
	AdditiveCorrect int `json:"additive_correct"`
}

// conjunctionOptions control conjunctionTests.
type conjunctionOptions struct {
	alternates int
	seed       uint64
	maxChecks  int
	counter    bool  // also run the counterfactual-name comparison
	layers     []int // layers whose neurons are tested; nil means all
}

// conjunctionTests runs analysis.ConjunctionTest on every known athlete
// whose name splits into first and last, with alternates other first and
// last names drawn from the other known athletes, checks whether any AND
// neuron carries the fact alone, and (with counter) compares the sport lead
// of the true name with the counterfactual names'.
func conjunctionTests(ctx context.Context, m *gpt2.Model, tok *gpt2.Tokenizer, set *athleteSet, prompts []*analysis.Prompt, labels []int,
	cleanLeads []float64, st *nameStats, o conjunctionOptions, progress Progress) (*ConjunctionStats, *CounterfactualStats, error) {
	type entry struct {
		i    int
		name analysis.NamePair
	}
	var es []entry
	var firsts, lasts []string
	for i, p := range prompts {
		n, ok := analysis.SplitName(p.Fact.Subject)
		if !ok {
			continue
		}
		es = append(es, entry{i, n})
		if !slices.Contains(firsts, n.First) {
			firsts = append(firsts, n.First)
		}
		if !slices.Contains(lasts, n.Last) {
			lasts = append(lasts, n.Last)
		}
	}
	alt := min(o.alternates, len(firsts)-1, len(lasts)-1)
	if alt < 1 || len(es) == 0 {
		return nil, nil, nil
	}
	rng := rand.New(rand.NewPCG(o.seed, 0xc0a1))
	pick := func(pool []string, not string) []string {
		var out []string
		for _, j := range rng.Perm(len(pool)) {
			if pool[j] != not && len(out) < alt {
				out = append(out, pool[j])
			}
		}
		return out
	}
	copts := analysis.ConjunctionOptions{Template: set.template, Tokenizer: tok, PrependBOS: set.bos, TopK: 1, Layers: o.layers}
	cs := &ConjunctionStats{Point: "mlp.hook_post", Alternates: alt, Checked: o.maxChecks}
	var cf *CounterfactualStats
	var inter, total float64
	if o.counter {
		cf = &CounterfactualStats{}
	}
	perNeuron := map[[2]int]int{}
	for k, e := range es {
		progress.report("conjunction tests", k, len(es))
		of, ol := pick(firsts, e.name.First), pick(lasts, e.name.Last)
		r, err := analysis.ConjunctionTest(ctx, m, e.name, of, ol, copts)
		if err != nil {
			return nil, nil, fmt.Errorf("reproduce: %s: %w", e.name.Subject(), err)
		}
		cs.Point, cs.Tau, cs.MinAct, cs.Tested = r.Point, r.Tau, r.MinAct, r.Tested
		cs.Facts++
		if len(r.AND) > 0 {
			cs.FactsWithAND++
		}
		cs.ANDPairs += len(r.AND)
		if len(r.Top) > 0 {
			c := r.Top[0]
			cs.TopInteractions = append(cs.TopInteractions, TopInteraction{Subject: e.name.Subject(), Layer: c.Layer, Neuron: c.Neuron, Act: c.Act, Interaction: c.Interaction, AND: c.AND})
		}
		for _, c := range r.AND {
			perNeuron[[2]int{c.Layer, c.Neuron}]++
		}
		p := prompts[e.i]
		if len(r.AND) > 0 && o.maxChecks > 0 && cleanLeads[e.i] > 0 {
			check := r.AND[:min(len(r.AND), o.maxChecks)]
			rows := make([][]edit, len(check))
			for j, c := range check {
				rows[j] = []edit{{hook: blockHook(c.Layer, "mlp.hook_post"), pos: p.LastSubject(), lo: c.Neuron, vals: []float32{st.postName[c.Layer][c.Neuron]}}}
			}
			logits, err := runEdits(ctx, m, p.Tokens, rows, set.sportTokens)
			if err != nil {
				return nil, nil, err
			}
			best := CleanGate{Removed: -1}
			for j, c := range check {
				removed := 1 - lead(logits[j], labels[e.i])/cleanLeads[e.i]
				if removed > best.Removed {
					best = CleanGate{Subject: p.Fact.Subject, Layer: c.Layer, Neuron: c.Neuron, Interaction: c.Interaction, Removed: removed}
				}
			}
			if best.Removed >= cleanGateFraction {
				cs.CleanGateFacts++
				cs.CleanGates = append(cs.CleanGates, best)
			}
		}
		if cf != nil {
			lt, l1, l2, l0, addOK, err := counterfactualLeads(ctx, m, tok, set, e.name, of, ol, labels[e.i])
			if err != nil {
				return nil, nil, err
			}
			cf.Facts++
			cf.MeanLead += lt
			cf.MeanLeadFirst += l1
			cf.MeanLeadLast += l2
			cf.MeanLeadNeither += l0
			inter += lt - l1 - l2 + l0
			total += lt - l0
			if addOK {
				cf.AdditiveCorrect++
			}
		}
	}
	progress.report("conjunction tests", len(es), len(es))
	cs.ANDNeurons = len(perNeuron)
	if cs.FactsWithAND > 0 {
		cs.NeuronsPerANDFact = float64(cs.ANDPairs) / float64(cs.FactsWithAND)
	}
	if cs.ANDNeurons > 0 {
		cs.FactsPerANDNeuron = float64(cs.ANDPairs) / float64(cs.ANDNeurons)
	}
	maxK := 0
	for _, k := range perNeuron {
		maxK = max(maxK, k)
	}
	cs.FactsPerNeuronHistogram = make([]int, maxK+1)
	for _, k := range perNeuron {
		cs.FactsPerNeuronHistogram[k]++
	}
	slices.SortFunc(cs.CleanGates, func(a, b CleanGate) int { return cmp.Compare(b.Removed, a.Removed) })
	slices.SortStableFunc(cs.TopInteractions, func(a, b TopInteraction) int { return cmp.Compare(b.Interaction, a.Interaction) })
	if cf != nil && cf.Facts > 0 {
		n := float64(cf.Facts)
		cf.MeanLead, cf.MeanLeadFirst, cf.MeanLeadLast, cf.MeanLeadNeither = cf.MeanLead/n, cf.MeanLeadFirst/n, cf.MeanLeadLast/n, cf.MeanLeadNeither/n
		if total != 0 {
			cf.Unexplained = inter / total
		}
	}
	return cs, cf, nil
}

// cleanGateFraction is the share of a fact's lead one AND neuron's
// mean-ablation must remove for it to count as a clean gate.
const cleanGateFraction = 0.5

// counterfactualLeads returns the sport lead of the true name, the means
// over (A, other last), (other first, B) and (other, other), and whether
// the additive combination still ranks the right sport first.
func counterfactualLeads(ctx context.Context, m *gpt2.Model, tok *gpt2.Tokenizer, set *athleteSet, name analysis.NamePair, of, ol []string, label int) (lt, l1, l2, l0 float64, addOK bool, err error) {
	subjects := []string{name.Subject()}
	for _, b := range ol {
		subjects = append(subjects, analysis.NamePair{First: name.First, Last: b}.Subject())
	}
	for _, a := range of {
		subjects = append(subjects, analysis.NamePair{First: a, Last: name.Last}.Subject())
	}
	for _, a := range of {
		for _, b := range ol {
			subjects = append(subjects, analysis.NamePair{First: a, Last: b}.Subject())
		}
	}
	toks := make([][]int, len(subjects))
	for i, s := range subjects {
		p, err := analysis.BuildPrompt(tok, analysis.Fact{ID: "counterfactual", Subject: s, Prompt: set.template, Target: " " + set.sports[label]}, analysis.PromptOptions{PrependBOS: set.bos})
		if err != nil {
			return 0, 0, 0, 0, false, err
		}
		toks[i] = p.Tokens
	}
	logits := make([][]float32, len(toks))
	err = forGroups(ctx, m, toks, 0, gpt2.RunOptions{Logits: gpt2.LogitsLast}, func(idx []int, res *gpt2.Result) error {
		for r, i := range idx {
			row := res.Logits.At(r, 0)
			v := make([]float32, len(set.sportTokens))
			for j, t := range set.sportTokens {
				v[j] = row[t]
			}
			logits[i] = v
		}
		return nil
	})
	if err != nil {
		return 0, 0, 0, 0, false, err
	}
	nb, na := len(ol), len(of)
	meanRows := func(rows [][]float32) []float64 {
		out := make([]float64, len(set.sportTokens))
		for _, r := range rows {
			for j, v := range r {
				out[j] += float64(v) / float64(len(rows))
			}
		}
		return out
	}
	f1, f2, f0 := meanRows(logits[1:1+nb]), meanRows(logits[1+nb:1+nb+na]), meanRows(logits[1+nb+na:])
	add := make([]float32, len(set.sportTokens))
	for j := range add {
		add[j] = float32(f1[j] + f2[j] - f0[j])
	}
	leadOf := func(v []float64) float64 {
		w := make([]float32, len(v))
		for j, x := range v {
			w[j] = float32(x)
		}
		return lead(w, label)
	}
	best := 0
	for j := range add {
		if add[j] > add[best] {
			best = j
		}
	}
	return lead(logits[0], label), leadOf(f1), leadOf(f2), leadOf(f0), best == label, nil
}
