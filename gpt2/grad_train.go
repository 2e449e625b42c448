package gpt2

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/factlens/factlens/weights"
	"github.com/nlpodyssey/spago/mat"
	"github.com/nlpodyssey/spago/nn"
)

// Trainable is a GPT-2 that owns its parameters, for training small models.
//
// Its parameters are spago params (nn.Param over mat.Dense[float32]) whose
// data is the very memory Model() runs on, so an update to a param — by
// AdamW.Step, or by any spago optimizer through
// optimizers.New(nn.StreamParams(t.Params()), strategy) — is what the next
// forward sees. A training step is:
//
//	res, err := t.Backward(ctx, batch, GradOptions{}, CrossEntropyObjective(NextTokenTargets(batch, nil), nil))
//	// res.Value is the loss; gradients are now in each param's Grad()
//	t.ClipGradNorm(1)        // optional
//	opt.Step(lr)             // opt := NewAdamW(t, AdamWConfig{...}); zeroes the gradients
//
// Backward adds to the gradients already there (accumulation over
// micro-batches); ZeroGrad clears them. Do not call Model().Run or
// Gradients concurrently with Backward's forward pass or an update, and do
// not replace a param's value (nn.Param.ReplaceValue): the model would no
// longer see it. Save with weights.SaveCheckpoint(dir, &t.Model().Config,
// t.Tensors(), opts).
type Trainable struct {
	model  *Model
	names  []string
	params []*nn.Param
	leaves map[*float32]mat.Tensor
}

// Trainable returns a trainable copy of m: every parameter is copied, so
// the original (and its checkpoint, possibly a read-only mmap) is never
// written. m must be unprocessed: weight processing folds LayerNorms away
// and is for analysis, not training.
func (m *Model) Trainable() (*Trainable, error) {
	if m.Processing != (Processing{}) {
		return nil, fmt.Errorf("gpt2: trainable copy of a model under processing %s: load it without processing", m.Processing)
	}
	cfg := m.Config
	ck := &weights.Checkpoint{Config: &cfg, Source: m.Source, Params: map[string]*weights.Param{}}
	for _, p := range m.paramList() {
		ck.Params[p.name] = &weights.Param{Name: p.name, Shape: slices.Clone(p.shape), Data: slices.Clone(p.data), StoredDType: "F32"}
	}
	return newTrainable(ck)
}

// NewTrainable makes a GPT-2 with cfg's shapes and Hugging Face's
// initialization, drawn from a PCG seeded with seed: every weight matrix and
// embedding normal with standard deviation 0.02 (the residual-stream writers
// attn.c_proj and mlp.c_proj 0.02/√(2·n_layer), as GPT-2's paper and nanoGPT
// do), biases 0, LayerNorm weights 1. lm_head.weight gets its own draw only
// when cfg does not tie the embeddings.
func NewTrainable(cfg weights.Config, seed uint64) (*Trainable, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gpt2: %w", err)
	}
	rng := rand.New(rand.NewPCG(seed, 0x6770_7432))
	specs := cfg.ParamSpecs()
	if !cfg.TiedEmbeddings() {
		specs = append(specs, weights.ParamSpec{Name: "lm_head.weight", Shape: []int{cfg.VocabSize, cfg.NEmbd}})
	}
	ck := &weights.Checkpoint{Config: &cfg, Source: weights.Source{Ref: "random init"}, Params: map[string]*weights.Param{}}
	for _, s := range specs {
		data := make([]float32, product(s.Shape))
		std := 0.02
		if strings.HasSuffix(s.Name, "c_proj.weight") {
			std /= math.Sqrt(2 * float64(cfg.NLayer))
		}
		switch {
		case strings.HasSuffix(s.Name, "ln_1.weight"), strings.HasSuffix(s.Name, "ln_2.weight"), s.Name == "ln_f.weight":
			for i := range data {
				data[i] = 1
			}
		case len(s.Shape) == 2:
			for i := range data {
				data[i] = float32(rng.NormFloat64() * std)
			}
		}
		ck.Params[s.Name] = &weights.Param{Name: s.Name, Shape: s.Shape, Data: data, StoredDType: "F32"}
	}
	return newTrainable(ck)
}

// newTrainable builds the model over ck's parameters (which it takes over)
// and wraps them as spago params.
func newTrainable(ck *weights.Checkpoint) (*Trainable, error) {
	m, err := FromCheckpoint(ck, Processing{})
	if err != nil {
		return nil, err
	}
	t := &Trainable{model: m, leaves: map[*float32]mat.Tensor{}}
	for _, p := range m.paramList() {
		rows, cols := p.shape[0], 1
		if len(p.shape) == 2 {
			cols = p.shape[1]
		}
		// Not nn.NewParam: it would copy the data away from the model.
		par := &nn.Param{Matrix: mat.NewDense[float32](mat.WithShape(rows, cols), mat.WithBacking(p.data))}
		par.SetRequiresGrad(true)
		t.names = append(t.names, p.name)
		t.params = append(t.params, par)
		t.leaves[&p.data[0]] = par
	}
	return t, nil
}

// Model is the model that runs on the current parameters.
func (t *Trainable) Model() *Model { return t.model }

// Params are the parameters in model order (ParamNames gives their names):
// matrices in Conv1D layout [in, out], vectors as [n, 1].
func (t *Trainable) Params() []*nn.Param { return t.params }

// ParamNames are the Hugging Face names of Params (a tied unembedding is
// wte.weight only).
func (t *Trainable) ParamNames() []string { return slices.Clone(t.names) }

// Backward runs the model on tokens, evaluates obj and adds the gradient of
// its value to every param's Grad(). opts is as for Model.Gradients
// (ParamGrads is implied; GradResult.ParamGrads stays nil).
func (t *Trainable) Backward(ctx context.Context, tokens [][]int, opts GradOptions, obj Objective) (*GradResult, error) {
	opts.ParamGrads = false
	return t.model.gradients(ctx, tokens, opts, obj, t.leaves)
}

// Grad returns the live gradient of the named parameter (nil before any
// Backward or after ZeroGrad of a param that had none).
func (t *Trainable) Grad(name string) []float32 {
	i := slices.Index(t.names, name)
	if i < 0 || !t.params[i].HasGrad() {
		return nil
	}
	return t.params[i].Grad().Data().F32()
}

// ZeroGrad sets every gradient to zero, keeping its buffer.
func (t *Trainable) ZeroGrad() {
	for _, p := range t.params {
		if p.HasGrad() {
			clear(p.Grad().Data().F32())
		}
	}
}

// ClipGradNorm scales all gradients down so that their global L2 norm is
// at most maxNorm (torch.nn.utils.clip_grad_norm_) and returns the norm
// before clipping.
func (t *Trainable) ClipGradNorm(maxNorm float64) float64 {
	var ss float64
	for _, p := range t.params {
		if p.HasGrad() {
			for _, g := range p.Grad().Data().F32() {
				ss += float64(g) * float64(g)
			}
		}
	}
	norm := math.Sqrt(ss)
	if coef := maxNorm / (norm + 1e-6); coef < 1 {
		for _, p := range t.params {
			if p.HasGrad() {
				g := p.Grad().Data().F32()
				for i := range g {
					g[i] *= float32(coef)
				}
			}
		}
	}
	return norm
}

// Tensors returns the parameters under their canonical names, sharing
// data, in the form weights.SaveCheckpoint takes.
func (t *Trainable) Tensors() []weights.Tensor {
	var out []weights.Tensor
	for _, p := range t.model.paramList() {
		out = append(out, weights.Tensor{Name: p.name, Shape: slices.Clone(p.shape), Data: p.data})
	}
	return out
}

// AdamWConfig configures AdamW. Zero Beta1, Beta2 and Eps mean PyTorch's
// defaults 0.9, 0.999 and 1e-8.
type AdamWConfig struct {
	Beta1, Beta2, Eps float64
	WeightDecay       float64
	// Decay chooses the parameters weight decay applies to; nil means the
	// matrices (embeddings, unembedding and Conv1D weights), not biases or
	// LayerNorm weights, as nanoGPT does.
	Decay func(name string, shape []int) bool
}

// AdamW is torch.optim.AdamW (no amsgrad) over a Trainable's params:
//
//	p ← p − lr·λ·p                         (decayed params only)
//	m ← β1·m + (1−β1)·g,  v ← β2·v + (1−β2)·g²
//	p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)
//
// updating in place without allocating. spago's optimizers/adam also works
// on Trainable.Params, but it adds ε to √v before bias correction, scales
// weight decay by the bias-corrected rate, decays every parameter and
// allocates several matrices per parameter and step, so it does not
// reproduce PyTorch training runs.
type AdamW struct {
	cfg   AdamWConfig
	t     *Trainable
	decay []bool
	m, v  [][]float32
	step  int
}

// NewAdamW returns an AdamW for t's params with zero moments.
func NewAdamW(t *Trainable, cfg AdamWConfig) *AdamW {
	if cfg.Beta1 == 0 {
		cfg.Beta1 = 0.9
	}
	if cfg.Beta2 == 0 {
		cfg.Beta2 = 0.999
	}
	if cfg.Eps == 0 {
		cfg.Eps = 1e-8
	}
	a := &AdamW{cfg: cfg, t: t}
	list := t.model.paramList()
	for i, p := range t.params {
		n := p.Size()
		a.m = append(a.m, make([]float32, n))
		a.v = append(a.v, make([]float32, n))
		shape := list[i].shape
		if cfg.Decay != nil {
			a.decay = append(a.decay, cfg.Decay(t.names[i], shape))
		} else {
			a.decay = append(a.decay, len(shape) == 2)
		}
	}
	return a
}

// Steps is the number of updates done.
func (a *AdamW) Steps() int { return a.step }

// Step updates every param that has a gradient with learning rate lr, then
// zeroes the gradients.
func (a *AdamW) Step(lr float64) {
	a.step++
	t := float64(a.step)
	bc1 := 1 - math.Pow(a.cfg.Beta1, t)
	bc2 := 1 - math.Pow(a.cfg.Beta2, t)
	stepSize := lr / bc1
	invSqrtBC2 := 1 / math.Sqrt(bc2)
	b1, b2, eps := float32(a.cfg.Beta1), float32(a.cfg.Beta2), a.cfg.Eps
	for k, p := range a.t.params {
		if !p.HasGrad() {
			continue
		}
		w, g := p.Value().Data().F32(), p.Grad().Data().F32()
		m, v := a.m[k], a.v[k]
		keep := float32(1)
		if a.decay[k] {
			keep = float32(1 - lr*a.cfg.WeightDecay)
		}
		chunks(len(w), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				gi := g[i]
				mi := b1*m[i] + (1-b1)*gi
				vi := b2*v[i] + (1-b2)*gi*gi
				m[i], v[i] = mi, vi
				denom := math.Sqrt(float64(vi))*invSqrtBC2 + eps
				w[i] = w[i]*keep - float32(stepSize*float64(mi)/denom)
			}
		})
	}
	a.t.ZeroGrad()
}
