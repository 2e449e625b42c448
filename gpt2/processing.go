package gpt2

import (
	"slices"
	"strings"

	"github.com/factlens/factlens/weights"
)

// Processing chooses the weight transformations TransformerLens applies in
// HookedTransformer.from_pretrained. The zero value is raw Hugging Face
// GPT2LMHeadModel. None of them changes what the model computes (logits move
// by a per-position constant under CenterUnembed, so log-probs are equal);
// they change the coordinates in which some hook points are reported:
//
//   - FoldLN folds every LayerNorm's weight and bias into the linear map that
//     reads it, then centres those reading weights over d_model. Hook points
//     ln*.hook_normalized become the un-weighted normalized vector (TL's
//     LayerNormPre); MLP activations, q, k, patterns and logits are unchanged.
//   - CenterWritingWeights subtracts the d_model-mean from every weight that
//     writes to the residual stream (wte, wpe, attention and MLP output
//     projections and their biases): the residual stream hooks, hook_embed,
//     hook_pos_embed, hook_attn_out and hook_mlp_out become the raw values
//     minus their per-token mean.
//   - CenterUnembed subtracts the vocabulary-mean from the unembedding (and
//     its bias): logits shift by a per-position constant.
//   - FoldValueBiases moves the value bias into the output bias
//     (b_O += Σ_h b_V[h]·W_O[h], b_V = 0): hook_v, hook_z and hook_result
//     change; hook_attn_out does not.
type Processing struct {
	FoldLN               bool
	CenterWritingWeights bool
	CenterUnembed        bool
	FoldValueBiases      bool
}

// TransformerLensProcessing is what HookedTransformer.from_pretrained does by
// default: all four transformations.
func TransformerLensProcessing() Processing {
	return Processing{FoldLN: true, CenterWritingWeights: true, CenterUnembed: true, FoldValueBiases: true}
}

// String names the processing for reports: "raw Hugging Face", or
// "TransformerLens (fold_ln, center_writing_weights, …)" with TL's option names.
func (p Processing) String() string {
	var opts []string
	for _, o := range []struct {
		on   bool
		name string
	}{
		{p.FoldLN, "fold_ln"},
		{p.CenterWritingWeights, "center_writing_weights"},
		{p.CenterUnembed, "center_unembed"},
		{p.FoldValueBiases, "fold_value_biases"},
	} {
		if o.on {
			opts = append(opts, o.name)
		}
	}
	if len(opts) == 0 {
		return "raw Hugging Face"
	}
	return "TransformerLens (" + strings.Join(opts, ", ") + ")"
}

// process applies proc in TransformerLens' order (fold_ln, then
// center_writing_weights, center_unembed, fold_value_biases). Every slice it
// changes is first copied, so the checkpoint's memory is never written.
// Sums run in float64 and are rounded once.
func (p *params) process(proc Processing, cfg weights.Config) {
	d, dm, v := cfg.NEmbd, cfg.DInner(), cfg.VocabSize
	own := owner{}
	if proc.FoldLN {
		for l := range p.layers {
			lp := &p.layers[l]
			lp.attnW, lp.attnB = foldLayerNorm(&own, lp.attnW, lp.attnB, lp.ln1W, lp.ln1B, d, 3*d)
			lp.fcW, lp.fcB = foldLayerNorm(&own, lp.fcW, lp.fcB, lp.ln2W, lp.ln2B, d, dm)
			lp.ln1W, lp.ln1B, lp.ln2W, lp.ln2B = nil, nil, nil, nil
		}
		p.unembed, p.unembedB = foldLayerNormT(&own, p.unembed, p.lnfW, p.lnfB, v, d)
		p.lnfW, p.lnfB = nil, nil
	}
	if proc.CenterWritingWeights {
		p.wte = centerRows(&own, p.wte, d)
		p.wpe = centerRows(&own, p.wpe, d)
		for l := range p.layers {
			lp := &p.layers[l]
			lp.projW = centerRows(&own, lp.projW, d)
			lp.projB = centerRows(&own, lp.projB, d)
			lp.outW = centerRows(&own, lp.outW, d)
			lp.outB = centerRows(&own, lp.outB, d)
		}
	}
	if proc.CenterUnembed {
		// W_U = unembedᵀ is [d_model, vocab]; TL centres each of its rows over
		// the vocabulary, i.e. each column of unembed.
		u := own.of(p.unembed)
		mean := make([]float64, d)
		for t := 0; t < v; t++ {
			for i, x := range u[t*d : (t+1)*d] {
				mean[i] += float64(x)
			}
		}
		for t := 0; t < v; t++ {
			row := u[t*d : (t+1)*d]
			for i := range row {
				row[i] = float32(float64(row[i]) - mean[i]/float64(v))
			}
		}
		p.unembed = u
		if p.unembedB != nil {
			p.unembedB = centerRows(&own, p.unembedB, v)
		}
	}
	if proc.FoldValueBiases {
		for l := range p.layers {
			lp := &p.layers[l]
			bV := lp.attnB[2*d : 3*d]
			b := own.of(lp.projB)
			for j := range b {
				s := float64(b[j])
				for c, bv := range bV {
					s += float64(bv) * float64(lp.projW[c*d+j])
				}
				b[j] = float32(s)
			}
			lp.projB = b
			lp.attnB = own.of(lp.attnB)
			clear(lp.attnB[2*d : 3*d])
		}
	}
}

// owner copies a slice the first time it is to be written, so that the
// checkpoint's (possibly mmapped) memory stays untouched.
type owner map[*float32]bool

func (o owner) of(s []float32) []float32 {
	if len(s) == 0 || o[&s[0]] {
		return s
	}
	c := slices.Clone(s)
	o[&c[0]] = true
	return c
}

// foldLayerNorm folds a LayerNorm (weight w, bias b) into the Conv1D layer W
// [in, out], bias bias, that reads it: bias' = bias + b·W, W' = diag(w)·W,
// then centres each column of W' over the input dimension (TL's fold_ln with
// center_weights).
func foldLayerNorm(o *owner, W, bias, w, b []float32, in, out int) (newW, newBias []float32) {
	newBias = o.of(bias)
	acc := make([]float64, out)
	for j := range acc {
		acc[j] = float64(bias[j])
	}
	for i := 0; i < in; i++ {
		bi := float64(b[i])
		for j, x := range W[i*out : (i+1)*out] {
			acc[j] += bi * float64(x)
		}
	}
	for j := range newBias {
		newBias[j] = float32(acc[j])
	}
	newW = o.of(W)
	clear(acc)
	for i := 0; i < in; i++ {
		wi := w[i]
		row := newW[i*out : (i+1)*out]
		for j := range row {
			row[j] *= wi
			acc[j] += float64(row[j])
		}
	}
	for i := 0; i < in; i++ {
		row := newW[i*out : (i+1)*out]
		for j := range row {
			row[j] = float32(float64(row[j]) - acc[j]/float64(in))
		}
	}
	return newW, newBias
}

// foldLayerNormT is foldLayerNorm for the unembedding, stored transposed as
// U [vocab, d] (W_U = Uᵀ): it returns U' and the new unembedding bias U·b.
func foldLayerNormT(o *owner, U, w, b []float32, vocab, d int) (newU, bias []float32) {
	newU = o.of(U)
	bias = make([]float32, vocab)
	for t := 0; t < vocab; t++ {
		row := newU[t*d : (t+1)*d]
		var sb, mean float64
		for i := range row {
			sb += float64(b[i]) * float64(row[i])
			row[i] *= w[i]
			mean += float64(row[i])
		}
		mean /= float64(d)
		for i := range row {
			row[i] = float32(float64(row[i]) - mean)
		}
		bias[t] = float32(sb)
	}
	return newU, bias
}

// centerRows subtracts from each row of s (rows of length n) its mean.
func centerRows(o *owner, s []float32, n int) []float32 {
	s = o.of(s)
	for off := 0; off < len(s); off += n {
		row := s[off : off+n]
		var mean float64
		for _, x := range row {
			mean += float64(x)
		}
		mean /= float64(n)
		for i := range row {
			row[i] = float32(float64(row[i]) - mean)
		}
	}
	return s
}
