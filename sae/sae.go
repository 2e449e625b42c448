// Package sae owns sparse autoencoders over GPT-2 activations, with SAELens'
// definitions throughout: the Standard (ReLU + decoder-norm-weighted L1),
// TopK and JumpReLU architectures; training by hand-written gradients and Adam
// over activations harvested from any hook (or any other Source); the
// evaluation metrics SAELens reports (L0, dataset-level explained variance,
// CE-loss and KL scores against zero-ablation, feature densities); and the
// SAELens folder format of every vintage, including pretrained releases on
// the Hugging Face Hub.
//
// Weights are row-major []float32 in SAELens' layout: W_enc [d_in, d_sae],
// W_dec [d_sae, d_in]. Batches of activations are n rows of d_in values.
package sae

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/nlpodyssey/spago/mat"
)

// Architecture names an SAE's activation function as SAELens' cfg.json does.
type Architecture string

// The architectures this package runs. Standard and TopK also train.
const (
	Standard Architecture = "standard"
	TopK     Architecture = "topk"
	JumpReLU Architecture = "jumprelu"
)

// Normalization values of SAELens' normalize_activations.
const (
	NormNone                  = "none"
	NormExpectedAverageOnlyIn = "expected_average_only_in"
	NormConstantNormRescale   = "constant_norm_rescale"
	NormLayerNorm             = "layer_norm"
)

// Config describes an SAE: the fields of SAELens' cfg.json that change its
// arithmetic, plus the metadata that says where its inputs come from.
type Config struct {
	Architecture     Architecture
	DIn              int
	DSAE             int
	K                int  // TopK only: latents kept per token
	ApplyBDecToInput bool // subtract b_dec from the input before encoding

	// Normalization is applied to every input and undone on the output.
	// NormExpectedAverageOnlyIn multiplies inputs by NormScalingFactor; the
	// loaders fold a known factor into the weights and set this back to
	// NormNone, as SAELens does.
	Normalization     string
	NormScalingFactor float64

	// ReshapeActivations is "none" or "hook_z" (the hook's [n_heads, d_head]
	// trailing dimensions are flattened into d_in, which for row-major data
	// changes nothing).
	ReshapeActivations string

	DType  string // as written in cfg.json ("float32", "torch.float32"); weights are float32 here
	Device string

	Metadata Metadata

	// RequiresProcessing is the TransformerLens weight processing the SAE was
	// trained under (from metadata.model_from_pretrained_kwargs or the table of
	// known releases). Residual-stream SAEs trained on TransformerLens models
	// with center_writing_weights see per-token mean-centered activations;
	// feeding them raw Hugging Face activations gives wrong features.
	RequiresProcessing Processing
}

// Metadata is SAELens' cfg.json "metadata" block.
type Metadata struct {
	ModelName     string
	HookName      string
	HookHeadIndex *int
	ContextSize   int
	PrependBOS    bool
	DatasetPath   string
	// ModelFromPretrainedKwargs is kept verbatim (e.g.
	// {"center_writing_weights": true}).
	ModelFromPretrainedKwargs map[string]any
	NeuronpediaID             string
	SAELensVersion            string
}

// Processing says which TransformerLens weight processing an SAE expects of
// the model whose activations it reads.
type Processing struct {
	// Known is false when neither the cfg nor the release table says; the
	// other fields are then meaningless.
	Known                bool
	CenterWritingWeights bool
	FoldLN               bool
	CenterUnembed        bool
	FoldValueBiases      bool
}

// ProcessingFromKwargs reads TransformerLens from_pretrained keyword arguments
// the way SAELens' evaluation does (HookedTransformer.from_pretrained_no_processing
// plus the kwargs): keys not given are false. A nil map is unknown.
func ProcessingFromKwargs(kw map[string]any) Processing {
	if kw == nil {
		return Processing{}
	}
	flag := func(k string) bool { v, _ := kw[k].(bool); return v }
	return Processing{
		Known:                true,
		CenterWritingWeights: flag("center_writing_weights"),
		FoldLN:               flag("fold_ln"),
		CenterUnembed:        flag("center_unembed"),
		FoldValueBiases:      flag("fold_value_biases"),
	}
}

// Kwargs is the inverse of ProcessingFromKwargs (nil when unknown).
func (p Processing) Kwargs() map[string]any {
	if !p.Known {
		return nil
	}
	return map[string]any{
		"center_writing_weights": p.CenterWritingWeights,
		"fold_ln":                p.FoldLN,
		"center_unembed":         p.CenterUnembed,
		"fold_value_biases":      p.FoldValueBiases,
	}
}

func (p Processing) String() string {
	if !p.Known {
		return "unknown (cfg names no model_from_pretrained_kwargs)"
	}
	var on []string
	for _, f := range []struct {
		name string
		v    bool
	}{{"center_writing_weights", p.CenterWritingWeights}, {"fold_ln", p.FoldLN},
		{"center_unembed", p.CenterUnembed}, {"fold_value_biases", p.FoldValueBiases}} {
		if f.v {
			on = append(on, f.name)
		}
	}
	if len(on) == 0 {
		return "none (raw Hugging Face weights)"
	}
	return strings.Join(on, "+") + " (TransformerLens-processed weights)"
}

// Origin records where an SAE was loaded from, for reports.
type Origin struct {
	Release  string // SAELens release name, when loaded through the table
	Repo     string // Hub repository
	Folder   string // folder inside the repository
	Revision string
	Commit   string
	Dir      string // local folder holding cfg.json
	Vintage  string // "saelens6", "saelens5" or "pre5"
}

// SAE is a sparse autoencoder. The slices are owned by the SAE and may be
// modified by training.
type SAE struct {
	Config    Config
	WEnc      []float32 // [d_in, d_sae]
	BEnc      []float32 // [d_sae]
	WDec      []float32 // [d_sae, d_in]
	BDec      []float32 // [d_in]
	Threshold []float32 // [d_sae], JumpReLU only

	// LogSparsity is log10 feature density from sparsity.safetensors, if any.
	LogSparsity []float32
	Origin      Origin
}

// Validate checks the config and that every tensor has the shape it names.
func (s *SAE) Validate() error {
	c := s.Config
	if err := c.Validate(); err != nil {
		return err
	}
	check := func(name string, got []float32, want ...int) error {
		n := 1
		for _, d := range want {
			n *= d
		}
		if len(got) != n {
			return fmt.Errorf("sae: %s has %d values, cfg (d_in %d, d_sae %d) wants shape %v", name, len(got), c.DIn, c.DSAE, want)
		}
		return nil
	}
	if err := errors.Join(
		check("W_enc", s.WEnc, c.DIn, c.DSAE),
		check("b_enc", s.BEnc, c.DSAE),
		check("W_dec", s.WDec, c.DSAE, c.DIn),
		check("b_dec", s.BDec, c.DIn),
	); err != nil {
		return err
	}
	if c.Architecture == JumpReLU {
		return check("threshold", s.Threshold, c.DSAE)
	}
	return nil
}

// Validate checks the fields that change the arithmetic.
func (c Config) Validate() error {
	if c.DIn <= 0 || c.DSAE <= 0 {
		return fmt.Errorf("sae: d_in %d and d_sae %d must be positive", c.DIn, c.DSAE)
	}
	switch c.Architecture {
	case Standard, JumpReLU:
	case TopK:
		if c.K <= 0 || c.K > c.DSAE {
			return fmt.Errorf("sae: topk k=%d must be in [1, d_sae=%d]", c.K, c.DSAE)
		}
	case "":
		return errors.New("sae: architecture is missing")
	default:
		return fmt.Errorf("sae: unknown architecture %q (know standard, topk, jumprelu)", c.Architecture)
	}
	switch c.Normalization {
	case NormNone, "", NormConstantNormRescale, NormLayerNorm:
	case NormExpectedAverageOnlyIn:
		if !(c.NormScalingFactor > 0) || math.IsInf(c.NormScalingFactor, 0) {
			return errors.New("sae: normalize_activations is expected_average_only_in but no norm_scaling_factor is known (SAELens keeps it in pretrained_saes.yaml, not cfg.json); pass one to the loader")
		}
	default:
		return fmt.Errorf("sae: unknown normalize_activations %q", c.Normalization)
	}
	switch c.ReshapeActivations {
	case "", "none", "hook_z":
	default:
		return fmt.Errorf("sae: unknown reshape_activations %q", c.ReshapeActivations)
	}
	return nil
}

// FoldNormScalingFactor folds an expected_average_only_in factor f into the
// weights (W_enc·f, W_dec/f, b_dec/f) so that raw activations give the same
// features and the reconstruction comes out unscaled, then sets the
// normalization to none.
func (s *SAE) FoldNormScalingFactor(f float64) {
	ff := float32(f)
	for i := range s.WEnc {
		s.WEnc[i] *= ff
	}
	for i := range s.WDec {
		s.WDec[i] /= ff
	}
	for i := range s.BDec {
		s.BDec[i] /= ff
	}
	// A JumpReLU threshold compares pre-activations, which scaling W_enc and
	// b_dec together leaves unchanged.
	s.Config.Normalization = NormNone
	s.Config.NormScalingFactor = 0
}

// Encode returns the feature activations [n, d_sae] of x [n, d_in].
func (s *SAE) Encode(x []float32, n int) ([]float32, error) {
	if err := s.checkInput(x, n); err != nil {
		return nil, err
	}
	in := s.prepareInput(x, n, nil)
	acts := make([]float32, n*s.Config.DSAE)
	s.encodePrepared(in, n, acts)
	return acts, nil
}

// Decode returns acts·W_dec + b_dec for acts [n, d_sae]. With per-token
// normalization (constant_norm_rescale, layer_norm) the result is in the
// normalized space; Reconstruct undoes it.
func (s *SAE) Decode(acts []float32, n int) ([]float32, error) {
	if len(acts) != n*s.Config.DSAE {
		return nil, fmt.Errorf("sae: decode: %d values for %d rows of d_sae %d", len(acts), n, s.Config.DSAE)
	}
	out := make([]float32, n*s.Config.DIn)
	decodeDense(out, acts, s.WDec, s.BDec, n, s.Config.DSAE, s.Config.DIn)
	if s.Config.Normalization == NormExpectedAverageOnlyIn {
		inv := float32(1 / s.Config.NormScalingFactor)
		for i := range out {
			out[i] *= inv
		}
	}
	return out, nil
}

// Reconstruct encodes and decodes x [n, d_in], undoing any input
// normalization, and returns both the activations and the reconstruction.
func (s *SAE) Reconstruct(x []float32, n int) (acts, xhat []float32, err error) {
	if err := s.checkInput(x, n); err != nil {
		return nil, nil, err
	}
	var st normState
	in := s.prepareInput(x, n, &st)
	acts = make([]float32, n*s.Config.DSAE)
	s.encodePrepared(in, n, acts)
	xhat = make([]float32, n*s.Config.DIn)
	decodeDense(xhat, acts, s.WDec, s.BDec, n, s.Config.DSAE, s.Config.DIn)
	s.undoNormalization(xhat, n, &st)
	return acts, xhat, nil
}

// EncodeDense is Encode for spago matrices: x is [n, d_in].
func (s *SAE) EncodeDense(x *mat.Dense[float32]) (*mat.Dense[float32], error) {
	shape := x.Shape()
	if len(shape) != 2 {
		return nil, fmt.Errorf("sae: encode: want a matrix, got shape %v", shape)
	}
	acts, err := s.Encode(x.Data().F32(), shape[0])
	if err != nil {
		return nil, err
	}
	return mat.NewDense[float32](mat.WithShape(shape[0], s.Config.DSAE), mat.WithBacking(acts)), nil
}

// DecodeDense is Decode for spago matrices: acts is [n, d_sae].
func (s *SAE) DecodeDense(acts *mat.Dense[float32]) (*mat.Dense[float32], error) {
	shape := acts.Shape()
	if len(shape) != 2 {
		return nil, fmt.Errorf("sae: decode: want a matrix, got shape %v", shape)
	}
	out, err := s.Decode(acts.Data().F32(), shape[0])
	if err != nil {
		return nil, err
	}
	return mat.NewDense[float32](mat.WithShape(shape[0], s.Config.DIn), mat.WithBacking(out)), nil
}

func (s *SAE) checkInput(x []float32, n int) error {
	if n < 0 || len(x) != n*s.Config.DIn {
		return fmt.Errorf("sae: input has %d values, want %d rows of d_in %d", len(x), n, s.Config.DIn)
	}
	return nil
}

// normState keeps what per-token normalization needs to undo itself.
type normState struct {
	scale []float32 // per row: output = out·scale + shift
	shift []float32
}

// prepareInput applies the configured normalization and the b_dec
// subtraction, returning a new slice (x is never modified).
func (s *SAE) prepareInput(x []float32, n int, st *normState) []float32 {
	d := s.Config.DIn
	in := make([]float32, len(x))
	copy(in, x)
	switch s.Config.Normalization {
	case NormExpectedAverageOnlyIn:
		f := float32(s.Config.NormScalingFactor)
		for i := range in {
			in[i] *= f
		}
	case NormConstantNormRescale:
		if st != nil {
			st.scale = make([]float32, n)
		}
		for r := 0; r < n; r++ {
			row := in[r*d : (r+1)*d]
			var ss float64
			for _, v := range row {
				ss += float64(v) * float64(v)
			}
			c := float32(math.Sqrt(float64(d)) / math.Sqrt(ss))
			for i := range row {
				row[i] *= c
			}
			if st != nil {
				st.scale[r] = 1 / c
			}
		}
	case NormLayerNorm:
		// SAELens: (x − mean) / (std + 1e-5) with torch's unbiased std, undone
		// as out·std + mean.
		if st != nil {
			st.scale = make([]float32, n)
			st.shift = make([]float32, n)
		}
		for r := 0; r < n; r++ {
			row := in[r*d : (r+1)*d]
			var sum float64
			for _, v := range row {
				sum += float64(v)
			}
			mu := sum / float64(d)
			var ss float64
			for _, v := range row {
				dv := float64(v) - mu
				ss += dv * dv
			}
			std := math.Sqrt(ss / float64(d-1))
			for i := range row {
				row[i] = float32((float64(row[i]) - mu) / (std + 1e-5))
			}
			if st != nil {
				st.scale[r] = float32(std)
				st.shift[r] = float32(mu)
			}
		}
	}
	if s.Config.ApplyBDecToInput {
		for r := 0; r < n; r++ {
			row := in[r*d : (r+1)*d]
			for i, b := range s.BDec {
				row[i] -= b
			}
		}
	}
	return in
}

func (s *SAE) undoNormalization(out []float32, n int, st *normState) {
	d := s.Config.DIn
	switch s.Config.Normalization {
	case NormExpectedAverageOnlyIn:
		inv := float32(1 / s.Config.NormScalingFactor)
		for i := range out {
			out[i] *= inv
		}
	case NormConstantNormRescale, NormLayerNorm:
		for r := 0; r < n; r++ {
			row := out[r*d : (r+1)*d]
			var shift float32
			if st.shift != nil {
				shift = st.shift[r]
			}
			for i := range row {
				row[i] = row[i]*st.scale[r] + shift
			}
		}
	}
}

// encodePrepared computes pre-activations of the prepared input and applies
// the architecture's activation function into acts [n, d_sae].
func (s *SAE) encodePrepared(in []float32, n int, acts []float32) {
	c := s.Config
	matMul(acts, in, s.WEnc, n, c.DIn, c.DSAE)
	parallelRows(n, func(lo, hi int) {
		var h topKHeap
		for r := lo; r < hi; r++ {
			row := acts[r*c.DSAE : (r+1)*c.DSAE]
			for j, b := range s.BEnc {
				row[j] += b
			}
			switch c.Architecture {
			case Standard:
				for j, v := range row {
					if v < 0 {
						row[j] = 0
					}
				}
			case JumpReLU:
				jumpReLURow(row, s.Threshold)
			case TopK:
				h.selectTop(row, c.K, nil)
				keepOnly(row, h.idx)
			}
		}
	})
}

// keepOnly zeroes every entry of row outside idx and applies ReLU to the kept
// ones (SAELens' TopK applies ReLU after selecting).
func keepOnly(row []float32, idx []int32) {
	kept := make([]float32, len(idx))
	for i, j := range idx {
		kept[i] = row[j]
	}
	clear(row)
	for i, j := range idx {
		if kept[i] > 0 {
			row[j] = kept[i]
		}
	}
}

// ActiveFeature is one nonzero latent of one token.
type ActiveFeature struct {
	Index int
	Value float32
}

// TopFeatures returns the m largest nonzero activations of each row of acts
// [n, d_sae], largest first.
func TopFeatures(acts []float32, n, dSAE, m int) [][]ActiveFeature {
	out := make([][]ActiveFeature, n)
	for r := 0; r < n; r++ {
		var fs []ActiveFeature
		for j, v := range acts[r*dSAE : (r+1)*dSAE] {
			if v > 0 {
				fs = append(fs, ActiveFeature{j, v})
			}
		}
		sort.Slice(fs, func(a, b int) bool {
			if fs[a].Value != fs[b].Value {
				return fs[a].Value > fs[b].Value
			}
			return fs[a].Index < fs[b].Index
		})
		if len(fs) > m {
			fs = fs[:m]
		}
		out[r] = fs
	}
	return out
}
