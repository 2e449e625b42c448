package gpt2

// The goldens in testdata/generate were made by an independent float64
// PyTorch reference of Hugging Face's KV-cached greedy generation (checked
// there, step by step, against re-running the full forward of
// testdata/golden/make_goldens.py), with:
//
//	cd gpt2/testdata/generate && /usr/bin/python3 make_generate_golden.py

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/factlens/factlens/weights"
)

type generateCase struct {
	Checkpoint   string `json:"checkpoint"`
	Processing   string `json:"processing"`
	Prompt       []int  `json:"prompt"`
	PrependBOS   bool   `json:"prepend_bos"`
	MaxNewTokens int    `json:"max_new_tokens"`
	GreedyIDs    []int  `json:"greedy_ids"`
	StopAtEOSIDs []int  `json:"stop_at_eos_ids"`
}

func readGenerateGolden(t *testing.T) (map[string]generateCase, *weights.SafetensorsFile) {
	t.Helper()
	dir := filepath.Join("testdata", "generate")
	b, err := os.ReadFile(filepath.Join(dir, "generate.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases map[string]generateCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	f, err := weights.OpenSafetensors(filepath.Join(dir, "generate.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return cases, f
}

// generateLogged runs Generate and also returns a copy of the logits each
// new token was chosen from.
func generateLogged(t *testing.T, m *Model, prompt []int, opts GenerateOptions) ([]int, [][]float32) {
	t.Helper()
	var logits [][]float32
	opts.OnToken = func(step, id int, l []float32) error {
		if step != len(logits) {
			return fmt.Errorf("OnToken step %d, want %d", step, len(logits))
		}
		logits = append(logits, slices.Clone(l))
		return nil
	}
	ids, err := m.Generate(context.Background(), prompt, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(logits) != len(ids) {
		t.Fatalf("OnToken saw %d tokens, Generate returned %d", len(logits), len(ids))
	}
	return ids, logits
}

// generateRerun is generation without a key/value cache: every step runs the
// whole sequence through Run and samples from its last logits.
func generateRerun(ctx context.Context, m *Model, prompt []int, opts GenerateOptions) ([]int, [][]float32, error) {
	seq := slices.Clone(prompt)
	if opts.PrependBOS {
		seq = slices.Insert(seq, 0, m.Config.BOSTokenID)
	}
	smp := newSampler(opts, m.VocabSize())
	var ids []int
	var logits [][]float32
	for range opts.MaxNewTokens {
		res, err := m.Run(ctx, [][]int{seq}, RunOptions{Logits: LogitsLast})
		if err != nil {
			return nil, nil, err
		}
		id := smp.next(res.Logits.Data)
		ids, logits, seq = append(ids, id), append(logits, res.Logits.Data), append(seq, id)
		if opts.StopAtEOT && id == m.Config.EOSTokenID {
			break
		}
	}
	return ids, logits, nil
}

func processingNamed(t *testing.T, name string) Processing {
	switch name {
	case "hf":
		return Processing{}
	case "tl":
		return TransformerLensProcessing()
	}
	t.Fatalf("unknown processing %q", name)
	return Processing{}
}

// TestGenerateGolden checks greedy ids and every step's logits against the
// PyTorch reference, including a continuation that fills the context, a
// prepended BOS, TransformerLens processing and the stop at eos_token_id.
func TestGenerateGolden(t *testing.T) {
	cases, f := readGenerateGolden(t)
	if len(cases) == 0 {
		t.Fatal("no golden cases")
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			m := openModel(t, c.Checkpoint, processingNamed(t, c.Processing))
			ids, logits := generateLogged(t, m, c.Prompt, GenerateOptions{MaxNewTokens: c.MaxNewTokens, PrependBOS: c.PrependBOS})
			if !slices.Equal(ids, c.GreedyIDs) {
				t.Errorf("greedy ids\n got %v\nwant %v", ids, c.GreedyIDs)
			}
			want, err := f.Float32(name + "/logits")
			if err != nil {
				t.Fatal(err)
			}
			got := &Activation{Name: "logits", Shape: []int{len(logits), m.VocabSize()}, Data: slices.Concat(logits...)}
			st := compareAct(t, name+"/logits", got, &Activation{Shape: []int{c.MaxNewTokens, m.VocabSize()}, Data: want})
			t.Logf("%d steps: worst scaled logit error %.2e (abs %.2e)", len(logits), st.scaled, st.abs)

			if c.StopAtEOSIDs != nil {
				stopped, err := m.Generate(context.Background(), c.Prompt,
					GenerateOptions{MaxNewTokens: c.MaxNewTokens, PrependBOS: c.PrependBOS, StopAtEOT: true})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(stopped, c.StopAtEOSIDs) {
					t.Errorf("StopAtEOT ids %v, want %v", stopped, c.StopAtEOSIDs)
				}
			}
		})
	}
}

// TestGenerateMatchesRerun checks the key/value cache against re-running the
// whole sequence at every step: same ids, logits equal to float32 rounding,
// for greedy and sampled decoding.
func TestGenerateMatchesRerun(t *testing.T) {
	ctx := context.Background()
	in := readInputs(t)
	for _, ck := range []string{"tied_f32", "options"} {
		for _, proc := range []string{"hf", "tl"} {
			m := openModel(t, ck, processingNamed(t, proc))
			for _, opts := range []GenerateOptions{
				{MaxNewTokens: 40},
				{MaxNewTokens: 30, PrependBOS: true},
				{MaxNewTokens: 40, Temperature: 1.5, Seed: 7},
				{MaxNewTokens: 40, Temperature: 0.8, TopK: 20, TopP: 0.9, Seed: 8, PrependBOS: true},
			} {
				t.Run(fmt.Sprintf("%s/%s/T=%g,k=%d,p=%g,bos=%v", ck, proc, opts.Temperature, opts.TopK, opts.TopP, opts.PrependBOS), func(t *testing.T) {
					prompt := in.Batch[1][:5]
					ids, logits := generateLogged(t, m, prompt, opts)
					wantIDs, wantLogits, err := generateRerun(ctx, m, prompt, opts)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(ids, wantIDs) {
						t.Fatalf("ids %v, re-run %v", ids, wantIDs)
					}
					worst := 0.0
					for i := range logits {
						worst = max(worst, maxScaledDiff(logits[i], wantLogits[i]))
					}
					if worst > 2e-6 {
						t.Errorf("logits differ from the re-run by %.3g (scaled)", worst)
					}
				})
			}
		}
	}
}

// TestGenerateWideShapes runs the cache at GPT-2 small's widths (d_model 768,
// 12 heads of 64, d_mlp 3072), where the matrix kernels take their blocked
// paths, against the re-run.
func TestGenerateWideShapes(t *testing.T) {
	if testing.Short() {
		t.Skip("wide model")
	}
	cfg := weights.DefaultConfig()
	cfg.NLayer, cfg.VocabSize, cfg.NPositions = 2, 300, 64
	cfg.BOSTokenID, cfg.EOSTokenID = 299, 299
	m, err := FromCheckpoint(randomCheckpoint(cfg, 5), TransformerLensProcessing())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(6, 0))
	prompt := make([]int, 13)
	for i := range prompt {
		prompt[i] = rng.IntN(cfg.VocabSize)
	}
	opts := GenerateOptions{MaxNewTokens: 24, Temperature: 1, Seed: 3}
	ids, logits := generateLogged(t, m, prompt, opts)
	wantIDs, wantLogits, err := generateRerun(context.Background(), m, prompt, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, wantIDs) {
		t.Fatalf("ids %v, re-run %v", ids, wantIDs)
	}
	for i := range logits {
		if d := maxScaledDiff(logits[i], wantLogits[i]); d > 1e-5 {
			t.Errorf("step %d: logits differ from the re-run by %.3g (scaled)", i, d)
		}
	}
}

func TestGenerateSampling(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	prompt := readInputs(t).Batch[0]
	gen := func(opts GenerateOptions) []int {
		t.Helper()
		ids, err := m.Generate(context.Background(), prompt, opts)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	const n = 40
	greedy := gen(GenerateOptions{MaxNewTokens: n})

	sampled := GenerateOptions{MaxNewTokens: n, Temperature: 2, Seed: 11}
	a, b := gen(sampled), gen(sampled)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different ids:\n%v\n%v", a, b)
	}
	if slices.Equal(a, greedy) {
		t.Errorf("sampling at temperature 2 gave the greedy continuation %v", a)
	}
	differs := false
	for seed := uint64(12); seed < 16 && !differs; seed++ {
		sampled.Seed = seed
		differs = !slices.Equal(gen(sampled), a)
	}
	if !differs {
		t.Error("four other seeds all gave the same ids as seed 11")
	}

	for _, tc := range []struct {
		name string
		opts GenerateOptions
	}{
		{"temperature→0", GenerateOptions{Temperature: 1e-9, Seed: 1}},
		{"top-k 1", GenerateOptions{Temperature: 1, TopK: 1, Seed: 2}},
		{"top-k 1 hot", GenerateOptions{Temperature: 50, TopK: 1, Seed: 3}},
		{"tiny top-p", GenerateOptions{Temperature: 1, TopP: 1e-9, Seed: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.MaxNewTokens = n
			if got := gen(tc.opts); !slices.Equal(got, greedy) {
				t.Errorf("ids %v, greedy %v", got, greedy)
			}
		})
	}
}

// TestSamplerDistribution checks temperature, top-k and top-p filtering on
// hand-made distributions against probabilities worked out by hand.
func TestSamplerDistribution(t *testing.T) {
	// Ids 0..4 have probabilities .15 .05 .5 .1 .2 at temperature 1.
	base := []float64{0.15, 0.05, 0.5, 0.1, 0.2}
	logits := make([]float32, len(base))
	for i, p := range base {
		logits[i] = float32(math.Log(p)) + 3 // a shift changes nothing
	}
	for _, tc := range []struct {
		name      string
		temp      float64
		topK      int
		topP      float64
		wantIDs   []int
		wantProbs []float64
	}{
		{"plain", 1, 0, 0, []int{0, 1, 2, 3, 4}, base},
		{"top-p 1 is off", 1, 0, 1, []int{0, 1, 2, 3, 4}, base},
		// Nucleus: keep a token while the ones before it hold < top_p.
		{"top-p .3", 1, 0, 0.3, []int{2}, []float64{1}},
		{"top-p .6", 1, 0, 0.6, []int{2, 4}, []float64{.5 / .7, .2 / .7}},
		{"top-p .8", 1, 0, 0.8, []int{2, 4, 0}, []float64{.5 / .85, .2 / .85, .15 / .85}},
		{"top-p .9", 1, 0, 0.9, []int{2, 4, 0, 3}, []float64{.5 / .95, .2 / .95, .15 / .95, .1 / .95}},
		{"top-p .99", 1, 0, 0.99, []int{2, 4, 0, 3, 1}, []float64{.5, .2, .15, .1, .05}},
		{"top-k 2", 1, 2, 0, []int{2, 4}, []float64{.5 / .7, .2 / .7}},
		{"top-k 3", 1, 3, 0, []int{0, 2, 4}, []float64{.15 / .85, .5 / .85, .2 / .85}},
		// Top-p acts on the renormalized top-k set: .714 ≥ .7 stops at one.
		{"top-k 2 top-p .7", 1, 2, 0.7, []int{2}, []float64{1}},
		{"top-k 2 top-p .8", 1, 2, 0.8, []int{2, 4}, []float64{.5 / .7, .2 / .7}},
		// Temperature 2: p ∝ √p₀. √.5 = .70711, √.2 = .44721, √.15 = .38730,
		// √.1 = .31623, √.05 = .22361; sum 2.08146.
		{"temperature 2", 2, 0, 0, []int{0, 1, 2, 3, 4},
			[]float64{.38730 / 2.08146, .22361 / 2.08146, .70711 / 2.08146, .31623 / 2.08146, .44721 / 2.08146}},
		// At temperature 2 the top three hold 1.54162/2.08146 = .7406 < .75,
		// so the fourth joins: the four sum to 1.85785.
		{"temperature 2 top-p .75", 2, 0, 0.75, []int{2, 4, 0, 3},
			[]float64{.70711 / 1.85785, .44721 / 1.85785, .38730 / 1.85785, .31623 / 1.85785}},
		// Temperature .5: p ∝ p₀², i.e. .25 .04 .0225 .01 .0025 over .325:
		// .7692 .1231 .0692 .0308 .0077.
		{"temperature .5 top-p .75", 0.5, 0, 0.75, []int{2}, []float64{1}},
		{"temperature .5 top-p .8", 0.5, 0, 0.8, []int{2, 4}, []float64{.25 / .29, .04 / .29}},
		{"temperature .5 top-p .9", 0.5, 0, 0.9, []int{2, 4, 0}, []float64{.25 / .3125, .04 / .3125, .0225 / .3125}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSampler(GenerateOptions{Temperature: tc.temp, TopK: tc.topK, TopP: tc.topP}, len(logits))
			ids, probs := s.distribution(logits)
			if !slices.Equal(ids, tc.wantIDs) {
				t.Fatalf("ids %v, want %v", ids, tc.wantIDs)
			}
			for i := range probs {
				if math.Abs(probs[i]-tc.wantProbs[i]) > 2e-5 {
					t.Errorf("probs %v, want %v", probs, tc.wantProbs)
					break
				}
			}
		})
	}

	// Top-k keeps every token tied with the k-th, as Hugging Face does.
	s := newSampler(GenerateOptions{Temperature: 1, TopK: 2}, 5)
	if ids, _ := s.distribution([]float32{1, 3, 2, 2, 0}); !slices.Equal(ids, []int{1, 2, 3}) {
		t.Errorf("top-k 2 with a tie kept %v, want [1 2 3]", ids)
	}
	// Equal probabilities in the nucleus come in id order: ids 1 and 3 have
	// e/(2e+2) = .3655 each, ids 0 and 2 .1345 each.
	s = newSampler(GenerateOptions{Temperature: 1, TopP: 0.3}, 4)
	if ids, _ := s.distribution([]float32{0, 1, 0, 1}); !slices.Equal(ids, []int{1}) {
		t.Errorf("top-p .3 over [0 1 0 1] kept %v, want [1]", ids)
	}
	s = newSampler(GenerateOptions{Temperature: 1, TopP: 0.5}, 4)
	if ids, _ := s.distribution([]float32{0, 1, 0, 1}); !slices.Equal(ids, []int{1, 3}) {
		t.Errorf("top-p .5 over [0 1 0 1] kept %v, want [1 3]", ids)
	}
	// A wide vocabulary with one token far ahead exercises the partial sort.
	wide := make([]float32, 50257)
	for i := range wide {
		wide[i] = float32(i%97) * 0.01
	}
	wide[31337] = 30
	s = newSampler(GenerateOptions{Temperature: 1, TopP: 0.95}, len(wide))
	if ids, _ := s.distribution(wide); !slices.Equal(ids, []int{31337}) {
		t.Errorf("top-p .95 with one dominant token kept %d tokens", len(ids))
	}
}

// TestSamplerFrequencies draws many tokens and checks their frequencies
// against the filtered distribution.
func TestSamplerFrequencies(t *testing.T) {
	logits := []float32{float32(math.Log(.15)), float32(math.Log(.05)), float32(math.Log(.5)), float32(math.Log(.1)), float32(math.Log(.2))}
	s := newSampler(GenerateOptions{Temperature: 1, TopP: 0.8, Seed: 99}, len(logits))
	const draws = 40000
	counts := make([]int, len(logits))
	for range draws {
		counts[s.next(logits)]++
	}
	want := []float64{.15 / .85, 0, .5 / .85, 0, .2 / .85}
	for i, c := range counts {
		f := float64(c) / draws
		// Five standard deviations of a binomial proportion.
		if tol := 5 * math.Sqrt(want[i]*(1-want[i])/draws); math.Abs(f-want[i]) > tol || (want[i] == 0 && c > 0) {
			t.Errorf("token %d drawn %.4f of the time, want %.4f", i, f, want[i])
		}
	}
}

func TestGenerateEmptyPromptWithBOS(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	got, err := m.Generate(context.Background(), nil, GenerateOptions{MaxNewTokens: 6, PrependBOS: true})
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.Generate(context.Background(), []int{m.Config.BOSTokenID}, GenerateOptions{MaxNewTokens: 6})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("from BOS alone %v, from the prompt [BOS] %v", got, want)
	}
}

func TestGenerateErrors(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	noEOS := openModel(t, "tied_f32", Processing{})
	noEOS.Config.EOSTokenID = -1
	ok := []int{1, 2, 3}
	for _, tc := range []struct {
		name   string
		m      *Model
		prompt []int
		opts   GenerateOptions
		want   string
	}{
		{"empty prompt", m, nil, GenerateOptions{MaxNewTokens: 1}, "empty prompt"},
		{"prompt fills the context", m, make([]int, 64), GenerateOptions{MaxNewTokens: 1}, "prompt of 64 tokens plus 1 new tokens is 65 positions, more than n_positions 64"},
		{"prompt too long", m, make([]int, 65), GenerateOptions{MaxNewTokens: 1}, "more than n_positions 64"},
		{"too many new tokens", m, ok, GenerateOptions{MaxNewTokens: 62}, "prompt of 3 tokens plus 62 new tokens is 65 positions"},
		{"BOS counts", m, ok, GenerateOptions{MaxNewTokens: 61, PrependBOS: true}, "prompt of 3 tokens after BOS plus 61 new tokens is 65"},
		{"no new tokens", m, ok, GenerateOptions{}, "MaxNewTokens 0"},
		{"negative new tokens", m, ok, GenerateOptions{MaxNewTokens: -2}, "MaxNewTokens -2"},
		{"negative temperature", m, ok, GenerateOptions{MaxNewTokens: 1, Temperature: -1}, "Temperature -1"},
		{"NaN temperature", m, ok, GenerateOptions{MaxNewTokens: 1, Temperature: math.NaN()}, "Temperature NaN"},
		{"infinite temperature", m, ok, GenerateOptions{MaxNewTokens: 1, Temperature: math.Inf(1)}, "Temperature +Inf"},
		{"negative top-k", m, ok, GenerateOptions{MaxNewTokens: 1, Temperature: 1, TopK: -1}, "TopK -1"},
		{"top-p above 1", m, ok, GenerateOptions{MaxNewTokens: 1, Temperature: 1, TopP: 1.5}, "TopP 1.5"},
		{"negative top-p", m, ok, GenerateOptions{MaxNewTokens: 1, Temperature: 1, TopP: -0.1}, "TopP -0.1"},
		{"NaN top-p", m, ok, GenerateOptions{MaxNewTokens: 1, Temperature: 1, TopP: math.NaN()}, "TopP NaN"},
		{"top-k without temperature", m, ok, GenerateOptions{MaxNewTokens: 1, TopK: 5}, "set a Temperature > 0"},
		{"top-p without temperature", m, ok, GenerateOptions{MaxNewTokens: 1, TopP: 0.9}, "set a Temperature > 0"},
		{"token out of range", m, []int{1, 97}, GenerateOptions{MaxNewTokens: 1}, "prompt token 1 = 97 is out of range [0, 97)"},
		{"negative token", m, []int{-1}, GenerateOptions{MaxNewTokens: 1}, "prompt token 0 = -1"},
		{"no eos id", noEOS, ok, GenerateOptions{MaxNewTokens: 1, StopAtEOT: true}, "eos_token_id -1 is out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids, err := tc.m.Generate(context.Background(), tc.prompt, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if ids != nil {
				t.Errorf("returned ids %v with a validation error", ids)
			}
		})
	}

	// A prompt that fills the context exactly with its new tokens is fine.
	if _, err := m.Generate(context.Background(), make([]int, 63), GenerateOptions{MaxNewTokens: 1}); err != nil {
		t.Errorf("63 + 1 positions: %v", err)
	}

	// Stopping part-way returns what was generated with the error.
	ctx, cancel := context.WithCancel(context.Background())
	ids, err := m.Generate(ctx, ok, GenerateOptions{MaxNewTokens: 10, OnToken: func(step, _ int, _ []float32) error {
		if step == 2 {
			cancel()
		}
		return nil
	}})
	if !errors.Is(err, context.Canceled) || len(ids) != 3 {
		t.Errorf("cancelled after 3 tokens: ids %v, err %v", ids, err)
	}
	stop := errors.New("enough")
	ids, err = m.Generate(context.Background(), ok, GenerateOptions{MaxNewTokens: 10, OnToken: func(step, _ int, _ []float32) error {
		if step == 4 {
			return stop
		}
		return nil
	}})
	if !errors.Is(err, stop) || len(ids) != 5 {
		t.Errorf("OnToken error at token 4: ids %v, err %v", ids, err)
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := m.Generate(cancelled, ok, GenerateOptions{MaxNewTokens: 3}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled before the prefill: err %v", err)
	}
}

// BenchmarkGenerate times 32 greedy tokens after an 8-token prompt on GPT-2
// small's shapes (random weights), with the key/value cache and by re-running
// the whole sequence for every token. tokens/s counts generated tokens.
// Run with -benchtime=3x on shared machines.
func BenchmarkGenerate(b *testing.B) {
	cfg := weights.DefaultConfig()
	m, err := FromCheckpoint(randomCheckpoint(cfg, 1), Processing{})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(2, 0))
	prompt := make([]int, 8)
	for i := range prompt {
		prompt[i] = rng.IntN(cfg.VocabSize)
	}
	const n = 32
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		gen  func() ([]int, error)
	}{
		{"kvcache", func() ([]int, error) { return m.Generate(ctx, prompt, GenerateOptions{MaxNewTokens: n}) }},
		{"rerun", func() ([]int, error) {
			ids, _, err := generateRerun(ctx, m, prompt, GenerateOptions{MaxNewTokens: n})
			return ids, err
		}},
		{"kvcache-sampled", func() ([]int, error) {
			return m.Generate(ctx, prompt, GenerateOptions{MaxNewTokens: n, Temperature: 1, TopK: 50, TopP: 0.95, Seed: 1})
		}},
	} {
		b.Run(fmt.Sprintf("8+%d/%s", n, tc.name), func(b *testing.B) {
			for b.Loop() {
				ids, err := tc.gen()
				if err != nil || len(ids) != n {
					b.Fatalf("%d ids, err %v", len(ids), err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
