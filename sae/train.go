package sae

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"time"

	"github.com/factlens/factlens/gpt2/kernels"
)

// Source yields training activations. Synthetic data, tests and the model
// activation store (ModelSource) all implement it.
type Source interface {
	// DIn is the width of one activation row.
	DIn() int
	// Next fills dst (a whole number of rows) with the next rows.
	Next(ctx context.Context, dst []float32) error
}

// StatefulSource is a Source whose position can be saved in a checkpoint and
// restored, so that a resumed run continues with the data it would have seen.
type StatefulSource interface {
	Source
	MarshalState() ([]byte, error)
	UnmarshalState([]byte) error
}

// TrainConfig describes a training run. DefaultTrainConfig gives SAELens'
// defaults for the fields it has.
type TrainConfig struct {
	Architecture Architecture
	DIn, DSAE    int
	K            int // TopK

	L1Coefficient float64 // Standard: sparsity coefficient (SAELens l1_coefficient)
	L1WarmUpSteps int     // Standard: linear warm-up of the coefficient

	AuxKCoefficient   float64 // TopK: aux-k loss coefficient (SAELens aux_loss_coefficient; 0 turns it off)
	DeadFeatureWindow int     // steps without firing after which a latent counts as dead (SAELens 1000)

	// FeatureSamplingWindow is the number of steps over which feature
	// densities are counted for sparsity.safetensors (SAELens 2000).
	FeatureSamplingWindow int

	LR            float64 // Adam learning rate
	Beta1, Beta2  float64 // Adam betas (SAELens 0.9, 0.999)
	LRWarmUpSteps int     // linear warm-up from lr/warm-up
	LRDecaySteps  int     // linear decay to 0 over the last steps

	BatchSize int // activation rows per step (SAELens train_batch_size_tokens, 4096)
	Steps     int // training steps

	Seed uint64 // weight initialization

	// NormalizeActivations is "none" or "expected_average_only_in": inputs
	// are scaled by sqrt(d_in)/mean‖x‖, estimated over NormEstimateBatches
	// batches before training, and the factor is folded into the weights at
	// the end (the result's cfg says "none"), as SAELens does.
	NormalizeActivations string
	NormEstimateBatches  int

	// DecoderInitNorm is the norm of the decoder rows at initialization for
	// Standard SAEs (SAELens decoder_init_norm 0.1); TopK decoders start and
	// stay at unit norm.
	DecoderInitNorm  float64
	ApplyBDecToInput bool

	// CheckpointDir, when set, receives a checkpoint every CheckpointEvery
	// steps and at the end; KeepCheckpoints of them are kept (default 2).
	CheckpointDir   string
	CheckpointEvery int
	KeepCheckpoints int

	// Metadata and RequiresProcessing are written into the SAE's cfg.json.
	Metadata           Metadata
	RequiresProcessing Processing

	// Log, when set, receives one line every LogEvery steps.
	Log      io.Writer `json:"-"`
	LogEvery int
}

// DefaultTrainConfig returns SAELens' defaults for an SAE of the given shape
// (k only matters for TopK). Steps, and the CheckpointDir, are left to the
// caller.
func DefaultTrainConfig(arch Architecture, dIn, dSAE, k int) TrainConfig {
	return TrainConfig{
		Architecture: arch, DIn: dIn, DSAE: dSAE, K: k,
		L1Coefficient: 1, AuxKCoefficient: 1,
		DeadFeatureWindow: 1000, FeatureSamplingWindow: 2000,
		LR: 3e-4, Beta1: 0.9, Beta2: 0.999,
		BatchSize: 4096, NormalizeActivations: NormNone, NormEstimateBatches: 100,
		DecoderInitNorm: 0.1, ApplyBDecToInput: true,
		KeepCheckpoints: 2, LogEvery: 100,
	}
}

// Validate checks the fields a run needs.
func (c TrainConfig) Validate() error {
	sc := Config{Architecture: c.Architecture, DIn: c.DIn, DSAE: c.DSAE, K: c.K, Normalization: NormNone}
	if err := sc.Validate(); err != nil {
		return err
	}
	if c.Architecture == JumpReLU {
		return errors.New("sae: training JumpReLU SAEs is not implemented (standard and topk are)")
	}
	switch {
	case c.Steps <= 0:
		return fmt.Errorf("sae: train: steps %d must be positive", c.Steps)
	case c.BatchSize <= 0:
		return fmt.Errorf("sae: train: batch size %d must be positive", c.BatchSize)
	case !(c.LR > 0):
		return fmt.Errorf("sae: train: learning rate %v must be positive", c.LR)
	case c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1:
		return fmt.Errorf("sae: train: Adam betas %v, %v must be in [0, 1)", c.Beta1, c.Beta2)
	case c.LRWarmUpSteps < 0 || c.LRDecaySteps < 0 || c.LRWarmUpSteps+c.LRDecaySteps > c.Steps:
		return fmt.Errorf("sae: train: warm-up %d + decay %d steps exceed %d steps", c.LRWarmUpSteps, c.LRDecaySteps, c.Steps)
	case c.DeadFeatureWindow <= 0 || c.FeatureSamplingWindow <= 0:
		return errors.New("sae: train: dead-feature and feature-sampling windows must be positive")
	case c.CheckpointDir != "" && c.CheckpointEvery <= 0:
		return errors.New("sae: train: CheckpointEvery must be positive with a CheckpointDir")
	}
	switch c.NormalizeActivations {
	case NormNone, "":
	case NormExpectedAverageOnlyIn:
		if c.NormEstimateBatches <= 0 {
			return errors.New("sae: train: expected_average_only_in needs NormEstimateBatches > 0")
		}
	default:
		return fmt.Errorf("sae: train: normalize_activations %q: training supports none and expected_average_only_in", c.NormalizeActivations)
	}
	return nil
}

// StepStats summarizes one logged training step.
type StepStats struct {
	Step               int // steps done
	Tokens             int64
	Loss, MSE, L1, Aux float64
	L0                 float64
	ExplainedVariance  float64 // of the batch: 1 − Σ‖x−x̂‖² / Σ‖x − x̄‖²
	Dead               int     // latents not fired for DeadFeatureWindow steps
	LR                 float64
	TokensPerSecond    float64
}

// Trainer trains one SAE. It holds everything a checkpoint must restore.
type Trainer struct {
	cfg        TrainConfig
	sae        *SAE // raw weights, in the normalized input space
	opt        *adam
	step       int
	tokens     int64
	normFactor float64 // 0 until estimated; 1 without normalization

	sinceFired  []int32   // steps since each latent last fired
	actCount    []float32 // firings in the current sampling window
	windowSteps int
	windowRows  int64
	lastDensity []float32 // densities of the last complete window

	History []StepStats // one entry per logged step

	ws   workspace
	g    *grads
	xbuf []float32

	pendingSourceState []byte // from a checkpoint, applied to the next Run's source
}

// NewTrainer initializes an SAE as SAELens does: W_dec Kaiming-uniform rows
// scaled to DecoderInitNorm (unit norm for TopK), W_enc = W_decᵀ, zero biases.
func NewTrainer(cfg TrainConfig) (*Trainer, error) {
	if cfg.KeepCheckpoints == 0 {
		cfg.KeepCheckpoints = 2
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &SAE{Config: cfg.saeConfig()}
	dIn, dSAE := cfg.DIn, cfg.DSAE
	s.WDec = make([]float32, dSAE*dIn)
	s.WEnc = make([]float32, dIn*dSAE)
	s.BEnc = make([]float32, dSAE)
	s.BDec = make([]float32, dIn)
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5ae))
	// torch.nn.init.kaiming_uniform_ on [d_sae, d_in]: fan_in d_in, gain √2.
	bound := math.Sqrt(6 / float64(dIn))
	for i := range s.WDec {
		s.WDec[i] = float32((2*rng.Float64() - 1) * bound)
	}
	norm := cfg.DecoderInitNorm
	if cfg.Architecture == TopK || norm <= 0 {
		norm = 1
	}
	for j := 0; j < dSAE; j++ {
		row := s.WDec[j*dIn : (j+1)*dIn]
		n := math.Sqrt(float64(kernels.Dot(row, row)))
		for i := range row {
			row[i] = float32(float64(row[i]) * norm / n)
		}
	}
	transposeInto(s.WEnc, s.WDec, dSAE, dIn)
	t := &Trainer{cfg: cfg, sae: s}
	t.initState()
	return t, nil
}

func (c TrainConfig) saeConfig() Config {
	return Config{
		Architecture: c.Architecture, DIn: c.DIn, DSAE: c.DSAE, K: c.K,
		ApplyBDecToInput: c.ApplyBDecToInput, Normalization: NormNone, ReshapeActivations: "none",
		DType: "float32", Device: "cpu", Metadata: c.Metadata, RequiresProcessing: c.RequiresProcessing,
	}
}

func (t *Trainer) initState() {
	c := t.cfg
	t.opt = newAdam(c.Beta1, c.Beta2, 1e-8, c.DIn*c.DSAE, c.DSAE, c.DSAE*c.DIn, c.DIn)
	t.sinceFired = make([]int32, c.DSAE)
	t.actCount = make([]float32, c.DSAE)
	t.g = newGrads(t.sae.Config)
	if c.NormalizeActivations != NormExpectedAverageOnlyIn {
		t.normFactor = 1
	}
}

// Step returns the number of steps done.
func (t *Trainer) Step() int { return t.step }

// Config returns the run's configuration.
func (t *Trainer) Config() TrainConfig { return t.cfg }

// Run trains until cfg.Steps steps are done, checkpointing as configured, and
// returns the trained SAE with any normalization factor folded in. When ctx
// is cancelled it stops between steps and returns ctx's error; checkpoints
// already written stay intact, and ResumeTrainer continues from the last.
func (t *Trainer) Run(ctx context.Context, src Source) (*SAE, error) {
	c := t.cfg
	if src.DIn() != c.DIn {
		return nil, fmt.Errorf("sae: train: source rows have %d values, SAE d_in is %d", src.DIn(), c.DIn)
	}
	if cap(t.xbuf) < c.BatchSize*c.DIn {
		t.xbuf = make([]float32, c.BatchSize*c.DIn)
	}
	x := t.xbuf[:c.BatchSize*c.DIn]
	if t.pendingSourceState != nil {
		if ss, ok := src.(StatefulSource); ok {
			if err := ss.UnmarshalState(t.pendingSourceState); err != nil {
				return nil, fmt.Errorf("sae: resume: source state: %w", err)
			}
		}
		t.pendingSourceState = nil
	}
	if t.normFactor == 0 {
		f, err := estimateNormFactor(ctx, src, x, c.DIn, c.NormEstimateBatches)
		if err != nil {
			return nil, err
		}
		t.normFactor = f
	}
	start, startTokens := time.Now(), t.tokens
	params := [][]float32{t.sae.WEnc, t.sae.BEnc, t.sae.WDec, t.sae.BDec}
	grads := [][]float32{t.g.WEnc, t.g.BEnc, t.g.WDec, t.g.BDec}
	for t.step < c.Steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := src.Next(ctx, x); err != nil {
			return nil, fmt.Errorf("sae: train: step %d: %w", t.step, err)
		}
		if t.normFactor != 1 {
			f := float32(t.normFactor)
			for i := range x {
				x[i] *= f
			}
		}
		o := lossOptions{L1: c.L1Coefficient * l1Factor(t.step, c.L1WarmUpSteps)}
		var dead int
		if c.Architecture == TopK && c.AuxKCoefficient != 0 {
			o.AuxCoeff = c.AuxKCoefficient
			o.DeadMask = make([]bool, c.DSAE)
			for j, n := range t.sinceFired {
				if int(n) > c.DeadFeatureWindow {
					o.DeadMask[j] = true
					dead++
				}
			}
		}
		parts, err := lossAndGrad(t.sae, x, c.BatchSize, o, &t.ws, t.g)
		if err != nil {
			return nil, err
		}
		if math.IsNaN(parts.Total) || math.IsInf(parts.Total, 0) {
			return nil, fmt.Errorf("sae: train: loss is %v at step %d (learning rate %v too high?)", parts.Total, t.step, c.LR)
		}
		if c.Architecture == TopK {
			removeParallelComponent(t.g.WDec, t.sae.WDec, c.DSAE, c.DIn)
		}
		lr := c.LR * lrFactor(t.step, c.Steps, c.LRWarmUpSteps, c.LRDecaySteps)
		t.opt.update(lr, params, grads)
		if c.Architecture == TopK {
			normalizeRows(t.sae.WDec, c.DSAE, c.DIn)
		}
		t.recordFiring(c.BatchSize)
		t.step++
		t.tokens += int64(c.BatchSize)
		if c.LogEvery > 0 && (t.step%c.LogEvery == 0 || t.step == c.Steps) {
			if c.Architecture != TopK {
				dead = t.countDead()
			}
			st := StepStats{
				Step: t.step, Tokens: t.tokens, Loss: parts.Total, MSE: parts.MSE, L1: parts.L1,
				Aux: parts.Aux, L0: parts.L0, ExplainedVariance: 1 - parts.MSE/batchVariance(x, c.BatchSize, c.DIn),
				Dead: dead, LR: lr,
				TokensPerSecond: float64(t.tokens-startTokens) / time.Since(start).Seconds(),
			}
			t.History = append(t.History, st)
			if c.Log != nil {
				fmt.Fprintf(c.Log, "step %d/%d  loss %.5g  mse %.5g  l1 %.4g  aux %.4g  L0 %.1f  EV %.4f  dead %d  lr %.3g  %.0f tok/s\n",
					st.Step, c.Steps, st.Loss, st.MSE, st.L1, st.Aux, st.L0, st.ExplainedVariance, st.Dead, st.LR, st.TokensPerSecond)
			}
		}
		if c.CheckpointDir != "" && (t.step%c.CheckpointEvery == 0 || t.step == c.Steps) {
			if err := t.saveCheckpoint(src); err != nil {
				return nil, err
			}
		}
	}
	return t.Result(), nil
}

// Result returns a copy of the current SAE with the normalization factor
// folded in and the feature densities of the last sampling window as
// LogSparsity (log10(density + 1e-10), as SAELens saves it).
func (t *Trainer) Result() *SAE {
	s := t.sae
	out := &SAE{
		Config: s.Config,
		WEnc:   append([]float32(nil), s.WEnc...), BEnc: append([]float32(nil), s.BEnc...),
		WDec: append([]float32(nil), s.WDec...), BDec: append([]float32(nil), s.BDec...),
	}
	if t.normFactor != 0 && t.normFactor != 1 {
		out.FoldNormScalingFactor(t.normFactor)
	}
	if d := t.densities(); d != nil {
		out.LogSparsity = make([]float32, len(d))
		for j, v := range d {
			out.LogSparsity[j] = float32(math.Log10(float64(v) + 1e-10))
		}
	}
	return out
}

// NormFactor is the expected_average_only_in factor (1 without
// normalization, 0 before it has been estimated).
func (t *Trainer) NormFactor() float64 { return t.normFactor }

func (t *Trainer) recordFiring(rows int) {
	for j, f := range t.ws.fired {
		if f {
			t.sinceFired[j] = 0
		} else if t.sinceFired[j] < math.MaxInt32 {
			t.sinceFired[j]++
		}
	}
	for _, j := range t.ws.acts.idx {
		t.actCount[j]++
	}
	t.windowSteps++
	t.windowRows += int64(rows)
	if t.windowSteps >= t.cfg.FeatureSamplingWindow {
		t.lastDensity = t.densities()
		clear(t.actCount)
		t.windowSteps, t.windowRows = 0, 0
	}
}

func (t *Trainer) countDead() int {
	n := 0
	for _, v := range t.sinceFired {
		if int(v) > t.cfg.DeadFeatureWindow {
			n++
		}
	}
	return n
}

// densities returns the firing fraction of every latent over the current
// window, or over the last complete one when the current one is empty.
func (t *Trainer) densities() []float32 {
	if t.windowRows == 0 {
		return t.lastDensity
	}
	d := make([]float32, len(t.actCount))
	for j, c := range t.actCount {
		d[j] = c / float32(t.windowRows)
	}
	return d
}

// estimateNormFactor returns sqrt(d_in)/mean‖x‖ over n batches (SAELens'
// ActivationScaler: the mean of the per-batch mean norms). Those batches are
// consumed, as in SAELens.
func estimateNormFactor(ctx context.Context, src Source, buf []float32, dIn, n int) (float64, error) {
	rows := len(buf) / dIn
	var sum float64
	for b := 0; b < n; b++ {
		if err := src.Next(ctx, buf); err != nil {
			return 0, fmt.Errorf("sae: estimating the norm scaling factor: %w", err)
		}
		var batch float64
		for r := 0; r < rows; r++ {
			row := buf[r*dIn : (r+1)*dIn]
			var ss float64
			for _, v := range row {
				ss += float64(v) * float64(v)
			}
			batch += math.Sqrt(ss)
		}
		sum += batch / float64(rows)
	}
	mean := sum / float64(n)
	if !(mean > 0) {
		return 0, errors.New("sae: estimating the norm scaling factor: activations are all zero")
	}
	return math.Sqrt(float64(dIn)) / mean, nil
}

// removeParallelComponent projects each decoder row's gradient onto the
// tangent space of the unit sphere (g −= (g·w)w for unit w), so that the
// step followed by renormalization moves along the sphere (OpenAI's
// unit_norm_decoder_grad_adjustment).
func removeParallelComponent(g, w []float32, rows, cols int) {
	parallelRows(rows, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			gj, wj := g[j*cols:(j+1)*cols], w[j*cols:(j+1)*cols]
			kernels.Axpy(-kernels.Dot(gj, wj)/kernels.Dot(wj, wj), wj, gj)
		}
	})
}

func normalizeRows(w []float32, rows, cols int) {
	parallelRows(rows, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			r := w[j*cols : (j+1)*cols]
			n := float32(math.Sqrt(float64(kernels.Dot(r, r))))
			if n > 0 {
				for i := range r {
					r[i] /= n
				}
			}
		}
	})
}

// batchVariance is Σ_b ‖x_b − x̄‖² / n, the denominator of SAELens'
// training-log explained variance.
func batchVariance(x []float32, n, d int) float64 {
	mean := make([]float64, d)
	for r := 0; r < n; r++ {
		for i, v := range x[r*d : (r+1)*d] {
			mean[i] += float64(v)
		}
	}
	for i := range mean {
		mean[i] /= float64(n)
	}
	var ss float64
	for r := 0; r < n; r++ {
		for i, v := range x[r*d : (r+1)*d] {
			dv := float64(v) - mean[i]
			ss += dv * dv
		}
	}
	return ss / float64(n)
}

// Train runs a fresh Trainer to completion.
func Train(ctx context.Context, cfg TrainConfig, src Source) (*SAE, *Trainer, error) {
	t, err := NewTrainer(cfg)
	if err != nil {
		return nil, nil, err
	}
	s, err := t.Run(ctx, src)
	return s, t, err
}
