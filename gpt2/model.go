package gpt2

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/factlens/factlens/weights"
)

// Model is a GPT-2 language model ready to run: its parameters, processed as
// Processing says, and a pool of activation buffers reused between calls to
// Run. A Model is safe for concurrent use.
type Model struct {
	Config     weights.Config
	Processing Processing
	Source     weights.Source

	p           params
	act         string    // canonical activation function (weights.Activation*)
	eps         float64   // LayerNorm epsilon
	attnScale   []float32 // per layer: multiplies q·k before the mask
	points      []string  // hook point names in forward order
	pointIndex  map[string]int
	storedDType string

	mu   sync.Mutex
	free []*workspace
}

// params holds every weight the forward reads. Slices may alias the
// checkpoint's read-only mmap: the forward only reads them, and weight
// processing writes into fresh copies.
type params struct {
	wte      []float32 // [vocab, d_model]
	wpe      []float32 // [n_ctx, d_model]
	layers   []layerParams
	lnfW     []float32 // [d_model]; nil once folded into the unembedding
	lnfB     []float32
	unembed  []float32 // [vocab, d_model]: lm_head.weight, or wte when tied
	unembedB []float32 // [vocab]; nil (zero) unless weight processing made one
}

type layerParams struct {
	ln1W, ln1B   []float32 // [d_model]; nil once folded into c_attn
	attnW, attnB []float32 // c_attn, Conv1D [d_model, 3·d_model]: columns q|k|v, each head-major
	projW, projB []float32 // attn.c_proj [d_model, d_model]: rows h·d_head… are head h's W_O
	ln2W, ln2B   []float32 // [d_model]; nil once folded into c_fc
	fcW, fcB     []float32 // mlp.c_fc [d_model, d_mlp]
	outW, outB   []float32 // mlp.c_proj [d_mlp, d_model]
}

// FromCheckpoint builds a Model from a checkpoint, applying the weight
// processing p into new buffers: the checkpoint is never written. Tensors
// that p leaves unchanged (all of them for raw Hugging Face) are shared with
// the checkpoint, so keep it open while the model is in use.
func FromCheckpoint(ck *weights.Checkpoint, p Processing) (*Model, error) {
	if ck == nil || ck.Config == nil {
		return nil, fmt.Errorf("gpt2: nil checkpoint or config")
	}
	cfg := *ck.Config
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gpt2: %w", err)
	}
	d, dm, v, n := cfg.NEmbd, cfg.DInner(), cfg.VocabSize, cfg.NPositions

	var errs []string
	get := func(name string, shape ...int) []float32 {
		par, ok := ck.Params[name]
		if !ok || par == nil {
			errs = append(errs, name+": missing")
			return nil
		}
		if !slices.Equal(par.Shape, shape) || len(par.Data) != product(shape) {
			errs = append(errs, fmt.Sprintf("%s: shape %v with %d values, config wants %v", name, par.Shape, len(par.Data), shape))
			return nil
		}
		return par.Data
	}

	m := &Model{Config: cfg, Processing: p, Source: ck.Source, act: cfg.Activation(), eps: cfg.LayerNormEpsilon}
	m.p.wte = get("wte.weight", v, d)
	m.p.wpe = get("wpe.weight", n, d)
	for l := 0; l < cfg.NLayer; l++ {
		h := "h." + strconv.Itoa(l) + "."
		m.p.layers = append(m.p.layers, layerParams{
			ln1W:  get(h+"ln_1.weight", d),
			ln1B:  get(h+"ln_1.bias", d),
			attnW: get(h+"attn.c_attn.weight", d, 3*d),
			attnB: get(h+"attn.c_attn.bias", 3*d),
			projW: get(h+"attn.c_proj.weight", d, d),
			projB: get(h+"attn.c_proj.bias", d),
			ln2W:  get(h+"ln_2.weight", d),
			ln2B:  get(h+"ln_2.bias", d),
			fcW:   get(h+"mlp.c_fc.weight", d, dm),
			fcB:   get(h+"mlp.c_fc.bias", dm),
			outW:  get(h+"mlp.c_proj.weight", dm, d),
			outB:  get(h+"mlp.c_proj.bias", d),
		})
		m.attnScale = append(m.attnScale, float32(cfg.AttnScale(l)))
	}
	m.p.lnfW = get("ln_f.weight", d)
	m.p.lnfB = get("ln_f.bias", d)
	if u := ck.Unembedding(); u == nil {
		errs = append(errs, "unembedding (lm_head.weight or wte.weight): missing")
	} else {
		m.p.unembed = get(u.Name, v, d)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("gpt2: checkpoint %s: %s", ck.Source.Ref, strings.Join(errs, "; "))
	}
	m.storedDType = ck.Params["wte.weight"].StoredDType

	m.p.process(p, cfg)
	m.points = hookPointNames(cfg.NLayer)
	m.pointIndex = make(map[string]int, len(m.points))
	for i, name := range m.points {
		m.pointIndex[name] = i
	}
	return m, nil
}

func product(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

// NLayer is the number of transformer blocks.
func (m *Model) NLayer() int { return m.Config.NLayer }

// DModel is the width of the residual stream.
func (m *Model) DModel() int { return m.Config.NEmbd }

// NHead is the number of attention heads per layer.
func (m *Model) NHead() int { return m.Config.NHead }

// DHead is the width of one attention head.
func (m *Model) DHead() int { return m.Config.DHead() }

// DMLP is the number of MLP neurons per layer.
func (m *Model) DMLP() int { return m.Config.DInner() }

// NCtx is the longest sequence the model accepts (n_positions).
func (m *Model) NCtx() int { return m.Config.NPositions }

// VocabSize is the number of token ids (and of logits per position).
func (m *Model) VocabSize() int { return m.Config.VocabSize }

// Weight returns a parameter as the forward uses it, after weight processing,
// under its canonical Hugging Face name ("h.3.mlp.c_proj.weight", Conv1D
// layout [in, out]). The unembedding is always available as lm_head.weight
// [vocab, d_model] (tied or not), and lm_head.bias [vocab] exists when
// processing made one (fold_ln folds ln_f's bias into it). Layer norm weights
// folded away by fold_ln are an error. Data is shared with the model: never
// write to it.
func (m *Model) Weight(name string) (*weights.Param, error) {
	d, dm, v := m.DModel(), m.DMLP(), m.VocabSize()
	key := name
	type entry struct {
		data  []float32
		shape []int
	}
	table := map[string]entry{
		"wte.weight":     {m.p.wte, []int{v, d}},
		"wpe.weight":     {m.p.wpe, []int{m.NCtx(), d}},
		"ln_f.weight":    {m.p.lnfW, []int{d}},
		"ln_f.bias":      {m.p.lnfB, []int{d}},
		"lm_head.weight": {m.p.unembed, []int{v, d}},
		"lm_head.bias":   {m.p.unembedB, []int{v}},
	}
	if l, tail, ok := splitLayerName(name, m.NLayer()); ok {
		lp := &m.p.layers[l]
		table = map[string]entry{
			"ln_1.weight":        {lp.ln1W, []int{d}},
			"ln_1.bias":          {lp.ln1B, []int{d}},
			"attn.c_attn.weight": {lp.attnW, []int{d, 3 * d}},
			"attn.c_attn.bias":   {lp.attnB, []int{3 * d}},
			"attn.c_proj.weight": {lp.projW, []int{d, d}},
			"attn.c_proj.bias":   {lp.projB, []int{d}},
			"ln_2.weight":        {lp.ln2W, []int{d}},
			"ln_2.bias":          {lp.ln2B, []int{d}},
			"mlp.c_fc.weight":    {lp.fcW, []int{d, dm}},
			"mlp.c_fc.bias":      {lp.fcB, []int{dm}},
			"mlp.c_proj.weight":  {lp.outW, []int{dm, d}},
			"mlp.c_proj.bias":    {lp.outB, []int{d}},
		}
		key = tail
	}
	e, ok := table[key]
	switch {
	case !ok:
		return nil, fmt.Errorf("gpt2: no parameter %q", name)
	case e.data == nil:
		return nil, fmt.Errorf("gpt2: parameter %q does not exist under processing %s", name, m.Processing)
	}
	return &weights.Param{Name: name, Shape: e.shape, Data: e.data, StoredDType: m.storedDType}, nil
}

// splitLayerName splits "h.3.mlp.c_fc.weight" into 3 and "mlp.c_fc.weight"
// if the layer exists.
func splitLayerName(name string, nLayer int) (layer int, tail string, ok bool) {
	rest, ok := strings.CutPrefix(name, "h.")
	if !ok {
		return 0, "", false
	}
	num, tail, ok := strings.Cut(rest, ".")
	l, err := strconv.Atoi(num)
	if !ok || err != nil || l < 0 || l >= nLayer || strconv.Itoa(l) != num {
		return 0, "", false
	}
	return l, tail, true
}
