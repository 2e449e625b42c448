package toy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// TrainConfig controls training. Seed fixes the initial weights and the
// order of the batches; with the world's seed it fixes the whole run.
type TrainConfig struct {
	Seed        uint64  `json:"seed"`
	LR          float64 `json:"lr"`           // Adam step size; 0 means 1e-3
	Beta1       float64 `json:"beta1"`        // 0 means 0.9
	Beta2       float64 `json:"beta2"`        // 0 means 0.99
	WeightDecay float64 `json:"weight_decay"` // decoupled (AdamW); 0 is none
	BatchSize   int     `json:"batch_size"`   // facts per step; 0 means 128 (all facts if fewer)
	MaxSteps    int     `json:"max_steps"`    // 0 means 20000
	// MinSteps is the least training a run gets before Patience may stop
	// it; 0 means 8000. Large worlds sit at chance for thousands of steps
	// (4,096 facts on 32 neurons: about 4,500) before recall takes off, and
	// stopping there would report an untrainable world as a full one.
	MinSteps  int `json:"min_steps"`
	EvalEvery int `json:"eval_every"` // steps between recall measurements; 0 means 250
	// Patience stops training when this many measurements in a row made no
	// progress: recalled no more facts than the best so far and lowered the
	// best mean loss by less than 1%; 0 means 10. Training also stops when
	// every fact is recalled.
	Patience  int `json:"patience"`
	SaveEvery int `json:"save_every"` // steps between checkpoints; 0 means 2000
}

func (c TrainConfig) withDefaults() (TrainConfig, error) {
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.LR, 1e-3)
	def(&c.Beta1, 0.9)
	def(&c.Beta2, 0.99)
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defInt(&c.BatchSize, 128)
	defInt(&c.MaxSteps, 20000)
	defInt(&c.MinSteps, 8000)
	defInt(&c.EvalEvery, 250)
	defInt(&c.Patience, 10)
	defInt(&c.SaveEvery, 2000)
	switch {
	case c.LR < 0 || c.WeightDecay < 0:
		return c, fmt.Errorf("toy: negative learning rate or weight decay")
	case c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1:
		return c, fmt.Errorf("toy: Adam betas %v, %v: want [0, 1)", c.Beta1, c.Beta2)
	case c.BatchSize < 1 || c.MaxSteps < 1 || c.MinSteps < 0 || c.EvalEvery < 1 || c.Patience < 1 || c.SaveEvery < 1:
		return c, fmt.Errorf("toy: batch size, steps, eval and save intervals and patience must be positive")
	}
	return c, nil
}

// trajectory keeps the settings that change the weights a run produces,
// zeroing the limits and intervals that only decide when to stop, measure
// and save.
func (c TrainConfig) trajectory() TrainConfig {
	c.MaxSteps, c.MinSteps, c.EvalEvery, c.Patience, c.SaveEvery = 0, 0, 0, 0, 0
	return c
}

// EvalPoint is one recall measurement during training.
type EvalPoint struct {
	Step     int     `json:"step"`
	Accuracy float64 `json:"accuracy"`
	Correct  int     `json:"correct"`
	MeanLoss float64 `json:"mean_loss"`
	Seconds  float64 `json:"seconds"` // training time so far, evaluations excluded
}

// TrainState is training.json: the settings of a run and how far it got.
type TrainState struct {
	World WorldConfig `json:"world"`
	Model ModelConfig `json:"model"`
	Train TrainConfig `json:"train"`
	Facts int         `json:"facts"`
	Step  int         `json:"step"`
	// BestCorrect is the most facts recalled and BestLoss the lowest mean
	// loss at any measurement; BestStep is the last step either improved
	// (see TrainConfig.Patience) and Stale counts the measurements since.
	BestCorrect int         `json:"best_correct"`
	BestLoss    float64     `json:"best_loss"`
	BestStep    int         `json:"best_step"`
	Stale       int         `json:"stale"`
	Done        bool        `json:"done"`
	StopReason  string      `json:"stop_reason,omitempty"`
	Seconds     float64     `json:"seconds"` // training time, evaluations excluded
	History     []EvalPoint `json:"history"`
	Final       *Recall     `json:"final,omitempty"`
}

// StepsPerSecond is the training speed of the run so far.
func (s *TrainState) StepsPerSecond() float64 {
	if s.Seconds <= 0 {
		return 0
	}
	return float64(s.Step) / s.Seconds
}

// Options says what to train and where to keep it.
type Options struct {
	World WorldConfig
	Model ModelConfig
	Train TrainConfig
	// Dir, when set, receives checkpoints (a toy model folder) every
	// SaveEvery steps and at the end, replacing what it holds. With Resume,
	// training continues from the checkpoint in Dir, which must have been
	// made with the same settings (MaxSteps, EvalEvery, Patience and
	// SaveEvery may differ: they do not change the weights).
	Dir    string
	Resume bool
	// NoResumeState leaves optimizer.safetensors out of Dir: the folder is
	// then a finished model that cannot be resumed (the shipped demo).
	NoResumeState bool
	// Progress, when set, is called after every recall measurement.
	Progress func(st *TrainState)
}

// Validate checks the settings without training.
func (o Options) Validate() error {
	if _, err := NewWorld(o.World); err != nil {
		return err
	}
	if _, err := o.Model.withDefaults(); err != nil {
		return err
	}
	_, err := o.Train.withDefaults()
	return err
}

// Result is a trained model in memory.
type Result struct {
	Config *weights.Config
	Params []weights.Tensor
	Vocab  *Vocabulary
	World  *World
	State  *TrainState
	// Examples are the world's facts as token ids, in World.Facts order.
	Examples []Example
	// Model runs Params with the ordinary forward pass.
	Model *gpt2.Model
}

// Save writes the model as a toy model folder (without optimizer state).
func (r *Result) Save(dir string) error {
	return writeFolder(dir, r.Config, r.Params, r.Vocab, r.World, r.State)
}

// memModel wraps parameter slices in a Model without copying them: the
// model sees every later in-place update of the slices.
func memModel(cfg *weights.Config, params []weights.Tensor) (*gpt2.Model, error) {
	ck := &weights.Checkpoint{Config: cfg, Source: weights.Source{Ref: "toy model in training"}, Params: map[string]*weights.Param{}}
	for _, t := range params {
		ck.Params[t.Name] = &weights.Param{Name: t.Name, Shape: t.Shape, Data: t.Data, StoredDType: "F32"}
	}
	return gpt2.FromCheckpoint(ck, gpt2.Processing{})
}

// batchOrder returns the fact indices of one epoch: a permutation seeded by
// the run's seed and the epoch number, so that a resumed run sees exactly
// the batches an uninterrupted one would.
func batchOrder(seed uint64, epoch, n int) []int {
	return rand.New(rand.NewPCG(seed, 0x626174636800+uint64(epoch))).Perm(n)
}

// batchAt returns the fact indices of training step s (counted from 0).
func batchAt(seed uint64, s, n, size int) []int {
	size = min(size, n)
	perEpoch := (n + size - 1) / size
	epoch, k := s/perEpoch, s%perEpoch
	order := batchOrder(seed, epoch, n)
	return order[k*size : min(n, (k+1)*size)]
}

// loadResume reads the state of an interrupted run from dir, checking its
// settings against opts. It returns nil, nil when dir holds no run.
func loadResume(dir string, world WorldConfig, model ModelConfig, train TrainConfig) (*TrainState, error) {
	st, err := readTrainState(filepath.Join(dir, TrainingFile))
	if err != nil {
		if _, serr := os.Stat(filepath.Join(dir, TrainingFile)); errors.Is(serr, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	if !reflect.DeepEqual(st.World, world) || st.Model != model || st.Train.trajectory() != train.trajectory() {
		return nil, fmt.Errorf("toy: %s was trained with other settings (world %+v, model %+v, train %+v); resume with those or use another folder", dir, st.World, st.Model, st.Train)
	}
	return st, nil
}

// record adds a measurement to the state and applies the stopping rule.
func (s *TrainState) record(p EvalPoint) {
	s.History = append(s.History, p)
	first := len(s.History) == 1
	progress := first || p.Correct > s.BestCorrect || p.MeanLoss < 0.99*s.BestLoss
	if first || p.Correct > s.BestCorrect {
		s.BestCorrect = p.Correct
	}
	if first || p.MeanLoss < s.BestLoss {
		s.BestLoss = p.MeanLoss
	}
	if progress {
		s.BestStep, s.Stale = p.Step, 0
	} else {
		s.Stale++
	}
	switch {
	case p.Correct == s.Facts:
		s.Done, s.StopReason = true, "every fact recalled"
	case s.Stale >= s.Train.Patience && s.Step >= s.Train.MinSteps:
		s.Done, s.StopReason = true, fmt.Sprintf("no progress in %d measurements (%d steps)", s.Stale, s.Stale*s.Train.EvalEvery)
	case s.Step >= s.Train.MaxSteps:
		s.Done, s.StopReason = true, fmt.Sprintf("reached max steps (%d)", s.Train.MaxSteps)
	}
}

// since returns seconds elapsed since t.
func since(t time.Time) float64 { return time.Since(t).Seconds() }

// adam is Adam with decoupled weight decay (AdamW) over float32 parameters,
// with its moments kept in float32 so that they can be saved exactly.
type adam struct {
	lr, beta1, beta2, eps, decay float64
	t                            int
	m, v                         [][]float32
}

func newAdam(cfg TrainConfig, params []weights.Tensor) *adam {
	a := &adam{lr: cfg.LR, beta1: cfg.Beta1, beta2: cfg.Beta2, eps: 1e-8, decay: cfg.WeightDecay}
	for _, p := range params {
		a.m = append(a.m, make([]float32, len(p.Data)))
		a.v = append(a.v, make([]float32, len(p.Data)))
	}
	return a
}

// step applies one update with gradients grads[i] for params[i].
func (a *adam) step(params []weights.Tensor, grads [][]float32) {
	a.t++
	c1 := 1 - math.Pow(a.beta1, float64(a.t))
	c2 := 1 - math.Pow(a.beta2, float64(a.t))
	for i, p := range params {
		g, m, v := grads[i], a.m[i], a.v[i]
		for j, x := range p.Data {
			gj := float64(g[j])
			mj := a.beta1*float64(m[j]) + (1-a.beta1)*gj
			vj := a.beta2*float64(v[j]) + (1-a.beta2)*gj*gj
			m[j], v[j] = float32(mj), float32(vj)
			upd := a.lr * (mj / c1) / (math.Sqrt(vj/c2) + a.eps)
			if a.decay > 0 {
				upd += a.lr * a.decay * float64(x)
			}
			p.Data[j] = float32(float64(x) - upd)
		}
	}
}

// Train trains a toy model on its world until recall stops improving (see
// TrainConfig.Patience), every fact is recalled, or MaxSteps. Gradients come
// from gpt2.Model.Gradients (spago autodiff over the GPT-2 forward); the
// objective is the cross-entropy of the answer token at the last position
// over the whole vocabulary.
func Train(ctx context.Context, opts Options) (*Result, error) {
	wc, err := opts.World.withDefaults()
	if err != nil {
		return nil, err
	}
	mc, err := opts.Model.withDefaults()
	if err != nil {
		return nil, err
	}
	tc, err := opts.Train.withDefaults()
	if err != nil {
		return nil, err
	}
	world, err := NewWorld(wc)
	if err != nil {
		return nil, err
	}
	vocab := NewVocabulary()
	tok, err := vocab.Tokenizer()
	if err != nil {
		return nil, err
	}
	examples, err := Encode(tok, world.Facts())
	if err != nil {
		return nil, err
	}
	cfg, err := mc.WeightsConfig(vocab)
	if err != nil {
		return nil, err
	}

	var params []weights.Tensor
	var opt *adam
	st := &TrainState{World: wc, Model: mc, Train: tc, Facts: len(examples)}
	if opts.Resume && opts.Dir != "" {
		prev, err := loadResume(opts.Dir, wc, mc, tc)
		if err != nil {
			return nil, err
		}
		if prev != nil {
			if params, opt, err = loadTrainingCheckpoint(opts.Dir, cfg, tc); err != nil {
				return nil, err
			}
			if opt.t != prev.Step {
				return nil, fmt.Errorf("toy: %s: optimizer state is at step %d but %s at step %d", opts.Dir, opt.t, TrainingFile, prev.Step)
			}
			st = prev
			// Limits that do not change the trajectory may differ on resume:
			// training longer is continuing a finished run.
			st.Train = tc
			st.Done, st.StopReason = false, ""
			if (st.Stale >= tc.Patience && st.Step >= tc.MinSteps) || st.Step >= tc.MaxSteps || st.BestCorrect == st.Facts {
				st.Done = true
				st.StopReason = "already finished under these limits"
			}
		}
	}
	if params == nil {
		params = InitParams(cfg, tc.Seed)
		opt = newAdam(tc, params)
	}
	m, err := memModel(cfg, params)
	if err != nil {
		return nil, err
	}
	res := &Result{Config: cfg, Params: params, Vocab: vocab, World: world, State: st, Examples: examples, Model: m}
	save := func() error {
		if opts.Dir == "" {
			return nil
		}
		if err := res.Save(opts.Dir); err != nil {
			return err
		}
		if opts.NoResumeState {
			return nil
		}
		return saveOptimizer(filepath.Join(opts.Dir, OptimizerFile), params, opt)
	}

	grads := make([][]float32, len(params))
	for i, p := range params {
		grads[i] = make([]float32, len(p.Data))
	}
	for !st.Done {
		start := time.Now()
		for k := 0; k < tc.EvalEvery && st.Step < tc.MaxSteps; k++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			batch := batchAt(tc.Seed, st.Step, len(examples), tc.BatchSize)
			if err := batchGradients(ctx, m, params, examples, batch, grads); err != nil {
				return nil, err
			}
			opt.step(params, grads)
			st.Step++
			if st.Step%tc.SaveEvery == 0 {
				st.Seconds += since(start)
				if err := save(); err != nil {
					return nil, err
				}
				start = time.Now()
			}
		}
		st.Seconds += since(start)
		rec, err := Evaluate(ctx, m, examples)
		if err != nil {
			return nil, err
		}
		st.record(EvalPoint{Step: st.Step, Accuracy: rec.Accuracy, Correct: rec.Correct, MeanLoss: rec.MeanLoss, Seconds: st.Seconds})
		if opts.Progress != nil {
			opts.Progress(st)
		}
	}
	rec, err := Evaluate(ctx, m, examples)
	if err != nil {
		return nil, err
	}
	st.Final = rec
	if err := save(); err != nil {
		return nil, err
	}
	return res, nil
}

// batchGradients sets grads to the gradient of the mean answer
// cross-entropy over the batch. Prompts of different lengths run as
// separate passes, weighted by their share of the batch.
func batchGradients(ctx context.Context, m *gpt2.Model, params []weights.Tensor, examples []Example, batch []int, grads [][]float32) error {
	for _, g := range grads {
		clear(g)
	}
	sub := make([]Example, len(batch))
	for i, idx := range batch {
		sub[i] = examples[idx]
	}
	for _, group := range groupByLength(sub, len(sub)) {
		rows := make([][]int, len(group))
		targets := make([][]int, len(group))
		for i, j := range group {
			rows[i] = sub[j].Tokens
			targets[i] = []int{sub[j].Answer}
		}
		res, err := m.Gradients(ctx, rows, gpt2.GradOptions{
			RunOptions: gpt2.RunOptions{Logits: gpt2.LogitsLast},
			ParamGrads: true,
		}, gpt2.CrossEntropyObjective(targets, nil))
		if err != nil {
			return fmt.Errorf("toy: gradients: %w", err)
		}
		share := float32(len(group)) / float32(len(sub))
		for i, p := range params {
			g, ok := res.ParamGrads[p.Name]
			if !ok {
				continue
			}
			if len(g) != len(p.Data) {
				return fmt.Errorf("toy: gradient of %s has %d values, want %d", p.Name, len(g), len(p.Data))
			}
			for j, v := range g {
				grads[i][j] += share * v
			}
		}
	}
	return nil
}

// saveOptimizer writes Adam's moments and step count.
func saveOptimizer(path string, params []weights.Tensor, opt *adam) error {
	var ts []weights.Tensor
	for i, p := range params {
		ts = append(ts, weights.Tensor{Name: "m." + p.Name, Shape: p.Shape, Data: opt.m[i]},
			weights.Tensor{Name: "v." + p.Name, Shape: p.Shape, Data: opt.v[i]})
	}
	return weights.WriteSafetensors(path, ts, map[string]string{"adam_step": strconv.Itoa(opt.t)})
}

// loadTrainingCheckpoint reads the weights and optimizer state of an
// interrupted run into fresh, writable buffers.
func loadTrainingCheckpoint(dir string, cfg *weights.Config, tc TrainConfig) ([]weights.Tensor, *adam, error) {
	ck, err := weights.OpenCheckpoint(dir)
	if err != nil {
		return nil, nil, err
	}
	defer ck.Close()
	if !reflect.DeepEqual(ck.Config, cfg) {
		return nil, nil, fmt.Errorf("toy: %s: config.json differs from the settings in %s", dir, TrainingFile)
	}
	var params []weights.Tensor
	for _, spec := range cfg.ParamSpecs() {
		p := ck.Params[spec.Name]
		params = append(params, weights.Tensor{Name: spec.Name, Shape: slices.Clone(p.Shape), Data: slices.Clone(p.Data)})
	}
	path := filepath.Join(dir, OptimizerFile)
	f, err := weights.OpenSafetensors(path)
	if err != nil {
		return nil, nil, fmt.Errorf("toy: cannot resume without the optimizer state: %w", err)
	}
	defer f.Close()
	opt := newAdam(tc, params)
	if opt.t, err = strconv.Atoi(f.Metadata()["adam_step"]); err != nil {
		return nil, nil, fmt.Errorf("toy: %s: no valid adam_step in its metadata", path)
	}
	for i, p := range params {
		for _, mv := range []struct {
			prefix string
			dst    []float32
		}{{"m.", opt.m[i]}, {"v.", opt.v[i]}} {
			data, err := f.Float32(mv.prefix + p.Name)
			if err != nil {
				return nil, nil, fmt.Errorf("toy: %s: %w", path, err)
			}
			if len(data) != len(mv.dst) {
				return nil, nil, fmt.Errorf("toy: %s: %s%s has %d values, want %d", path, mv.prefix, p.Name, len(data), len(mv.dst))
			}
			copy(mv.dst, data)
		}
	}
	return params, opt, nil
}
