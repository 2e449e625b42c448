package analysis

import (
	"context"
	"fmt"
	"math"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/gpt2/kernels"
)

// NeuronScore is a number attached to one MLP neuron (blocks.Layer.mlp.hook_post
// element Neuron) at token position Pos.
type NeuronScore struct {
	Layer  int     `json:"layer"`
	Neuron int     `json:"neuron"`
	Pos    int     `json:"pos"`
	Value  float64 `json:"value"`
}

// DLAOptions control DirectLogitAttribution.
type DLAOptions struct {
	// TopNeurons is how many neurons (by |attribution|) TopNeurons lists;
	// 0 means 20.
	TopNeurons int
	// AllNeurons also returns every neuron's attribution ([layer][neuron]).
	AllNeurons bool
	// Tokenizer, if set, fills the token text fields.
	Tokenizer *gpt2.Tokenizer
}

// DLAResult is the direct logit attribution of logit(Target) − logit(Contrast)
// at the last position: the residual stream there is the sum of the token and
// position embeddings, every head's output, every attention output bias,
// every neuron's output and every MLP output bias; ln_final is frozen at the
// run's own scale (TransformerLens' apply_ln_to_stack with the cached
// ln_final.hook_scale), which makes it linear, so each part's share is its
// centred value divided by that scale, dotted with the ln_final weight times
// the unembedding difference. ln_final's bias and the unembedding bias add
// the same Constant for every prompt. The parts sum to LogitDiff.
type DLAResult struct {
	Target        int    `json:"target"`
	Contrast      int    `json:"contrast"` // -1: attribution of logit(Target) alone
	TargetToken   string `json:"target_token,omitempty"`
	ContrastToken string `json:"contrast_token,omitempty"`
	Position      int    `json:"position"`
	Processing    string `json:"processing"`

	LogitDiff float64 `json:"logit_diff"` // from the model's own logits
	Sum       float64 `json:"sum"`        // of the parts below; equals LogitDiff up to float error
	Scale     float64 `json:"ln_final_scale"`

	Embed    float64     `json:"embed"`
	PosEmbed float64     `json:"pos_embed"`
	Heads    [][]float64 `json:"heads"`     // [layer][head]: z·W_O of that head
	AttnBias []float64   `json:"attn_bias"` // [layer]: attention output bias b_O
	MLPBias  []float64   `json:"mlp_bias"`  // [layer]: MLP output bias
	Constant float64     `json:"constant"`  // ln_final bias and unembedding bias

	// Attn and MLP are whole-layer totals (hook_attn_out, hook_mlp_out):
	// Attn[l] = Σ Heads[l] + AttnBias[l]; MLP[l] = Σ neurons + MLPBias[l].
	Attn []float64 `json:"attn"`
	MLP  []float64 `json:"mlp"`

	Neurons    [][]float64   `json:"neurons,omitempty"` // [layer][neuron], with AllNeurons
	TopNeurons []NeuronScore `json:"top_neurons"`
}

// logitDirection is what a final-position residual vector x contributes to
// logit(target) − logit(contrast) under frozen ln_final: (x − mean x)·dir/scale
// = x·centred/scale, plus constant.
type logitDirection struct {
	centred  []float32 // ln_final weight ⊙ (W_U[target] − W_U[contrast]), minus its mean
	constant float64
}

func newLogitDirection(m *gpt2.Model, target, contrast int) (*logitDirection, error) {
	if err := checkToken(m, "target", target); err != nil {
		return nil, err
	}
	if contrast >= 0 {
		if err := checkToken(m, "contrast", contrast); err != nil {
			return nil, err
		}
	}
	d := m.DModel()
	u, err := weight(m, "lm_head.weight")
	if err != nil {
		return nil, err
	}
	diff := make([]float64, d)
	for j := range diff {
		diff[j] = float64(u[target*d+j])
		if contrast >= 0 {
			diff[j] -= float64(u[contrast*d+j])
		}
	}
	ld := &logitDirection{centred: make([]float32, d)}
	if !m.Processing.FoldLN {
		w, err := weight(m, "ln_f.weight")
		if err != nil {
			return nil, err
		}
		b, err := weight(m, "ln_f.bias")
		if err != nil {
			return nil, err
		}
		for j := range diff {
			ld.constant += float64(b[j]) * diff[j]
			diff[j] *= float64(w[j])
		}
	}
	if ub, err := m.Weight("lm_head.bias"); err == nil && ub.Data != nil {
		ld.constant += float64(ub.Data[target])
		if contrast >= 0 {
			ld.constant -= float64(ub.Data[contrast])
		}
	}
	var mu float64
	for _, v := range diff {
		mu += v
	}
	mu /= float64(d)
	for j, v := range diff {
		ld.centred[j] = float32(v - mu)
	}
	return ld, nil
}

// DirectLogitAttribution attributes logit(target) − logit(contrast) at the
// last position of tokens to every component writing to the residual stream.
// contrast < 0 attributes logit(target) alone.
func DirectLogitAttribution(ctx context.Context, m *gpt2.Model, tokens []int, target, contrast int, opts DLAOptions) (*DLAResult, error) {
	if err := checkTokens(m, tokens); err != nil {
		return nil, err
	}
	ld, err := newLogitDirection(m, target, contrast)
	if err != nil {
		return nil, err
	}
	L, H, dh, d, dm := m.NLayer(), m.NHead(), m.DHead(), m.DModel(), m.DMLP()
	names := []string{hookEmbed, hookPosEmbed, hookLNScale}
	for _, pt := range []string{"attn.hook_z", "hook_attn_out", "mlp.hook_post", "hook_mlp_out"} {
		names = append(names, perLayer(L, pt)...)
	}
	res, err := m.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Cache: matchNames(names...), Logits: gpt2.LogitsLast})
	if err != nil {
		return nil, fmt.Errorf("analysis: direct logit attribution: %w", err)
	}
	pos := len(tokens) - 1
	logits := res.Logits.At(0, 0)
	out := &DLAResult{
		Target: target, Contrast: contrast, Position: pos, Processing: m.Processing.String(),
		TargetToken: tokenText(opts.Tokenizer, target), ContrastToken: tokenText(opts.Tokenizer, contrast),
		LogitDiff: float64(logits[target]), Constant: ld.constant,
	}
	if contrast >= 0 {
		out.LogitDiff -= float64(logits[contrast])
	}
	scale := float64(res.Cache[hookLNScale].At(0, pos)[0])
	out.Scale = scale
	attr := func(x []float32) float64 { return dot64(x, ld.centred) / scale }

	out.Embed = attr(res.Cache[hookEmbed].At(0, pos))
	out.PosEmbed = attr(res.Cache[hookPosEmbed].At(0, pos))
	sum := out.Embed + out.PosEmbed + out.Constant
	out.Heads = make([][]float64, L)
	out.AttnBias = make([]float64, L)
	out.MLPBias = make([]float64, L)
	out.Attn = make([]float64, L)
	out.MLP = make([]float64, L)
	all := make([][]float64, L)
	headDir := make([]float32, dh)
	neuronDir := make([]float32, dm)
	for l := 0; l < L; l++ {
		wo, err := weight(m, fmt.Sprintf("h.%d.attn.c_proj.weight", l))
		if err != nil {
			return nil, err
		}
		bo, err := weight(m, fmt.Sprintf("h.%d.attn.c_proj.bias", l))
		if err != nil {
			return nil, err
		}
		wout, err := weight(m, fmt.Sprintf("h.%d.mlp.c_proj.weight", l))
		if err != nil {
			return nil, err
		}
		bout, err := weight(m, fmt.Sprintf("h.%d.mlp.c_proj.bias", l))
		if err != nil {
			return nil, err
		}
		z := res.Cache[blockHook(l, "attn.hook_z")].At(0, pos) // [H·dh]
		out.Heads[l] = make([]float64, H)
		for h := 0; h < H; h++ {
			// W_O[h] is rows h·dh … (h+1)·dh of c_proj [d, d].
			kernels.MatMul(headDir, wo[h*dh*d:(h+1)*dh*d], ld.centred, dh, d, 1, false)
			out.Heads[l][h] = dot64(z[h*dh:(h+1)*dh], headDir) / scale
			sum += out.Heads[l][h]
		}
		out.AttnBias[l] = attr(bo)
		out.MLPBias[l] = attr(bout)
		sum += out.AttnBias[l] + out.MLPBias[l]
		kernels.MatMul(neuronDir, wout, ld.centred, dm, d, 1, false)
		post := res.Cache[blockHook(l, "mlp.hook_post")].At(0, pos)
		all[l] = make([]float64, dm)
		for n := range all[l] {
			all[l][n] = float64(post[n]) * float64(neuronDir[n]) / scale
			sum += all[l][n]
		}
		out.Attn[l] = attr(res.Cache[blockHook(l, "hook_attn_out")].At(0, pos))
		out.MLP[l] = attr(res.Cache[blockHook(l, "hook_mlp_out")].At(0, pos))
	}
	out.Sum = sum
	k := opts.TopNeurons
	if k <= 0 {
		k = 20
	}
	for _, i := range topIndices(L*dm, k, func(i int) float64 { return math.Abs(all[i/dm][i%dm]) }) {
		out.TopNeurons = append(out.TopNeurons, NeuronScore{Layer: i / dm, Neuron: i % dm, Pos: pos, Value: all[i/dm][i%dm]})
	}
	if opts.AllNeurons {
		out.Neurons = all
	}
	return out, nil
}

// LensOptions control LogitLens.
type LensOptions struct {
	TopK      int             // tokens listed per layer; 0 means 10
	Tokenizer *gpt2.Tokenizer // optional: fills token text fields
}

// LensToken is one token of a logit-lens row.
type LensToken struct {
	ID    int     `json:"id"`
	Token string  `json:"token,omitempty"`
	Logit float64 `json:"logit"`
	Prob  float64 `json:"prob"`
}

// LensRow is the logit lens at one point of the residual stream.
type LensRow struct {
	Label      string      `json:"label"` // TransformerLens' accumulated_resid labels: "3_pre", "final_post"
	Top        []LensToken `json:"top"`
	TargetProb float64     `json:"target_prob"`
	TargetRank int         `json:"target_rank"` // 0 is the top token
	LogitDiff  float64     `json:"logit_diff"`  // logit(target) − logit(contrast); 0 without a contrast
}

// LensResult is the logit lens at the last position, one row per layer.
type LensResult struct {
	Position   int       `json:"position"`
	Target     int       `json:"target"`
	Contrast   int       `json:"contrast"`
	Processing string    `json:"processing"`
	Rows       []LensRow `json:"rows"`
}

// LogitLens applies ln_final (with statistics recomputed for each layer, as
// TransformerLens' accumulated_resid(apply_ln=True) does) and the
// unembedding to the residual stream before each block and after the last
// one, at the last position. The final row equals the model's logits. Each
// row tracks target's probability and rank (target < 0: none) and
// logit(target) − logit(contrast) (contrast < 0: none).
func LogitLens(ctx context.Context, m *gpt2.Model, tokens []int, target, contrast int, opts LensOptions) (*LensResult, error) {
	if err := checkTokens(m, tokens); err != nil {
		return nil, err
	}
	if target >= 0 {
		if err := checkToken(m, "target", target); err != nil {
			return nil, err
		}
	}
	if contrast >= 0 {
		if err := checkToken(m, "contrast", contrast); err != nil {
			return nil, err
		}
	}
	L, d, v := m.NLayer(), m.DModel(), m.VocabSize()
	names := append(perLayer(L, "hook_resid_pre"), blockHook(L-1, "hook_resid_post"))
	res, err := m.Run(ctx, [][]int{tokens}, gpt2.RunOptions{Cache: matchNames(names...), Logits: gpt2.LogitsNone})
	if err != nil {
		return nil, fmt.Errorf("analysis: logit lens: %w", err)
	}
	pos := len(tokens) - 1
	rows := len(names)
	x := make([]float32, rows*d)
	for i, n := range names {
		copy(x[i*d:(i+1)*d], res.Cache[n].At(0, pos))
	}
	if err := applyFinalLN(m, x, rows); err != nil {
		return nil, err
	}
	u, err := weight(m, "lm_head.weight")
	if err != nil {
		return nil, err
	}
	logits := make([]float32, rows*v)
	if ub, err := m.Weight("lm_head.bias"); err == nil && ub.Data != nil {
		for r := 0; r < rows; r++ {
			copy(logits[r*v:(r+1)*v], ub.Data)
		}
		kernels.MatMulTransB(logits, x, u, rows, d, v, true)
	} else {
		kernels.MatMulTransB(logits, x, u, rows, d, v, false)
	}
	k := opts.TopK
	if k <= 0 {
		k = 10
	}
	out := &LensResult{Position: pos, Target: target, Contrast: contrast, Processing: m.Processing.String()}
	for r := 0; r < rows; r++ {
		row := logits[r*v : (r+1)*v]
		lse := logSumExp(row)
		label := fmt.Sprintf("%d_pre", r)
		if r == L {
			label = "final_post"
		}
		lr := LensRow{Label: label}
		for _, id := range topIndices(v, k, func(i int) float64 { return float64(row[i]) }) {
			lr.Top = append(lr.Top, LensToken{ID: id, Token: tokenText(opts.Tokenizer, id), Logit: float64(row[id]), Prob: math.Exp(float64(row[id]) - lse)})
		}
		if target >= 0 {
			lr.TargetProb = math.Exp(float64(row[target]) - lse)
			lr.TargetRank = rankOf(row, target)
			if contrast >= 0 {
				lr.LogitDiff = float64(row[target]) - float64(row[contrast])
			}
		}
		out.Rows = append(out.Rows, lr)
	}
	return out, nil
}

// applyFinalLN applies ln_final to each of the rows of x in place, with the
// model's epsilon and (unless folded into the unembedding) weight and bias.
func applyFinalLN(m *gpt2.Model, x []float32, rows int) error {
	d := m.DModel()
	var w, b []float32
	if !m.Processing.FoldLN {
		var err error
		if w, err = weight(m, "ln_f.weight"); err != nil {
			return err
		}
		if b, err = weight(m, "ln_f.bias"); err != nil {
			return err
		}
	}
	eps := m.Config.LayerNormEpsilon
	for r := 0; r < rows; r++ {
		row := x[r*d : (r+1)*d]
		var s float64
		for _, v := range row {
			s += float64(v)
		}
		mu := s / float64(d)
		var ss float64
		for _, v := range row {
			c := float64(v) - mu
			ss += c * c
		}
		inv := 1 / math.Sqrt(ss/float64(d)+eps)
		for j, v := range row {
			y := (float64(v) - mu) * inv
			if w != nil {
				y = y*float64(w[j]) + float64(b[j])
			}
			row[j] = float32(y)
		}
	}
	return nil
}
