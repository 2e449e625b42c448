package weights

// Config is a GPT-2 config.json as Hugging Face's GPT2Config writes it.
// Fields the loader does not implement are kept so that it can refuse them by
// name instead of silently ignoring them.
type Config struct {
	ModelType                  string   `json:"model_type"`
	Architectures              []string `json:"architectures,omitempty"`
	VocabSize                  int      `json:"vocab_size"`
	NPositions                 int      `json:"n_positions"`
	NCtx                       int      `json:"n_ctx,omitempty"`
	NEmbd                      int      `json:"n_embd"`
	NLayer                     int      `json:"n_layer"`
	NHead                      int      `json:"n_head"`
	NInner                     *int     `json:"n_inner"` // null in HF configs means 4·n_embd
	ActivationFunction         string   `json:"activation_function"`
	LayerNormEpsilon           float64  `json:"layer_norm_epsilon"`
	ScaleAttnWeights           *bool    `json:"scale_attn_weights,omitempty"` // absent means true
	ScaleAttnByInverseLayerIdx bool     `json:"scale_attn_by_inverse_layer_idx,omitempty"`
	ReorderAndUpcastAttn       bool     `json:"reorder_and_upcast_attn,omitempty"`
	BOSTokenID                 int      `json:"bos_token_id"`
	EOSTokenID                 int      `json:"eos_token_id"`
	TieWordEmbeddings          *bool    `json:"tie_word_embeddings,omitempty"` // absent means true
	AddCrossAttention          bool     `json:"add_cross_attention,omitempty"` // refused: encoder-decoder only
}

// Source says where a checkpoint came from, so that every report can name the
// exact model, revision and commit behind its numbers.
type Source struct {
	Ref      string // what the user asked for: a Hub id, a folder or a file
	Repo     string // Hub repository id ("openai-community/gpt2"); empty for local paths
	Revision string // requested revision (branch, tag or sha); empty for local paths
	Commit   string // resolved commit sha; empty for local paths
	Dir      string // local folder holding config.json and the weights
}

// Param is one named parameter as float32, with the dtype it was stored in.
// For F32 files Data aliases the read-only mmap: never write to it.
type Param struct {
	Name        string
	Shape       []int
	Data        []float32
	StoredDType string // "F32", "F16" or "BF16"
}
