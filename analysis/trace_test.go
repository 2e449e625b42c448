package analysis

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/factlens/factlens/gpt2"
)

func TestCausalTraceFindsPlantedSites(t *testing.T) {
	ctx := context.Background()
	m := toyModel(t, gpt2.Processing{})
	tok := toyTokenizer(t)
	std, err := EmbeddingStd(m, tok, []string{"A X", "B Y", "C Z"})
	if err != nil {
		t.Fatal(err)
	}
	tokens := []int{toyT, toyA, toyX, toyP} // subject "A X" at [1, 3)
	r, err := CausalTrace(ctx, m, tokens, 1, 3, -1, TraceOptions{Noise: 3 * std, Tokenizer: tok})
	if err != nil {
		t.Fatal(err)
	}
	if r.Target != toyQ || !r.Correct || r.CleanProb < 0.95 {
		t.Fatalf("clean run: target %d correct %v p %.3f; want the planted answer %d", r.Target, r.Correct, r.CleanProb, toyQ)
	}
	if r.TotalEffect() < 0.5 {
		t.Errorf("noise on the subject lowers P(answer) only from %.3f to %.3f", r.CleanProb, r.CorruptedProb)
	}
	if r.Window != 1 || r.Samples != 10 || r.Seed != 1 {
		t.Errorf("defaults: window %d samples %d seed %d", r.Window, r.Samples, r.Seed)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("result does not marshal: %v", err)
	}
	argmaxCell := func(kind TraceKind) (int, int) {
		bp, bl := 0, 0
		for p, row := range r.Scores[kind] {
			for l, v := range row {
				if v > r.Scores[kind][bp][bl] {
					bp, bl = p, l
				}
			}
		}
		return bp, bl
	}
	// The AND neuron's site: the last subject token's state after layer 0
	// and its layer-0 MLP output.
	for _, kind := range []TraceKind{TraceHidden, TraceMLP} {
		best, bestP := -1.0, -1
		for p := 0; p < 3; p++ {
			if v := r.IndirectEffect(kind, p, 0); v > best {
				best, bestP = v, p
			}
		}
		if bestP != 2 || best < 0.05 {
			t.Errorf("%s at layer 0: largest indirect effect %.3f at position %d, want the last subject token 2", kind, best, bestP)
		}
	}
	if p, l := argmaxCell(TraceAttn); p != 3 || l != 1 {
		t.Errorf("attention: peak at position %d layer %d, want the last token's layer 1 (the mover head)", p, l)
	}
	// Restoring the whole last state gives the clean run back exactly.
	if got := r.Scores[TraceHidden][3][1]; math.Abs(got-r.CleanProb) > 1e-5 {
		t.Errorf("restoring the final state gives %.6f, clean %.6f", got, r.CleanProb)
	}
	// The noise cannot reach states before the subject.
	for _, kind := range []TraceKind{TraceHidden, TraceMLP, TraceAttn} {
		for l := range r.Scores[kind][0] {
			if r.Scores[kind][0][l] != r.CorruptedProb {
				t.Errorf("%s: position 0 layer %d = %.6f, want the corrupted %.6f", kind, l, r.Scores[kind][0][l], r.CorruptedProb)
			}
		}
	}
	// The last block's outputs before the last position reach nothing.
	for p := 0; p < 3; p++ {
		if r.Scores[TraceHidden][p][1] != r.CorruptedProb {
			t.Errorf("hidden: position %d layer 1 = %.6f, want the corrupted %.6f", p, r.Scores[TraceHidden][p][1], r.CorruptedProb)
		}
	}
}

// TestCausalTraceMatchesDirect recomputes cells one noisy run at a time with
// gpt2's own PatchFrom hook and a hand-written noise hook, drawing the noise
// as CausalTrace documents (seeded PCG, sample-major, one N(0, ν²) per
// subject position and dimension).
func TestCausalTraceMatchesDirect(t *testing.T) {
	ctx := context.Background()
	m := smallModel(t, gpt2.Processing{})
	tokens := []int{5, 17, 42, 8, 63, 11}
	s0, s1, noise, samples := 1, 3, 0.5, 4
	opts := TraceOptions{Noise: noise, Samples: samples, Seed: 7, Window: 2}
	r, err := CausalTrace(ctx, m, tokens, s0, s1, 30, opts)
	if err != nil {
		t.Fatal(err)
	}
	d := m.DModel()
	rng := rand.New(rand.NewPCG(7, 0x5eed))
	draws := make([][]float32, samples)
	for s := range draws {
		draws[s] = make([]float32, (s1-s0)*d)
		for i := range draws[s] {
			draws[s][i] = float32(rng.NormFloat64() * noise)
		}
	}
	clean, err := m.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Cache: gpt2.HookGlob("blocks.*.hook_*_out"), Logits: gpt2.LogitsLast})
	if err != nil {
		t.Fatal(err)
	}
	clean2, err := m.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Cache: gpt2.HookGlob("blocks.*.hook_resid_post")})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range clean2.Cache {
		clean.Cache[k] = v
	}
	direct := func(restore []gpt2.Hook) float64 {
		var p float64
		for s := 0; s < samples; s++ {
			hooks := append([]gpt2.Hook{{Match: gpt2.HookName("hook_embed"), Fn: func(a *gpt2.Activation) error {
				for i := s0; i < s1; i++ {
					x := a.At(0, i)
					for j := range x {
						x[j] += draws[s][(i-s0)*d+j]
					}
				}
				return nil
			}}}, restore...)
			res, err := m.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Hooks: hooks, Logits: gpt2.LogitsLast})
			if err != nil {
				t.Fatal(err)
			}
			p += prob(res.Logits.At(0, 0), 30) / float64(samples)
		}
		return p
	}
	if got := direct(nil); math.Abs(got-r.CorruptedProb) > 1e-6 {
		t.Errorf("corrupted: direct %.7f, CausalTrace %.7f", got, r.CorruptedProb)
	}
	for _, c := range []struct {
		kind   TraceKind
		pos, l int
		names  []string
	}{
		{TraceHidden, 2, 0, []string{"blocks.0.hook_resid_post"}},
		{TraceHidden, 4, 1, []string{"blocks.1.hook_resid_post"}},
		{TraceMLP, 2, 0, []string{"blocks.0.hook_mlp_out"}}, // window 2 at layer 0: [−1, 1) ∩ model
		{TraceMLP, 1, 1, []string{"blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"}},
		{TraceAttn, 5, 2, []string{"blocks.1.hook_attn_out", "blocks.2.hook_attn_out"}},
		{TraceHidden, 3, 2, []string{"blocks.2.hook_resid_post"}}, // filled in without running
		{TraceAttn, 4, 2, []string{"blocks.1.hook_attn_out", "blocks.2.hook_attn_out"}},
		{TraceHidden, 0, 1, []string{"blocks.1.hook_resid_post"}}, // before the subject
	} {
		var hooks []gpt2.Hook
		for _, n := range c.names {
			hooks = append(hooks, gpt2.PatchFrom(clean.Cache, gpt2.HookName(n), c.pos))
		}
		if got, want := r.Scores[c.kind][c.pos][c.l], direct(hooks); math.Abs(got-want) > 1e-6 {
			t.Errorf("%s pos %d layer %d: CausalTrace %.7f, direct %.7f", c.kind, c.pos, c.l, got, want)
		}
	}
}

// TestTraceWindow compares with ROME's trace_important_window:
// range(max(0, layer - window // 2), min(num_layers, layer - (-window // 2))).
func TestTraceWindow(t *testing.T) {
	rome := func(l, w, n int) []int {
		var out []int
		hi := l + (w+1)/2 // layer - (-window // 2) with Python's floor division
		for x := max(0, l-w/2); x < min(n, hi); x++ {
			out = append(out, x)
		}
		return out
	}
	for _, tc := range []struct{ l, w, n int }{{0, 10, 48}, {5, 10, 48}, {47, 10, 48}, {0, 3, 12}, {6, 3, 12}, {11, 3, 12}, {4, 4, 12}, {0, 1, 2}} {
		if got, want := traceLayers(TraceMLP, tc.l, tc.w, tc.n), rome(tc.l, tc.w, tc.n); !slices.Equal(got, want) {
			t.Errorf("layer %d window %d of %d: %v, ROME %v", tc.l, tc.w, tc.n, got, want)
		}
	}
	// Explicit ROME values: window 10 centred at 5 restores layers 0…9.
	if got := traceLayers(TraceAttn, 5, 10, 48); !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Errorf("window 10 at layer 5: %v", got)
	}
	for n, want := range map[int]int{2: 1, 12: 3, 24: 5, 36: 8, 48: 10} {
		if got := DefaultWindow(n); got != want {
			t.Errorf("DefaultWindow(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestEmbeddingStd(t *testing.T) {
	m := toyModel(t, gpt2.Processing{})
	tok := toyTokenizer(t)
	got, err := EmbeddingStd(m, tok, []string{"A X", "B"})
	if err != nil {
		t.Fatal(err)
	}
	// "A X" → "A", " X"; "B" → "B": three rows of 24 values, each row holding
	// 8, −8, 1 and 21 zeros.
	vals := []float64{}
	for i := 0; i < 3; i++ {
		vals = append(vals, 8, -8, 1)
		for j := 0; j < 21; j++ {
			vals = append(vals, 0)
		}
	}
	mu := mean(vals)
	var ss float64
	for _, v := range vals {
		ss += (v - mu) * (v - mu)
	}
	if want := math.Sqrt(ss / float64(len(vals)-1)); math.Abs(got-want) > 1e-9 {
		t.Errorf("EmbeddingStd = %.9f, want %.9f", got, want)
	}
	if _, err := EmbeddingStd(m, tok, nil); err == nil {
		t.Error("no subjects: no error")
	}
}

func TestSummarizeTraces(t *testing.T) {
	grid := func(n, layers int, f func(p, l int) float64) map[TraceKind][][]float64 {
		g := make([][]float64, n)
		for p := range g {
			g[p] = make([]float64, layers)
			for l := range g[p] {
				g[p][l] = f(p, l)
			}
		}
		return map[TraceKind][][]float64{TraceHidden: g}
	}
	// Fact 1: 6 tokens, subject [1, 4): buckets first 1, middle 2, last 3,
	// first subsequent 4, further (none), last token 5.
	// Fact 2: 4 tokens, one-token subject [0, 1): first = last = 0, middle
	// none, first subsequent 1, further 2, last token 3.
	// Fact 3 is incorrect and skipped.
	traces := []*TraceResult{
		{Tokens: make([]int, 6), SubjectStart: 1, SubjectEnd: 4, Correct: true, CleanProb: 0.8, CorruptedProb: 0.2,
			Scores: grid(6, 2, func(p, l int) float64 { return float64(10*p + l) })},
		{Tokens: make([]int, 4), SubjectStart: 0, SubjectEnd: 1, Correct: true, CleanProb: 0.6, CorruptedProb: 0.1,
			Scores: grid(4, 2, func(p, l int) float64 { return float64(100 + 10*p + l) })},
		{Tokens: make([]int, 4), SubjectStart: 0, SubjectEnd: 2, Correct: false, CleanProb: 0.1, CorruptedProb: 0.1,
			Scores: grid(4, 2, func(p, l int) float64 { return 1e6 })},
	}
	s, err := SummarizeTraces(traces, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Facts != 2 || s.Skipped != 1 || math.Abs(s.MeanClean-0.7) > 1e-12 || math.Abs(s.MeanCorrupted-0.15) > 1e-12 || math.Abs(s.ATE-0.55) > 1e-12 {
		t.Errorf("facts %d skipped %d clean %v corrupted %v ATE %v", s.Facts, s.Skipped, s.MeanClean, s.MeanCorrupted, s.ATE)
	}
	// Layer 0 means per bucket, by hand.
	want := []float64{
		(10 + 100) / 2.0, // first subject: p1 of fact 1, p0 of fact 2
		20,               // middle: p2 of fact 1
		(30 + 100) / 2.0, // last subject: p3, p0
		(40 + 110) / 2.0, // first subsequent: p4, p1
		120,              // further: p2 of fact 2
		(50 + 130) / 2.0, // last token: p5, p3
	}
	wantCounts := []int{2, 1, 2, 2, 1, 2}
	for b := range want {
		if got := s.Scores[TraceHidden][b][0]; got != want[b] {
			t.Errorf("bucket %q layer 0: %v, want %v", traceBuckets[b], got, want[b])
		}
		if got := s.AIE[TraceHidden][b][1]; math.Abs(got-(want[b]+1-0.15)) > 1e-9 {
			t.Errorf("bucket %q layer 1 AIE: %v, want %v", traceBuckets[b], got, want[b]+1-0.15)
		}
	}
	if !slices.Equal(s.Counts, wantCounts) {
		t.Errorf("counts %v, want %v", s.Counts, wantCounts)
	}
	if p := s.Peak[TraceHidden]; p.Bucket != "further tokens" || p.Layer != 1 {
		t.Errorf("peak %+v", p)
	}
	if _, err := json.Marshal(s); err != nil {
		t.Errorf("summary does not marshal: %v", err)
	}
	if _, err := SummarizeTraces(traces[2:], true); err == nil {
		t.Error("only incorrect traces: no error")
	}
}

func TestCausalTraceRejectsBadInput(t *testing.T) {
	m := toyModel(t, gpt2.Processing{})
	ctx := context.Background()
	tokens := []int{toyT, toyA, toyX, toyP}
	for _, tc := range []struct {
		name           string
		s0, s1, target int
		opts           TraceOptions
	}{
		{"no noise", 1, 3, -1, TraceOptions{}},
		{"NaN noise", 1, 3, -1, TraceOptions{Noise: math.NaN()}},
		{"empty span", 2, 2, -1, TraceOptions{Noise: 1}},
		{"span past end", 2, 5, -1, TraceOptions{Noise: 1}},
		{"bad kind", 1, 3, -1, TraceOptions{Noise: 1, Kinds: []TraceKind{"resid"}}},
		{"bad target", 1, 3, 99, TraceOptions{Noise: 1}},
	} {
		if _, err := CausalTrace(ctx, m, tokens, tc.s0, tc.s1, tc.target, tc.opts); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestTraceFacts(t *testing.T) {
	m := toyModel(t, gpt2.Processing{})
	tok := toyTokenizer(t)
	var prompts []*Prompt
	for _, f := range []Fact{
		{ID: "ax", Subject: "A X", Prompt: "T {} p", Target: " q"},
		{ID: "by", Subject: "B Y", Prompt: "T {} p", Target: " r"},
		{ID: "cz", Subject: "C Z", Prompt: "T {} p", Target: " q"}, // not known
	} {
		p, err := BuildPrompt(tok, f, PromptOptions{})
		if err != nil {
			t.Fatal(err)
		}
		prompts = append(prompts, p)
	}
	var calls []int
	r, err := TraceFacts(context.Background(), m, tok, prompts, TraceOptions{Samples: 4, Kinds: []TraceKind{TraceHidden}}, func(done, total int) { calls = append(calls, done*10+total) })
	if err != nil {
		t.Fatal(err)
	}
	std, _ := EmbeddingStd(m, tok, []string{"A X", "B Y", "C Z"})
	if math.Abs(r.Noise-3*std) > 1e-12 || len(r.Traces) != 3 || !slices.Equal(calls, []int{13, 23, 33}) {
		t.Errorf("noise %v (3σ = %v), %d traces, progress %v", r.Noise, 3*std, len(r.Traces), calls)
	}
	if r.Traces[2].Correct || r.Summary == nil || r.Summary.Facts != 2 || r.Summary.Skipped != 1 {
		t.Errorf("summary %+v", r.Summary)
	}
	// Restoring the final state peaks (" p" is both the first subsequent
	// and the last token); the AND gate's site shows after layer 0.
	if p := r.Summary.Peak[TraceHidden]; p.Layer != 1 || p.Bucket != "first subsequent token" {
		t.Errorf("peak %+v", p)
	}
	if a := r.Summary.AIE[TraceHidden][2][0]; a < 0.05 {
		t.Errorf("AIE at the last subject token, layer 0: %.3f", a)
	}
}
