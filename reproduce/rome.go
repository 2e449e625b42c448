package reproduce

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/gpt2"
)

// ROMEConfig controls the ROME study.
type ROMEConfig struct {
	// Dataset names the facts for the report; Paths are their files.
	Dataset string
	Paths   []string
	// PrependBOS puts <|endoftext|> first; ROME runs prompts without it.
	PrependBOS bool
	// Limit traces a seeded sample of this many known facts (0: all).
	Limit int
	// Seed draws the sample and the noise; 0 means 1.
	Seed uint64
	// Samples is the number of noisy runs averaged (ROME: 10); 0 means 10.
	Samples int
	// Window is the number of layers whose MLP or attention outputs are
	// restored together; 0 means analysis.DefaultWindow (ROME's 10 of 48
	// scaled to the model).
	Window int
	// NoiseScale sets ν = NoiseScale·σ, σ the standard deviation of the
	// token embeddings of every subject of the dataset (ROME: 3); 0 means 3.
	NoiseScale float64
	// MinFacts is the number of known facts a verdict needs; 0 means 10.
	MinFacts int
	Progress Progress
}

// ROMECurve is the average indirect effect of one kind of restoration at
// one token role, by layer, with its standard error over facts.
type ROMECurve struct {
	Kind      analysis.TraceKind `json:"kind"`
	Bucket    string             `json:"bucket"`
	AIE       []float64          `json:"aie"`
	StdErr    []float64          `json:"stderr"`
	PeakLayer int                `json:"peak_layer"`
	Peak      float64            `json:"peak"`
	PeakErr   float64            `json:"peak_stderr"`
}

// ROMEFact is one traced fact.
type ROMEFact struct {
	ID            string  `json:"id"`
	Subject       string  `json:"subject"`
	Target        string  `json:"target"`
	CleanProb     float64 `json:"clean_prob"`
	CorruptedProb float64 `json:"corrupted_prob"`
}

// ROMEResult is the ROME study: causal tracing of the facts this model
// predicts, averaged by token role, compared with GPT-2 XL's figures.
type ROMEResult struct {
	Header
	EmbeddingStd float64 `json:"embedding_std"` // σ over every subject of the dataset
	Noise        float64 `json:"noise"`         // ν
	Samples      int     `json:"samples"`
	Window       int     `json:"window"`

	Facts         []ROMEFact `json:"facts"`
	MeanClean     float64    `json:"mean_clean_prob"`
	MeanCorrupted float64    `json:"mean_corrupted_prob"`
	ATE           float64    `json:"ate"`
	ATEStdErr     float64    `json:"ate_stderr"`
	// Summary is analysis' average over token roles; nil when no fact was
	// traced.
	Summary *analysis.TraceSummary `json:"summary,omitempty"`
	// Curves are the AIE by layer at the last subject token and at the last
	// token, for hidden, mlp and attn.
	Curves []ROMECurve `json:"curves"`
}

// Curve returns the curve of kind at the bucket, or nil.
func (r *ROMEResult) Curve(kind analysis.TraceKind, bucket string) *ROMECurve {
	for i := range r.Curves {
		if r.Curves[i].Kind == kind && r.Curves[i].Bucket == bucket {
			return &r.Curves[i]
		}
	}
	return nil
}

// Token-role bucket names, as analysis.TraceSummary names them.
const (
	BucketLastSubject = "last subject token"
	BucketLast        = "last token"
)

// ROME runs ROME's causal tracing on facts (known_1000 or any other set):
// it keeps the facts whose greedy next token is the attribute's first token,
// traces a seeded sample of Limit of them with ν = NoiseScale·σ, averages
// the traces by token role and checks the four claims of Meng et al.
func ROME(ctx context.Context, m *gpt2.Model, tok *gpt2.Tokenizer, facts []analysis.Fact, cfg ROMEConfig) (*ROMEResult, error) {
	start := time.Now()
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.Samples == 0 {
		cfg.Samples = 10
	}
	if cfg.Window == 0 {
		cfg.Window = analysis.DefaultWindow(m.NLayer())
	}
	if cfg.NoiseScale == 0 {
		cfg.NoiseScale = 3
	}
	if cfg.MinFacts == 0 {
		cfg.MinFacts = 10
	}
	if cfg.Samples < 0 || cfg.Window < 0 || cfg.NoiseScale < 0 || cfg.Limit < 0 || cfg.MinFacts < 0 {
		return nil, fmt.Errorf("reproduce: rome: negative settings")
	}
	if len(facts) == 0 {
		return nil, fmt.Errorf("reproduce: rome: no facts")
	}
	res := &ROMEResult{Header: newHeader(StudyROME, m, cfg.PrependBOS), Samples: cfg.Samples, Window: cfg.Window}
	h := &res.Header

	prompts, tooLong, err := buildPrompts(m, tok, facts, cfg.PrependBOS)
	if err != nil {
		return nil, err
	}
	h.Dataset = DatasetInfo{Name: cfg.Dataset, Paths: cfg.Paths, Total: len(facts), TooLong: tooLong,
		Filter: "the model's greedy next token is the attribute's first token (ROME's correct_prediction)", Limit: cfg.Limit, Seed: cfg.Seed}
	t0 := time.Now()
	var known []int
	if len(prompts) > 0 {
		scores, err := analysis.ScoreFacts(ctx, m, prompts)
		if err != nil {
			return nil, err
		}
		for i, s := range scores {
			if s.Correct() {
				known = append(known, i)
			}
		}
	}
	h.timed("score facts", len(prompts), t0)
	h.Dataset.Known = len(known)
	used := sampleIndices(known, cfg.Limit, cfg.Seed)
	h.Dataset.Used = len(used)

	var subjects []string
	for _, f := range facts {
		subjects = append(subjects, f.Subject)
	}
	if res.EmbeddingStd, err = analysis.EmbeddingStd(m, tok, subjects); err != nil {
		return nil, err
	}
	res.Noise = cfg.NoiseScale * res.EmbeddingStd
	h.set("noise", fmt.Sprintf("ν = %g × σ = %.4g, σ = %.4g the standard deviation of the token embeddings of all %d subjects (ROME's collect_embedding_std)", cfg.NoiseScale, res.Noise, res.EmbeddingStd, len(subjects)))
	h.set("noisy runs", fmt.Sprintf("%d per trace, one seeded draw (seed %d) shared by every restoration", cfg.Samples, cfg.Seed))
	h.set("window", fmt.Sprintf("MLP and attention outputs of %d consecutive layers restored together (ROME: 10 of GPT-2 XL's 48)", cfg.Window))

	t0 = time.Now()
	var traces []*analysis.TraceResult
	opts := analysis.TraceOptions{Noise: res.Noise, Samples: cfg.Samples, Seed: cfg.Seed, Window: cfg.Window}
	for i, k := range used {
		cfg.Progress.report("causal traces", i, len(used))
		tr, err := analysis.TracePrompt(ctx, m, prompts[k], opts)
		if err != nil {
			return nil, fmt.Errorf("reproduce: rome: fact %s: %w", prompts[k].Fact.ID, err)
		}
		traces = append(traces, tr)
		f := prompts[k].Fact
		res.Facts = append(res.Facts, ROMEFact{ID: f.ID, Subject: f.Subject, Target: f.Target, CleanProb: tr.CleanProb, CorruptedProb: tr.CorruptedProb})
	}
	cfg.Progress.report("causal traces", len(used), len(used))
	h.timed("causal trace", len(used), t0)

	if len(traces) > 0 {
		if res.Summary, err = analysis.SummarizeTraces(traces, true); err != nil {
			return nil, err
		}
		var te []float64
		for _, t := range traces {
			te = append(te, t.TotalEffect())
		}
		res.MeanClean, res.MeanCorrupted = res.Summary.MeanClean, res.Summary.MeanCorrupted
		res.ATE, res.ATEStdErr = res.Summary.ATE, finite(stderr(te))
		for _, kind := range []analysis.TraceKind{analysis.TraceHidden, analysis.TraceMLP, analysis.TraceAttn} {
			res.Curves = append(res.Curves,
				romeCurve(traces, kind, BucketLastSubject, func(t *analysis.TraceResult) int { return t.SubjectEnd - 1 }),
				romeCurve(traces, kind, BucketLast, func(t *analysis.TraceResult) int { return len(t.Tokens) - 1 }))
		}
	}
	res.Findings = romeFindings(res, cfg)
	h.Seconds = time.Since(start).Seconds()
	return res, nil
}

// romeCurve averages each fact's indirect effect at one position (the last
// subject token or the last token: one position per fact) by layer.
func romeCurve(traces []*analysis.TraceResult, kind analysis.TraceKind, bucket string, pos func(*analysis.TraceResult) int) ROMECurve {
	L := len(traces[0].Scores[kind][0])
	c := ROMECurve{Kind: kind, Bucket: bucket, AIE: make([]float64, L), StdErr: make([]float64, L), Peak: math.Inf(-1)}
	for l := 0; l < L; l++ {
		var ie []float64
		for _, t := range traces {
			ie = append(ie, t.IndirectEffect(kind, pos(t), l))
		}
		c.AIE[l], c.StdErr[l] = mean(ie), finite(stderr(ie))
		if c.AIE[l] > c.Peak {
			c.Peak, c.PeakLayer, c.PeakErr = c.AIE[l], l, c.StdErr[l]
		}
	}
	return c
}

// Verdict thresholds of the ROME study.
const (
	romeEarlyDepth = 0.6  // "early-middle": the peak's depth is at most this
	romeLateDepth  = 0.5  // "later layers": the peak's depth is above this
	romeLarge      = 0.25 // an AIE "restores much" when it is at least this fraction of the ATE
)

func romeFindings(r *ROMEResult, cfg ROMEConfig) []Finding {
	n, total := r.Dataset.Used, r.Dataset.Total
	L := r.Layers
	what := "facts (greedy top-1 = the attribute's first token)"
	sig := func(v, se float64) bool { return v > 2*se }
	layerAt := func(c *ROMECurve) string {
		return fmt.Sprintf("layer %d of %d (depth %.2f)", c.PeakLayer, L, depth(c.PeakLayer, L))
	}
	ateRule := fmt.Sprintf("supported if the ATE is more than 2 standard errors above 0 and at least %.0f%% of the mean clean probability; needs ≥ %d known facts", 100*romeLarge, cfg.MinFacts)
	hiddenRule := fmt.Sprintf("supported if the hidden-state AIE at the last subject token peaks at depth ≤ %.1f with a peak of at least %.0f%% of the ATE and more than 2 standard errors above 0", romeEarlyDepth, 100*romeLarge)
	mlpRule := fmt.Sprintf("supported if the MLP AIE at the last subject token peaks at depth ≤ %.1f, at least %.0f%% of the ATE, more than 2 standard errors above 0, and above attention's peak at that token", romeEarlyDepth, 100*romeLarge)
	attnRule := fmt.Sprintf("supported if attention's AIE at the last subject token stays below %.0f%% of the ATE while its largest AIE over all token roles is at the last token, at depth > %.1f, at least %.0f%% of the ATE", 100*romeLarge, romeLateDepth, 100*romeLarge)

	out := []Finding{
		{Claim: claim(ClaimROMEATE), N: n},
		{Claim: claim(ClaimROMEHidden), N: n},
		{Claim: claim(ClaimROMEMLP), N: n},
		{Claim: claim(ClaimROMEAttn), N: n},
	}
	rules := []string{ateRule, hiddenRule, mlpRule, attnRule}
	if v, stop := countVerdict(rules[0], n, total, cfg.MinFacts, what); stop {
		for i := range out {
			v.Rule = rules[i]
			out[i].Verdict = v
			out[i].Ours = fmt.Sprintf("%d of %d facts known", r.Dataset.Known, total)
			out[i].Brief = fmt.Sprintf("%d of %d known", r.Dataset.Known, total)
		}
		if n > 0 {
			out[0].Ours = fmt.Sprintf("ATE %s ± %s (clean %s → corrupted %s), n = %d", pct(r.ATE), pct(r.ATEStdErr), pct(r.MeanClean), pct(r.MeanCorrupted), n)
			out[0].Value = num(r.ATE)
		}
		return out
	}

	// ATE.
	out[0].Brief = "ATE " + pct(r.ATE)
	out[0].Ours = fmt.Sprintf("ATE %s ± %s (clean %s → corrupted %s), n = %d", pct(r.ATE), pct(r.ATEStdErr), pct(r.MeanClean), pct(r.MeanCorrupted), n)
	out[0].Value = num(r.ATE)
	if sig(r.ATE, r.ATEStdErr) && r.ATE >= romeLarge*r.MeanClean {
		out[0].Verdict = verdict(Supported, ateRule, "corrupting the subject removes %s of the %s clean probability", pct(r.ATE), pct(r.MeanClean))
	} else {
		out[0].Verdict = verdict(NotSupported, ateRule, "the ATE of %s ± %s is small next to the %s clean probability", pct(r.ATE), pct(r.ATEStdErr), pct(r.MeanClean))
	}

	hid := r.Curve(analysis.TraceHidden, BucketLastSubject)
	mlp := r.Curve(analysis.TraceMLP, BucketLastSubject)
	att := r.Curve(analysis.TraceAttn, BucketLastSubject)
	attLast := r.Curve(analysis.TraceAttn, BucketLast)
	large := romeLarge * r.ATE

	// Hidden states.
	out[1].Ours = fmt.Sprintf("peak AIE %s ± %s at %s, last subject token", pct(hid.Peak), pct(hid.PeakErr), layerAt(hid))
	out[1].Value = num(hid.Peak)
	out[1].Brief = fmt.Sprintf("%s at layer %d/%d", pct(hid.Peak), hid.PeakLayer, L)
	switch {
	case depth(hid.PeakLayer, L) <= romeEarlyDepth && hid.Peak >= large && sig(hid.Peak, hid.PeakErr):
		out[1].Verdict = verdict(Supported, hiddenRule, "the last subject token's hidden state restores %s at %s", pct(hid.Peak), layerAt(hid))
	case hid.Peak < large || !sig(hid.Peak, hid.PeakErr):
		out[1].Verdict = verdict(NotSupported, hiddenRule, "restoring the last subject token's hidden state restores at most %s (%s of the ATE)", pct(hid.Peak), pct(hid.Peak/r.ATE))
	default:
		out[1].Verdict = verdict(NotSupported, hiddenRule, "the peak is late, at %s", layerAt(hid))
	}

	// MLP.
	out[2].Ours = fmt.Sprintf("peak MLP AIE %s ± %s at %s (window %d), last subject token", pct(mlp.Peak), pct(mlp.PeakErr), layerAt(mlp), r.Window)
	out[2].Value = num(mlp.Peak)
	out[2].Brief = fmt.Sprintf("%s, window at layer %d/%d", pct(mlp.Peak), mlp.PeakLayer, L)
	switch {
	case depth(mlp.PeakLayer, L) <= romeEarlyDepth && mlp.Peak >= large && sig(mlp.Peak, mlp.PeakErr) && mlp.Peak > att.Peak:
		out[2].Verdict = verdict(Supported, mlpRule, "MLPs at the last subject token restore %s at %s, attention there only %s", pct(mlp.Peak), layerAt(mlp), pct(att.Peak))
	case mlp.Peak < large || !sig(mlp.Peak, mlp.PeakErr):
		out[2].Verdict = verdict(NotSupported, mlpRule, "MLPs at the last subject token restore at most %s (%s of the ATE)", pct(mlp.Peak), pct(mlp.Peak/r.ATE))
	case mlp.Peak <= att.Peak:
		out[2].Verdict = verdict(NotSupported, mlpRule, "attention at the last subject token restores as much (%s) as the MLPs (%s)", pct(att.Peak), pct(mlp.Peak))
	default:
		out[2].Verdict = verdict(NotSupported, mlpRule, "the MLP peak is late, at %s", layerAt(mlp))
	}

	// Attention.
	out[3].Ours = fmt.Sprintf("attention AIE %s at the last subject token (peak, %s); %s at the last token (peak, %s)", pct(att.Peak), layerAt(att), pct(attLast.Peak), layerAt(attLast))
	out[3].Value = num(att.Peak)
	out[3].Brief = fmt.Sprintf("%s at subject; %s at layer %d/%d at last token", pct(att.Peak), pct(attLast.Peak), attLast.PeakLayer, L)
	// The token role where attention matters most; the last token counts
	// when it ties (in "… {subject} is" the first subsequent token is also
	// the last).
	peakBucket, peakAIE := BucketLast, attLast.Peak
	if s := r.Summary; s != nil {
		for b, row := range s.AIE[analysis.TraceAttn] {
			if s.Counts[b] == 0 {
				continue
			}
			for _, v := range row {
				if v > peakAIE+1e-12 {
					peakBucket, peakAIE = s.Buckets[b], v
				}
			}
		}
	}
	switch {
	case att.Peak < large && peakBucket == BucketLast && depth(attLast.PeakLayer, L) > romeLateDepth && attLast.Peak >= large:
		out[3].Verdict = verdict(Supported, attnRule, "attention restores %s at the last subject token but %s at the last token, %s", pct(att.Peak), pct(attLast.Peak), layerAt(attLast))
	case att.Peak >= large:
		out[3].Verdict = verdict(NotSupported, attnRule, "attention at the last subject token restores %s, %s of the ATE", pct(att.Peak), pct(att.Peak/r.ATE))
	case peakBucket != BucketLast:
		out[3].Verdict = verdict(NotSupported, attnRule, "attention's largest AIE is at the %s, not the last token", peakBucket)
	default:
		out[3].Verdict = verdict(NotSupported, attnRule, "attention at the last token peaks at %s with %s", layerAt(attLast), pct(attLast.Peak))
	}
	return out
}
