package weights

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
)

// Activation functions a Config may name, as canonical values of
// (*Config).Activation. The gpt2 package must implement each exactly:
//
//	ActivationGELUTanh  0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))   HF "gelu_new", "gelu_pytorch_tanh", "gelu_fast"
//	ActivationGELUErf   0.5·x·(1 + erf(x/√2))                         HF "gelu"
//	ActivationReLU      max(x, 0)                                      HF "relu"
const (
	ActivationGELUTanh = "gelu_new"
	ActivationGELUErf  = "gelu"
	ActivationReLU     = "relu"
)

// canonicalActivation maps every accepted config.json spelling to its canonical
// name. HF's gelu_fast and gelu_pytorch_tanh compute the same formula as
// gelu_new, differing only in float rounding order.
func canonicalActivation(name string) (string, bool) {
	switch name {
	case "gelu_new", "gelu_pytorch_tanh", "gelu_fast":
		return ActivationGELUTanh, true
	case "gelu":
		return ActivationGELUErf, true
	case "relu":
		return ActivationReLU, true
	}
	return "", false
}

// DefaultConfig returns the values Hugging Face's GPT2Config uses for keys a
// config.json leaves out; they are the sizes of GPT-2 small.
func DefaultConfig() *Config {
	return &Config{
		ModelType:          "gpt2",
		VocabSize:          50257,
		NPositions:         1024,
		NEmbd:              768,
		NLayer:             12,
		NHead:              12,
		ActivationFunction: "gelu_new",
		LayerNormEpsilon:   1e-5,
		BOSTokenID:         50256,
		EOSTokenID:         50256,
	}
}

// ReadConfig reads a Hugging Face GPT-2 config.json, fills keys it leaves out
// (except model_type, which must be "gpt2") with GPT2Config's defaults, and
// validates the result.
func ReadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	c, err := parseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("weights: %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig is ReadConfig for the bytes of a config.json.
func ParseConfig(b []byte) (*Config, error) {
	c, err := parseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("weights: config.json: %w", err)
	}
	return c, nil
}

func parseConfig(b []byte) (*Config, error) {
	c := DefaultConfig()
	c.ModelType = "" // required: GPT-2 configs always name it, and it tells them from other models' configs
	if err := json.Unmarshal(b, c); err != nil {
		return nil, err
	}
	if p := c.problems(); len(p) > 0 {
		return nil, errors.New(strings.Join(p, "; "))
	}
	return c, nil
}

// Validate checks that the sizes are usable and refuses, by field name, every
// setting the GPT-2 forward of this project does not implement. Everything it
// accepts is applied as documented on Activation and AttnScale.
func (c *Config) Validate() error {
	if p := c.problems(); len(p) > 0 {
		return errors.New("weights: config: " + strings.Join(p, "; "))
	}
	return nil
}

func (c *Config) problems() []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if c.ModelType != "gpt2" {
		bad("model_type %q is not supported, want \"gpt2\"", c.ModelType)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"vocab_size", c.VocabSize}, {"n_positions", c.NPositions}, {"n_embd", c.NEmbd}, {"n_layer", c.NLayer}, {"n_head", c.NHead}} {
		if f.v <= 0 {
			bad("%s must be positive, is %d", f.name, f.v)
		}
	}
	if c.NHead > 0 && c.NEmbd > 0 && c.NEmbd%c.NHead != 0 {
		bad("n_embd %d is not a multiple of n_head %d", c.NEmbd, c.NHead)
	}
	if c.NInner != nil && *c.NInner <= 0 {
		bad("n_inner must be positive or null, is %d", *c.NInner)
	}
	if c.NCtx != 0 && c.NCtx != c.NPositions {
		bad("n_ctx %d differs from n_positions %d; the position table and mask are sized by n_positions, so the file is ambiguous", c.NCtx, c.NPositions)
	}
	if _, ok := canonicalActivation(c.ActivationFunction); !ok {
		bad("activation_function %q is not supported (want gelu_new, gelu_pytorch_tanh, gelu_fast, gelu or relu)", c.ActivationFunction)
	}
	if !(c.LayerNormEpsilon > 0) || math.IsInf(c.LayerNormEpsilon, 0) {
		bad("layer_norm_epsilon must be positive, is %v", c.LayerNormEpsilon)
	}
	if c.AddCrossAttention {
		bad("add_cross_attention=true is not supported (encoder-decoder GPT-2)")
	}
	return problems
}

// DInner is the width of the MLP hidden layer: n_inner, or 4·n_embd when null.
func (c *Config) DInner() int {
	if c.NInner != nil {
		return *c.NInner
	}
	return 4 * c.NEmbd
}

// DHead is the width of one attention head.
func (c *Config) DHead() int { return c.NEmbd / c.NHead }

// Activation is the canonical name of the MLP nonlinearity (one of the
// Activation* constants). It is "" only for configs that Validate refuses.
func (c *Config) Activation() string {
	a, _ := canonicalActivation(c.ActivationFunction)
	return a
}

// TiedEmbeddings reports whether the unembedding is wte (tie_word_embeddings
// absent or true).
func (c *Config) TiedEmbeddings() bool {
	return c.TieWordEmbeddings == nil || *c.TieWordEmbeddings
}

// AttnScale is the factor the attention scores q·k of layer (0-based) must be
// multiplied by before the causal mask and softmax. It folds together the
// three attention settings of GPT2Config:
//
//   - scale_attn_weights (default true): divide by √d_head; false: do not.
//   - scale_attn_by_inverse_layer_idx: additionally divide by layer+1.
//   - reorder_and_upcast_attn: HF then computes q·k in float32 with the scale
//     applied inside the matmul. A float32 forward already computes in
//     float32, so the only difference is rounding order; this flag needs no
//     action beyond using AttnScale.
//
// HF divides by √d_head (and then by layer+1) where this multiplies by the
// reciprocal; for GPT-2's power-of-four d_head = 64 both are exact.
func (c *Config) AttnScale(layer int) float64 {
	s := 1.0
	if c.ScaleAttnWeights == nil || *c.ScaleAttnWeights {
		s /= math.Sqrt(float64(c.DHead()))
	}
	if c.ScaleAttnByInverseLayerIdx {
		s /= float64(layer + 1)
	}
	return s
}
