// Package gpt2 owns the GPT-2 language model of factlens: the exact forward
// pass of Hugging Face's GPT2LMHeadModel over float32 weights from package
// weights, with TransformerLens' hook points for reading and changing any
// intermediate activation, TransformerLens' optional weight processing, and
// the GPT-2 tokenizer. The float32 matrix products live in gpt2/kernels.
//
// # Semantics
//
// Run computes what GPT2LMHeadModel computes in float32: learned positions
// counted from 0; pre-LayerNorm blocks (biased variance, layer_norm_epsilon
// from the config); the fused c_attn projection split into q|k|v with
// head-major columns; scores q·k scaled by 1/√d_head (and by 1/(layer+1)
// when scale_attn_by_inverse_layer_idx is set, as weights.Config.AttnScale
// says); a causal mask; the config's activation (gelu_new, the tanh form, for
// every released GPT-2); and logits through lm_head.weight, or wte.weight
// when the embeddings are tied.
//
// # Hook points
//
// Names and shapes are TransformerLens' for GPT-2, batch dimension first
// (Model.HookNames lists them in forward order):
//
//	hook_embed, hook_pos_embed                    [batch, pos, d_model]
//	blocks.L.hook_resid_pre                       [batch, pos, d_model]
//	blocks.L.ln1.hook_scale                       [batch, pos, 1]
//	blocks.L.ln1.hook_normalized                  [batch, pos, d_model]
//	blocks.L.attn.hook_q, hook_k, hook_v          [batch, pos, n_head, d_head]
//	blocks.L.attn.hook_attn_scores, hook_pattern  [batch, n_head, query_pos, key_pos]
//	blocks.L.attn.hook_z                          [batch, pos, n_head, d_head]
//	blocks.L.attn.hook_result                     [batch, pos, n_head, d_model]
//	blocks.L.hook_attn_out, hook_resid_mid        [batch, pos, d_model]
//	blocks.L.ln2.hook_scale, ln2.hook_normalized  as ln1
//	blocks.L.mlp.hook_pre, mlp.hook_post          [batch, pos, d_mlp]
//	blocks.L.hook_mlp_out, hook_resid_post        [batch, pos, d_model]
//	ln_final.hook_scale, ln_final.hook_normalized as ln1
//
// hook_attn_scores are scaled and masked (-Inf where a key is hidden);
// hook_pattern is their softmax. hook_scale is √(biased variance + eps) and
// hook_normalized is (x − mean)/scale, times the LayerNorm weight plus its
// bias unless fold_ln removed them. hook_result (each head's output before
// b_O is added) is computed only when a hook or the cache asks for it.
//
// A hook sees an activation before anything downstream reads it, so a change
// made by a hook propagates: patching hook_q changes the scores, patching
// hook_result changes hook_attn_out (the sum of results plus b_O), patching
// a LayerNorm's hook_scale changes its hook_normalized.
//
// # Batches and padding
//
// Rows of a batch must have equal length. Rows of different lengths are run
// left-padded with RunOptions.Mask, which is checked to be left padding.
// Position ids of a padded row count from its first real token; no query
// attends to a pad key. The outputs at real tokens then equal those of the
// row run alone (up to float rounding). Pad positions hold defined but
// meaningless values, following TransformerLens: their position embedding is
// zero and their attention pattern row is all zeros (they attend to nothing),
// so their hook_z is zero; never read them.
//
// # Weight processing
//
// Processing (zero value: raw Hugging Face) selects TransformerLens'
// from_pretrained transformations, which change the coordinates of some hook
// points but not what the model computes; see Processing for exactly which.
// Reports should print Model.Processing.
package gpt2
