package sae

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/factlens/factlens/gpt2"
)

// ReconstructionMetrics are SAELens' sparsity and reconstruction metrics
// (evals.py:get_sparsity_and_variance_metrics) over a set of tokens.
type ReconstructionMetrics struct {
	Tokens int64
	L0     float64 // mean number of active latents per token
	L1     float64 // mean Σ_j acts_j per token

	MSE             float64 // mean over tokens and dimensions of (x − x̂)²
	SumSquaredError float64 // mean over tokens of ‖x − x̂‖² (the training loss's MSE term)

	// ExplainedVariance is the dataset-level 1 − E‖x−x̂‖² / (E‖x‖² − ‖E x‖²)
	// of SAELens PR #443. ExplainedVarianceLegacy is the old per-token
	// 1 − ‖x−x̂‖²/‖x − x̄‖², x̄ the mean of each Add call's batch, averaged.
	ExplainedVariance       float64
	ExplainedVarianceLegacy float64
	// ExplainedVarianceSAELensCode is what SAELens' evals.py actually
	// computes for explained_variance: its "mean_act_per_dimension" squares
	// the inputs before averaging, so the subtracted term is (E‖x‖²/d_in)²,
	// not ‖E x‖², which makes it nearly the uncentered 1 − E‖x−x̂‖²/E‖x‖².
	// Kept to compare with numbers SAELens reports.
	ExplainedVarianceSAELensCode float64

	CosSim                     float64 // mean cos(x, x̂)
	L2Ratio                    float64 // mean ‖x̂‖/‖x‖
	RelativeReconstructionBias float64 // E‖x̂‖² / E(x·x̂) (Gated SAE paper, eq. 10)

	// FeatureDensity is each latent's fraction of tokens with a positive
	// activation. Dead latents never fired; the Below counts include them.
	FeatureDensity  []float64
	Dead            int
	DensityBelow1e5 int
	DensityBelow1e6 int
	// DensityHistogram counts latents by log10(density + 1e-10) in bins of
	// half a decade from -10 to 0.
	DensityHistogram []HistogramBin

	// ActiveFeatures is the distribution over tokens of the number of active
	// latents (how many features "fire at a time").
	ActiveFeatures Distribution
}

// HistogramBin counts values in [Lo, Hi).
type HistogramBin struct {
	Lo, Hi float64
	Count  int
}

// Distribution summarizes integer counts over tokens.
type Distribution struct {
	Min, Max         int
	Mean             float64
	P10, Median, P90 int
}

// Accumulator gathers ReconstructionMetrics over batches of (x, acts, x̂).
type Accumulator struct {
	dIn, dSAE              int
	tokens                 int64
	sumL0, sumL1           float64
	sumSq, sumResid        float64
	sumX                   []float64
	sumCos, sumRatio       float64
	sumXhatSq, sumXDotXhat float64
	sumLegacy              float64
	fires                  []int64
	activeHist             []int64 // tokens by number of active latents
}

// NewAccumulator returns an empty accumulator for an SAE's shape.
func NewAccumulator(dIn, dSAE int) *Accumulator {
	return &Accumulator{dIn: dIn, dSAE: dSAE, sumX: make([]float64, dIn), fires: make([]int64, dSAE),
		activeHist: make([]int64, dSAE+1)}
}

// Add accumulates n tokens: inputs x [n, d_in], activations [n, d_sae] and
// reconstructions [n, d_in].
func (a *Accumulator) Add(x, acts, xhat []float32, n int) error {
	if len(x) != n*a.dIn || len(xhat) != n*a.dIn || len(acts) != n*a.dSAE {
		return fmt.Errorf("sae: metrics: %d, %d, %d values for %d tokens of d_in %d, d_sae %d", len(x), len(acts), len(xhat), n, a.dIn, a.dSAE)
	}
	if n == 0 {
		return nil
	}
	d := a.dIn
	batchMean := make([]float64, d)
	for r := 0; r < n; r++ {
		for i, v := range x[r*d : (r+1)*d] {
			batchMean[i] += float64(v)
		}
	}
	for i := range batchMean {
		a.sumX[i] += batchMean[i]
		batchMean[i] /= float64(n)
	}
	for r := 0; r < n; r++ {
		xr, hr := x[r*d:(r+1)*d], xhat[r*d:(r+1)*d]
		var xx, hh, xh, res, centered float64
		for i := range xr {
			xv, hv := float64(xr[i]), float64(hr[i])
			xx += xv * xv
			hh += hv * hv
			xh += xv * hv
			e := xv - hv
			res += e * e
			c := xv - batchMean[i]
			centered += c * c
		}
		a.sumSq += xx
		a.sumResid += res
		a.sumXhatSq += hh
		a.sumXDotXhat += xh
		if xx > 0 && hh > 0 {
			a.sumCos += xh / math.Sqrt(xx*hh)
		}
		// SAELens divides by 1 instead of a near-zero input norm.
		nx := math.Sqrt(xx)
		if nx < 1e-4 {
			nx = 1
		}
		a.sumRatio += math.Sqrt(hh) / nx
		if centered > 0 {
			a.sumLegacy += 1 - res/centered
		}
		active := 0
		var l1 float64
		for j, v := range acts[r*a.dSAE : (r+1)*a.dSAE] {
			if v > 0 {
				active++
				a.fires[j]++
			}
			l1 += float64(v)
		}
		a.activeHist[active]++
		a.sumL0 += float64(active)
		a.sumL1 += l1
	}
	a.tokens += int64(n)
	return nil
}

// Result computes the metrics of everything added so far.
func (a *Accumulator) Result() ReconstructionMetrics {
	t := float64(a.tokens)
	m := ReconstructionMetrics{Tokens: a.tokens}
	if a.tokens == 0 {
		return m
	}
	m.L0, m.L1 = a.sumL0/t, a.sumL1/t
	m.SumSquaredError = a.sumResid / t
	m.MSE = m.SumSquaredError / float64(a.dIn)
	var meanSq float64
	for _, s := range a.sumX {
		mu := s / t
		meanSq += mu * mu
	}
	m.ExplainedVariance = 1 - (a.sumResid/t)/(a.sumSq/t-meanSq)
	m.ExplainedVarianceLegacy = a.sumLegacy / t
	perDim := a.sumSq / t / float64(a.dIn)
	m.ExplainedVarianceSAELensCode = 1 - (a.sumResid/t)/(a.sumSq/t-perDim*perDim)
	m.CosSim = a.sumCos / t
	m.L2Ratio = a.sumRatio / t
	m.RelativeReconstructionBias = (a.sumXhatSq / t) / (a.sumXDotXhat / t)
	m.FeatureDensity = make([]float64, a.dSAE)
	const lo, width = -10.0, 0.5
	m.DensityHistogram = make([]HistogramBin, 20)
	for i := range m.DensityHistogram {
		m.DensityHistogram[i] = HistogramBin{Lo: lo + width*float64(i), Hi: lo + width*float64(i+1)}
	}
	for j, f := range a.fires {
		d := float64(f) / t
		m.FeatureDensity[j] = d
		if f == 0 {
			m.Dead++
		}
		if d < 1e-5 {
			m.DensityBelow1e5++
		}
		if d < 1e-6 {
			m.DensityBelow1e6++
		}
		bin := int(math.Floor((math.Log10(d+1e-10) - lo) / width))
		m.DensityHistogram[min(max(bin, 0), len(m.DensityHistogram)-1)].Count++
	}
	m.ActiveFeatures = distribution(a.activeHist, a.tokens)
	return m
}

func distribution(hist []int64, total int64) Distribution {
	var d Distribution
	var seen int64
	var sum float64
	first := true
	quantile := func(q float64) int64 { return int64(math.Ceil(q * float64(total))) }
	p10, p50, p90 := quantile(0.1), quantile(0.5), quantile(0.9)
	for v, c := range hist {
		if c == 0 {
			continue
		}
		if first {
			d.Min, first = v, false
		}
		d.Max = v
		sum += float64(v) * float64(c)
		before := seen
		seen += c
		if before < p10 && seen >= p10 {
			d.P10 = v
		}
		if before < p50 && seen >= p50 {
			d.Median = v
		}
		if before < p90 && seen >= p90 {
			d.P90 = v
		}
	}
	d.Mean = sum / float64(total)
	return d
}

// EvalOptions control Evaluate.
type EvalOptions struct {
	// Hook overrides the SAE's metadata.hook_name.
	Hook string
	// PrependBOS adds the BOS token before every window (the SAE's
	// metadata.prepend_bos is the usual choice).
	PrependBOS bool
	// Batch is the number of windows per forward pass (default 8).
	Batch int
	// IgnoreTokens are excluded from every metric, and their positions keep
	// the model's own activation when the SAE is spliced in, as in SAELens'
	// run_evals (which ignores the pad, EOS and BOS ids). nil means the
	// model's BOS and EOS ids; use an empty non-nil slice to ignore nothing.
	IgnoreTokens []int
	// ReconstructionOnly skips the two extra forward passes of the CE and KL
	// metrics.
	ReconstructionOnly bool
	// TokenReports keeps the top TopFeatures latents of this many tokens
	// (the first non-ignored ones, in order).
	TokenReports int
	TopFeatures  int
}

// EvalReport is Evaluate's result.
type EvalReport struct {
	Hook           string
	Reconstruction ReconstructionMetrics

	// Cross-entropy of next-token prediction (nats per token) with the
	// model's own activations, with the SAE's reconstruction spliced in at
	// the hook, and with the hook zero-ablated; CELossScore is
	// (CE_abl − CE_sae)/(CE_abl − CE_clean) (SAELens "CE loss recovered").
	CELossClean, CELossWithSAE, CELossWithAblation, CELossScore float64
	// KL(P_clean ‖ P_new) per token; KLScore is (KL_abl − KL_sae)/KL_abl.
	KLWithSAE, KLWithAblation, KLScore float64

	Tokens []TokenFeatures

	// ProcessingWarning is non-empty when the model's weight processing is
	// not what the SAE was trained with (or the SAE does not say).
	ProcessingWarning string
}

// TokenFeatures lists the strongest latents at one token.
type TokenFeatures struct {
	Seq, Pos, Token int
	Active          int
	Top             []ActiveFeature
}

// Evaluate runs the model over windows (token rows of equal length, without
// BOS), reads the SAE's hook, and computes the reconstruction metrics and —
// unless ReconstructionOnly — the CE-loss and KL scores of splicing the SAE
// into the forward pass against zero-ablating the hook.
func Evaluate(ctx context.Context, m *gpt2.Model, s *SAE, windows [][]int, opts EvalOptions) (*EvalReport, error) {
	hook := opts.Hook
	if hook == "" {
		hook = s.Config.Metadata.HookName
	}
	if err := m.CheckHookName(hook); err != nil {
		return nil, fmt.Errorf("sae: evaluate: %w", err)
	}
	if len(windows) == 0 {
		return nil, fmt.Errorf("sae: evaluate: no token windows")
	}
	if opts.Batch <= 0 {
		opts.Batch = 8
	}
	if opts.TopFeatures <= 0 {
		opts.TopFeatures = 10
	}
	ignore := opts.IgnoreTokens
	if ignore == nil {
		ignore = []int{m.Config.BOSTokenID, m.Config.EOSTokenID}
	}
	head := s.Config.Metadata.HookHeadIndex
	rep := &EvalReport{Hook: hook, ProcessingWarning: ProcessingWarning(s.Config, hook, m.Processing)}
	acc := NewAccumulator(s.Config.DIn, s.Config.DSAE)
	var ceClean, ceSAE, ceAbl, klSAE, klAbl sum
	for start := 0; start < len(windows); start += opts.Batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch := windows[start:min(start+opts.Batch, len(windows))]
		logitsMode := gpt2.LogitsAll
		if opts.ReconstructionOnly {
			logitsMode = gpt2.LogitsNone
		}
		clean, err := m.Run(ctx, batch, gpt2.RunOptions{Cache: gpt2.HookName(hook), Logits: logitsMode, PrependBOS: opts.PrependBOS})
		if err != nil {
			return nil, fmt.Errorf("sae: evaluate: %w", err)
		}
		keep := keepMask(clean.Tokens, ignore) // per (row, pos): counted and spliced
		act := clean.Cache[hook]
		if act == nil {
			return nil, fmt.Errorf("sae: evaluate: the run did not reach %s", hook)
		}
		x, err := activationRows(act, head, false)
		if err != nil {
			return nil, err
		}
		if len(x)%s.Config.DIn != 0 || len(x)/s.Config.DIn != len(keep) {
			return nil, fmt.Errorf("sae: evaluate: hook %s gives rows of %d values, SAE d_in is %d", hook, len(x)/len(keep), s.Config.DIn)
		}
		acts, xhat, err := s.Reconstruct(x, len(keep))
		if err != nil {
			return nil, err
		}
		if err := acc.Add(selectRows(x, keep, s.Config.DIn), selectRows(acts, keep, s.Config.DSAE), selectRows(xhat, keep, s.Config.DIn), countTrue(keep)); err != nil {
			return nil, err
		}
		rep.addTokenReports(clean.Tokens, keep, acts, s.Config.DSAE, start, opts)
		if opts.ReconstructionOnly {
			continue
		}
		// One spliced and one ablated run, each scored and dropped before the
		// next ([batch, pos, vocab] logits are large).
		tokens := clean.Tokens
		ceClean.add(tokenCE(clean.Logits, tokens, keep))
		splice := gpt2.Hook{Match: gpt2.HookName(hook), Fn: func(a *gpt2.Activation) error {
			return writeRows(a, head, xhat, keep, s.Config.DIn)
		}}
		ablate := gpt2.Hook{Match: gpt2.HookName(hook), Fn: func(a *gpt2.Activation) error {
			if head == nil {
				clear(a.Data)
				return nil
			}
			return writeRows(a, head, make([]float32, len(xhat)), nil, s.Config.DIn)
		}}
		for _, run := range []struct {
			hook   gpt2.Hook
			ce, kl *sum
		}{{splice, &ceSAE, &klSAE}, {ablate, &ceAbl, &klAbl}} {
			res, err := m.Run(ctx, batch, gpt2.RunOptions{Hooks: []gpt2.Hook{run.hook}, PrependBOS: opts.PrependBOS})
			if err != nil {
				return nil, fmt.Errorf("sae: evaluate: %w", err)
			}
			run.ce.add(tokenCE(res.Logits, tokens, keep))
			run.kl.add(tokenKL(clean.Logits, res.Logits, keep))
		}
	}
	rep.Reconstruction = acc.Result()
	if !opts.ReconstructionOnly {
		rep.CELossClean, rep.CELossWithSAE, rep.CELossWithAblation = ceClean.mean(), ceSAE.mean(), ceAbl.mean()
		rep.CELossScore = (rep.CELossWithAblation - rep.CELossWithSAE) / (rep.CELossWithAblation - rep.CELossClean)
		rep.KLWithSAE, rep.KLWithAblation = klSAE.mean(), klAbl.mean()
		rep.KLScore = (rep.KLWithAblation - rep.KLWithSAE) / rep.KLWithAblation
	}
	return rep, nil
}

type sum struct {
	total float64
	n     int
}

func (s *sum) add(v []float64) {
	for _, x := range v {
		s.total += x
	}
	s.n += len(v)
}

func (s sum) mean() float64 { return s.total / float64(s.n) }

// keepMask marks, row-major over (row, position), the tokens not ignored.
func keepMask(tokens [][]int, ignore []int) []bool {
	var keep []bool
	for _, row := range tokens {
		for _, t := range row {
			keep = append(keep, !slices.Contains(ignore, t))
		}
	}
	return keep
}

func countTrue(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

func selectRows(v []float32, keep []bool, width int) []float32 {
	out := make([]float32, 0, countTrue(keep)*width)
	for r, k := range keep {
		if k {
			out = append(out, v[r*width:(r+1)*width]...)
		}
	}
	return out
}

// writeRows overwrites the hook activation with rows (one per position; one
// head's slice with head), except at positions keep marks false (nil keeps
// none out).
func writeRows(a *gpt2.Activation, head *int, rows []float32, keep []bool, dIn int) error {
	b, p := a.Shape[0], a.Shape[1]
	width := len(a.Data) / (b * p)
	off := 0
	if head != nil {
		if len(a.Shape) != 4 || *head < 0 || *head >= a.Shape[2] {
			return fmt.Errorf("sae: head index %d does not fit %s of shape %v", *head, a.Name, a.Shape)
		}
		off = *head * a.Shape[3]
	} else if width != dIn {
		return fmt.Errorf("sae: %s has %d values per position, SAE d_in is %d", a.Name, width, dIn)
	}
	if len(rows) != b*p*dIn {
		return fmt.Errorf("sae: %d reconstruction values for %s of shape %v", len(rows), a.Name, a.Shape)
	}
	for r := 0; r < b*p; r++ {
		if keep != nil && !keep[r] {
			continue
		}
		copy(a.Data[r*width+off:r*width+off+dIn], rows[r*dIn:(r+1)*dIn])
	}
	return nil
}

// tokenCE returns −log p(token[t+1]) at every kept position t < p−1 (kept
// means the input token at t is not ignored, as SAELens masks).
func tokenCE(logits *gpt2.Activation, tokens [][]int, keep []bool) []float64 {
	b, p, v := logits.Shape[0], logits.Shape[1], logits.Shape[2]
	var out []float64
	for i := 0; i < b; i++ {
		for t := 0; t < p-1; t++ {
			if !keep[i*p+t] {
				continue
			}
			row := logits.Data[(i*p+t)*v : (i*p+t+1)*v]
			out = append(out, logSumExp(row)-float64(row[tokens[i][t+1]]))
		}
	}
	return out
}

// tokenKL returns KL(softmax(clean) ‖ softmax(other)) at every kept position.
func tokenKL(clean, other *gpt2.Activation, keep []bool) []float64 {
	v := clean.Shape[2]
	n := len(clean.Data) / v
	out := make([]float64, 0, n)
	for r := 0; r < n; r++ {
		if !keep[r] {
			continue
		}
		c, o := clean.Data[r*v:(r+1)*v], other.Data[r*v:(r+1)*v]
		lc, lo := logSumExp(c), logSumExp(o)
		var kl float64
		for i := range c {
			lp := float64(c[i]) - lc
			kl += math.Exp(lp) * (lp - (float64(o[i]) - lo))
		}
		out = append(out, kl)
	}
	return out
}

func logSumExp(row []float32) float64 {
	m := float64(row[0])
	for _, x := range row {
		m = math.Max(m, float64(x))
	}
	var s float64
	for _, x := range row {
		s += math.Exp(float64(x) - m)
	}
	return m + math.Log(s)
}

func (rep *EvalReport) addTokenReports(tokens [][]int, keep []bool, acts []float32, dSAE, firstSeq int, opts EvalOptions) {
	p := len(tokens[0])
	for r, k := range keep {
		if len(rep.Tokens) >= opts.TokenReports {
			return
		}
		if !k {
			continue
		}
		row := acts[r*dSAE : (r+1)*dSAE]
		active := 0
		for _, v := range row {
			if v > 0 {
				active++
			}
		}
		rep.Tokens = append(rep.Tokens, TokenFeatures{
			Seq: firstSeq + r/p, Pos: r % p, Token: tokens[r/p][r%p], Active: active,
			Top: TopFeatures(row, 1, dSAE, opts.TopFeatures)[0],
		})
	}
}

// GPT2 converts the processing to package gpt2's options (unknown becomes
// none).
func (p Processing) GPT2() gpt2.Processing {
	return gpt2.Processing{FoldLN: p.FoldLN, CenterWritingWeights: p.CenterWritingWeights,
		CenterUnembed: p.CenterUnembed, FoldValueBiases: p.FoldValueBiases}
}

// ProcessingOf describes a model's processing for an SAE's cfg.
func ProcessingOf(p gpt2.Processing) Processing {
	return Processing{Known: true, FoldLN: p.FoldLN, CenterWritingWeights: p.CenterWritingWeights,
		CenterUnembed: p.CenterUnembed, FoldValueBiases: p.FoldValueBiases}
}

// ProcessingWarning says whether the activations at hook under the model's
// processing are the ones the SAE expects: center_writing_weights changes the
// residual stream, hook_embed/pos_embed, hook_attn_out, hook_mlp_out and
// hook_result; fold_ln changes hook_normalized; fold_value_biases changes
// hook_v, hook_z and hook_result; nothing changes mlp.hook_pre/post. It
// returns "" when they match.
func ProcessingWarning(c Config, hook string, model gpt2.Processing) string {
	type flag struct {
		name       string
		want, have bool
		affects    bool
	}
	last := hook[strings.LastIndex(hook, ".")+1:]
	resid := strings.HasPrefix(last, "hook_resid_") || last == "hook_embed" || last == "hook_pos_embed" ||
		last == "hook_attn_out" || last == "hook_mlp_out" || last == "hook_result"
	p := c.RequiresProcessing
	flags := []flag{
		{"center_writing_weights", p.CenterWritingWeights, model.CenterWritingWeights, resid},
		{"fold_ln", p.FoldLN, model.FoldLN, last == "hook_normalized"},
		{"fold_value_biases", p.FoldValueBiases, model.FoldValueBiases, last == "hook_v" || last == "hook_z" || last == "hook_result"},
	}
	if !p.Known {
		for _, f := range flags {
			if f.affects {
				return fmt.Sprintf("the SAE's cfg does not say which TransformerLens processing it was trained with, and %s changes %s; the model runs %s", f.name, hook, model)
			}
		}
		return ""
	}
	var msgs []string
	for _, f := range flags {
		if f.affects && f.want != f.have {
			msgs = append(msgs, fmt.Sprintf("%s=%v (model has %v)", f.name, f.want, f.have))
		}
	}
	if len(msgs) == 0 {
		return ""
	}
	return fmt.Sprintf("the SAE expects %s at %s; load the model with gpt2.Processing %+v (SAE.Config.RequiresProcessing.GPT2())",
		strings.Join(msgs, ", "), hook, p.GPT2())
}
