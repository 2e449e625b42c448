package reproduce

import (
	"context"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// The benchmarks time each study's work per fact on a GPT-2-shaped model
// with random weights (the cost does not depend on the weights) and GPT-2's
// vocabulary: FACTLENS_BENCH_SHAPE picks small (default), medium, large or
// xl. Run them one at a time on a shared machine, e.g.
//
//	go test ./reproduce -run '^$' -bench ROMETrace -benchtime 3x
//
// The README's time estimates come from the s/fact metrics.

var benchShapes = map[string][3]int{ // layers, d_model, heads
	"small": {12, 768, 12}, "medium": {24, 1024, 16}, "large": {36, 1280, 20}, "xl": {48, 1600, 25},
}

func benchModel(b *testing.B) (*gpt2.Model, *gpt2.Tokenizer) {
	b.Helper()
	name := os.Getenv("FACTLENS_BENCH_SHAPE")
	if name == "" {
		name = "small"
	}
	shape, ok := benchShapes[name]
	if !ok {
		b.Fatalf("FACTLENS_BENCH_SHAPE=%s: want small, medium, large or xl", name)
	}
	cfg := weights.DefaultConfig()
	cfg.NLayer, cfg.NEmbd, cfg.NHead = shape[0], shape[1], shape[2]
	rng := rand.New(rand.NewPCG(1, 0))
	ck := &weights.Checkpoint{Config: cfg, Params: map[string]*weights.Param{}}
	for _, s := range cfg.ParamSpecs() {
		n := 1
		for _, x := range s.Shape {
			n *= x
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(rng.Float64()-0.5) * 0.07
		}
		ck.Params[s.Name] = &weights.Param{Name: s.Name, Shape: s.Shape, Data: data, StoredDType: "F32"}
	}
	m, err := gpt2.FromCheckpoint(ck, gpt2.Processing{})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := gpt2.LoadTokenizerFiles(sharedTokenizer+"/vocab.json", sharedTokenizer+"/merges.txt")
	if err != nil {
		b.Fatal(err)
	}
	return m, tok
}

// benchAthletes is the LRE athletes with the one-shot prompt, with the first
// n treated as known.
func benchAthletes(b *testing.B, m *gpt2.Model, tok *gpt2.Tokenizer, n int) *athleteSet {
	b.Helper()
	athletes, err := LoadAthletes(lreSport)
	if err != nil {
		b.Fatal(err)
	}
	set, err := selectAthletes(context.Background(), m, tok, athletes, athleteOptions{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	set.known = nil
	for i := 0; i < n; i++ {
		set.known = append(set.known, i)
	}
	return set
}

func perFact(b *testing.B, facts int) {
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N*facts), "s/fact")
}

// BenchmarkROMETrace is one known_1000 fact traced with ROME's settings
// (10 noisy runs, the scaled window, hidden/MLP/attention).
func BenchmarkROMETrace(b *testing.B) {
	m, tok := benchModel(b)
	facts, err := LoadFacts(knownFacts)
	if err != nil {
		b.Fatal(err)
	}
	prompts, _, err := buildPrompts(m, tok, facts[:16], false)
	if err != nil {
		b.Fatal(err)
	}
	opts := analysis.TraceOptions{Noise: 0.1, Window: analysis.DefaultWindow(m.NLayer())}
	i := 0
	for b.Loop() {
		if _, err := analysis.TracePrompt(context.Background(), m, prompts[i%len(prompts)], opts); err != nil {
			b.Fatal(err)
		}
		i++
	}
	perFact(b, 1)
}

// BenchmarkScoreFacts scores every known_1000 fact (the filter of rome).
func BenchmarkScoreFacts(b *testing.B) {
	m, tok := benchModel(b)
	facts, err := LoadFacts(knownFacts)
	if err != nil {
		b.Fatal(err)
	}
	prompts, _, err := buildPrompts(m, tok, facts, false)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := analysis.ScoreFacts(context.Background(), m, prompts); err != nil {
			b.Fatal(err)
		}
	}
	perFact(b, len(prompts))
}

// BenchmarkFactFindingPerAthlete is fact-finding's work per known athlete:
// the clean cached run, 3 × layers mean ablations, the conjunction test and
// the counterfactual names (4 alternates each), on 8 athletes.
func BenchmarkFactFindingPerAthlete(b *testing.B) {
	m, tok := benchModel(b)
	set := benchAthletes(b, m, tok, 8)
	prompts, labels := set.knownPrompts()
	ctx := context.Background()
	var stages [3]time.Duration
	for b.Loop() {
		t0 := time.Now()
		st, err := measureNames(ctx, m, prompts, true)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		_, clean, err := ablateLayers(ctx, m, prompts, labels, set.sportTokens, st, nil)
		if err != nil {
			b.Fatal(err)
		}
		for i := range clean {
			clean[i] = 1 // let the gate check run
		}
		t2 := time.Now()
		if _, _, err := conjunctionTests(ctx, m, tok, set, prompts, labels, clean, st, conjunctionOptions{alternates: 4, seed: 1, maxChecks: 32, counter: true}, nil); err != nil {
			b.Fatal(err)
		}
		stages[0] += t1.Sub(t0)
		stages[1] += t2.Sub(t1)
		stages[2] += time.Since(t2)
	}
	perFact(b, len(prompts))
	for i, name := range []string{"s/fact-clean", "s/fact-ablations", "s/fact-conjunction"} {
		b.ReportMetric(stages[i].Seconds()/float64(b.N*len(prompts)), name)
	}
}

// BenchmarkNameProbesPerExample is sparse-probing's neuron read and probe
// fits per example, on every layer, for 64 examples.
func BenchmarkNameProbesPerExample(b *testing.B) {
	m, tok := benchModel(b)
	set := benchAthletes(b, m, tok, 64)
	prompts, _ := set.knownPrompts()
	var toks [][]int
	var pos, y []int
	for i, p := range prompts {
		toks, pos, y = append(toks, p.Tokens), append(pos, p.LastSubject()), append(y, i%2)
	}
	var layers, ks []int
	for l := 0; l < m.NLayer(); l++ {
		layers = append(layers, l)
	}
	for k := 1; k <= 64; k *= 2 {
		ks = append(ks, k)
	}
	for b.Loop() {
		g := &ProbeGrid{Task: "bench", Classes: []string{"a", "b"}, Ks: ks, Layers: layers}
		if err := probeLayers(context.Background(), m, toks, pos, layers, []*ProbeGrid{g}, [][]int{y}, 1, nil); err != nil {
			b.Fatal(err)
		}
	}
	perFact(b, len(toks))
}

// BenchmarkForwardRows is the batched pass the studies' interventions run:
// 2048 tokens as rows of 10 (a known_1000 prompt's length), last-position
// logits only. tokens/s relates the shapes' per-fact costs.
func BenchmarkForwardRows(b *testing.B) {
	m, _ := benchModel(b)
	rng := rand.New(rand.NewPCG(3, 0))
	rows := make([][]int, 204)
	for i := range rows {
		for j := 0; j < 10; j++ {
			rows[i] = append(rows[i], rng.IntN(m.VocabSize()))
		}
	}
	for b.Loop() {
		if _, err := m.Run(context.Background(), rows, gpt2.RunOptions{Logits: gpt2.LogitsLast}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(rows)*10)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkScoreAthletes scores the LRE athletes with the one-shot prompt
// (the filter of the athlete studies).
func BenchmarkScoreAthletes(b *testing.B) {
	m, tok := benchModel(b)
	athletes, err := LoadAthletes(lreSport)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := selectAthletes(context.Background(), m, tok, athletes, athleteOptions{Seed: 1}); err != nil {
			b.Fatal(err)
		}
	}
	perFact(b, len(athletes))
}
