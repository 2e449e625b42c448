package weights

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// gpt2SmallConfig is openai-community/gpt2's config.json, trimmed of the
// task_specific_params that do not concern the loader.
const gpt2SmallConfig = `{
  "activation_function": "gelu_new",
  "architectures": ["GPT2LMHeadModel"],
  "attn_pdrop": 0.1,
  "bos_token_id": 50256,
  "embd_pdrop": 0.1,
  "eos_token_id": 50256,
  "initializer_range": 0.02,
  "layer_norm_epsilon": 1e-05,
  "model_type": "gpt2",
  "n_ctx": 1024,
  "n_embd": 768,
  "n_head": 12,
  "n_layer": 12,
  "n_positions": 1024,
  "resid_pdrop": 0.1,
  "summary_activation": null,
  "summary_first_dropout": 0.1,
  "summary_proj_to_labels": true,
  "summary_type": "cls_index",
  "summary_use_proj": true,
  "vocab_size": 50257
}`

func TestParseConfigGPT2Small(t *testing.T) {
	c, err := ParseConfig([]byte(gpt2SmallConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.DInner() != 3072 || c.DHead() != 64 || c.Activation() != ActivationGELUTanh || !c.TiedEmbeddings() {
		t.Errorf("DInner %d DHead %d Activation %q tied %v", c.DInner(), c.DHead(), c.Activation(), c.TiedEmbeddings())
	}
	if c.LayerNormEpsilon != 1e-5 || c.VocabSize != 50257 || c.NPositions != 1024 {
		t.Errorf("%+v", c)
	}
	if got := c.AttnScale(5); got != 0.125 {
		t.Errorf("AttnScale = %v, want 1/8", got)
	}
	specs := c.ParamSpecs()
	if len(specs) != 2+12*12+2 {
		t.Errorf("%d param specs, want 148", len(specs))
	}
	n := 0
	for _, s := range specs {
		k := 1
		for _, d := range s.Shape {
			k *= d
		}
		n += k
	}
	if n != 124439808 { // GPT-2 small's published parameter count
		t.Errorf("%d parameters, want 124439808", n)
	}
}

func TestParseConfigDefaultsAndOptions(t *testing.T) {
	c, err := ParseConfig([]byte(`{"model_type":"gpt2","n_inner":100,"activation_function":"gelu_pytorch_tanh",
		"scale_attn_weights":false,"scale_attn_by_inverse_layer_idx":true,"reorder_and_upcast_attn":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.NEmbd != 768 || c.NLayer != 12 || c.LayerNormEpsilon != 1e-5 {
		t.Errorf("defaults not applied: %+v", c)
	}
	if c.DInner() != 100 || c.Activation() != ActivationGELUTanh {
		t.Errorf("DInner %d activation %q", c.DInner(), c.Activation())
	}
	if got := c.AttnScale(3); got != 0.25 {
		t.Errorf("AttnScale(3) without √d scaling = %v, want 1/4", got)
	}
	c.ScaleAttnWeights = nil
	if got, want := c.AttnScale(1), 1/(8.0*2); math.Abs(got-want) > 1e-15 {
		t.Errorf("AttnScale(1) = %v, want %v", got, want)
	}
	for act, want := range map[string]string{"gelu": ActivationGELUErf, "relu": ActivationReLU, "gelu_fast": ActivationGELUTanh} {
		c, err := ParseConfig([]byte(`{"model_type":"gpt2","activation_function":"` + act + `"}`))
		if err != nil || c.Activation() != want {
			t.Errorf("%s: %v %v", act, c, err)
		}
	}
}

func TestParseConfigRefuses(t *testing.T) {
	for _, tc := range []struct {
		json, want string
	}{
		{`{"model_type":"llama"}`, `model_type "llama"`},
		{`{}`, `model_type ""`},
		{`{"model_type":"gpt2","n_embd":770}`, "n_embd 770 is not a multiple of n_head 12"},
		{`{"model_type":"gpt2","n_layer":0}`, "n_layer must be positive, is 0"},
		{`{"model_type":"gpt2","vocab_size":-1}`, "vocab_size must be positive"},
		{`{"model_type":"gpt2","n_inner":0}`, "n_inner must be positive or null"},
		{`{"model_type":"gpt2","n_ctx":512}`, "n_ctx 512 differs from n_positions 1024"},
		{`{"model_type":"gpt2","activation_function":"swish"}`, `activation_function "swish" is not supported`},
		{`{"model_type":"gpt2","layer_norm_epsilon":0}`, "layer_norm_epsilon must be positive"},
		{`{"model_type":"gpt2","add_cross_attention":true}`, "add_cross_attention=true is not supported"},
		{`{"model_type":"gpt2","n_embd":"768"}`, "n_embd"},
		{`{"model_type":"gpt2"`, "unexpected end"},
		{`{"model_type":"gpt2","n_layer":0,"n_head":0}`, "n_layer must be positive, is 0; n_head must be positive, is 0"},
	} {
		_, err := ParseConfig([]byte(tc.json))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "weights: config.json: ") {
			t.Errorf("%s: error %v, want %q", tc.json, err, tc.want)
		}
	}
}

func TestReadConfigNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(`{"model_type":"gpt2","activation_function":"silu"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path+": activation_function \"silu\"") {
		t.Errorf("error %v", err)
	}
	if _, err := ReadConfig(filepath.Join(t.TempDir(), "none.json")); err == nil || !strings.Contains(err.Error(), "none.json") {
		t.Errorf("missing file: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.NHead = 7
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "n_embd 768 is not a multiple of n_head 7") {
		t.Errorf("error %v", err)
	}
}
