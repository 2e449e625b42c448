// Package weights owns everything between a GPT-2 checkpoint on disk (or on the
// Hugging Face Hub) and float32 slices in memory: the Hub client and its cache
// (compatible with Python's huggingface_hub), the safetensors format (read by
// mmap, written atomically), config.json, and the mapping of Hugging Face's
// GPT-2 tensor names onto one canonical set with every shape checked.
//
// It knows nothing about running a model; package gpt2 builds on it. What a
// forward pass must honour from config.json is exposed as methods rather than
// raw fields: Config.Activation (tanh or erf GELU, or ReLU), Config.AttnScale
// (scale_attn_weights, scale_attn_by_inverse_layer_idx and
// reorder_and_upcast_attn folded into one factor per layer), Config.DInner,
// Config.LayerNormEpsilon, and Checkpoint.Unembedding (lm_head or tied wte).
// Settings it cannot honour are refused by name in Config.Validate.
package weights
