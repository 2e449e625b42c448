#!/usr/bin/python3
"""Independent reference values for package gpt2's forward pass.

Run from this folder with Debian's python3 (torch 1.13, numpy; no transformers):

    cd gpt2/testdata/golden && /usr/bin/python3 make_goldens.py

It writes tiny random GPT-2 checkpoints in the layouts Hugging Face produces,
each as <name>/config.json + safetensors written by hand (struct + json), and
for each the activations of every TransformerLens hook point plus logits,
computed here in float64 and stored as float32 in acts_<name>.safetensors:

  tied_f32          no name prefix, h.N.attn.bias mask buffers, tied lm_head, F32
  prefixed_untied   "transformer." prefix, separate lm_head.weight, F32
  f16, bf16         weights stored as F16 / BF16 (reference uses the stored values)
  sharded           two shards + model.safetensors.index.json
  options           scale_attn_by_inverse_layer_idx, exact-erf "gelu", n_inner 96,
                    layer_norm_epsilon 1e-3

Every acts file holds "batch/<hook>" for the 2-row batch of inputs.json: every
hook point for tied_f32 and options, and logits, hook_embed and every
hook_resid_post for the other loader variants. The tied_f32 file also holds
  "padded/<hook>"  a left-padded batch with attention mask (TransformerLens' padding
                   semantics: position ids from the first real token, pad keys hidden,
                   pad queries attend to nothing, pad position embeddings zero)
  "nomlp0/<hook>"  the batch with block 0's MLP removed (resid_post = resid_mid)
  "tl/<hook>"      TransformerLens from_pretrained processing (fold_ln,
                   center_writing_weights, center_unembed, fold_value_biases),
                   implemented on TL's own weight layout (W_Q [head, d_model, d_head], ...)
                   following transformer_lens weight_processing, run by a TL-style forward.

The HF-style forward follows transformers' modeling_gpt2 (GPT2LMHeadModel, eager
attention): Conv1D x@W+b, fused c_attn split q|k|v then heads, scores/sqrt(d_head),
causal mask, softmax, c_proj; pre-LN blocks; ln_f; tied or separate lm_head.
The TL-style forward is checked against it on unprocessed weights before use.
"""
import json
import math
import os
import struct

import numpy as np
import torch

torch.set_default_dtype(torch.float64)

BASE = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=97, n_positions=64)


# ---------------------------------------------------------------- safetensors

def f32_to_bf16_bits(a):
    """Round float32 to bfloat16 (nearest, ties to even), as uint16 bits."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def encode(arr, dtype):
    """Bytes of arr stored as dtype, and the float32 values a reader gets back."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if dtype == "F32":
        return arr.tobytes(), arr
    if dtype == "F16":
        h = arr.astype(np.float16)
        return h.tobytes(), h.astype(np.float32)
    if dtype == "BF16":
        b = f32_to_bf16_bits(arr)
        back = (b.astype(np.uint32) << 16).view(np.float32).reshape(arr.shape)
        return b.tobytes(), back
    raise ValueError(dtype)


def write_safetensors(path, items, metadata=None):
    """items: list of (name, np.ndarray float32, dtype). Header padded with spaces
    to a multiple of 8 bytes, data in header order, as HF's writer does."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, arr, dtype in items:
        data, _ = encode(arr, dtype)
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------- weights

def make_config(**over):
    cfg = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_ctx=BASE["n_positions"],
               n_inner=None, activation_function="gelu_new", layer_norm_epsilon=1e-5,
               bos_token_id=96, eos_token_id=96, scale_attn_weights=True,
               scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False)
    cfg.update(BASE)
    cfg.update(over)
    return cfg


def d_mlp(cfg):
    return cfg["n_inner"] if cfg["n_inner"] else 4 * cfg["n_embd"]


def random_weights(cfg, seed, lm_head=False):
    """HF-named float32 parameters (canonical names, no prefix). Larger than GPT-2's
    init so attention is peaked and GELU is in its curved range; LayerNorm weights
    and all biases non-trivial so that folding is exercised."""
    rng = np.random.default_rng(seed)
    d, m, V, P = cfg["n_embd"], d_mlp(cfg), cfg["vocab_size"], cfg["n_positions"]
    n = lambda shape, s: (rng.standard_normal(shape) * s).astype(np.float32)
    W = {"wte.weight": n((V, d), 0.5), "wpe.weight": n((P, d), 0.3)}
    for l in range(cfg["n_layer"]):
        h = f"h.{l}."
        W[h + "ln_1.weight"] = (1 + n(d, 0.2)).astype(np.float32)
        W[h + "ln_1.bias"] = n(d, 0.2)
        W[h + "attn.c_attn.weight"] = n((d, 3 * d), 0.2)
        W[h + "attn.c_attn.bias"] = n(3 * d, 0.2)
        W[h + "attn.c_proj.weight"] = n((d, d), 0.2)
        W[h + "attn.c_proj.bias"] = n(d, 0.1)
        W[h + "ln_2.weight"] = (1 + n(d, 0.2)).astype(np.float32)
        W[h + "ln_2.bias"] = n(d, 0.2)
        W[h + "mlp.c_fc.weight"] = n((d, m), 0.2)
        W[h + "mlp.c_fc.bias"] = n(m, 0.2)
        W[h + "mlp.c_proj.weight"] = n((m, d), 0.1)
        W[h + "mlp.c_proj.bias"] = n(d, 0.1)
    W["ln_f.weight"] = (1 + n(d, 0.2)).astype(np.float32)
    W["ln_f.bias"] = n(d, 0.2)
    if lm_head:
        W["lm_head.weight"] = n((V, d), 0.5)
    return W


def param_order(cfg):
    names = ["wte.weight", "wpe.weight"]
    for l in range(cfg["n_layer"]):
        for t in ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                  "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                  "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]:
            names.append(f"h.{l}.{t}")
    return names + ["ln_f.weight", "ln_f.bias"]


def save_checkpoint(dirname, cfg, W, dtype="F32", prefix="", attn_buffers=False, shards=1):
    """Writes config.json and the safetensors file(s); returns the float32 values a
    reader sees (after the F16/BF16 round trip)."""
    os.makedirs(dirname, exist_ok=True)
    with open(os.path.join(dirname, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    items, seen = [], {}
    for name in param_order(cfg):
        items.append((prefix + name, W[name], dtype))
        if attn_buffers and name.endswith("attn.c_attn.bias"):
            P = cfg["n_positions"]
            tril = np.tril(np.ones((P, P), dtype=np.float32)).reshape(1, 1, P, P)
            items.append((name.replace("c_attn.bias", "bias"), tril, "F32"))
    if "lm_head.weight" in W:
        items.append(("lm_head.weight", W["lm_head.weight"], dtype))
    for name, arr, dt in items:
        canon = name[len(prefix):] if name.startswith(prefix) else name
        if canon in W:
            seen[canon] = encode(arr, dt)[1]
    if shards == 1:
        write_safetensors(os.path.join(dirname, "model.safetensors"), items, {"format": "pt"})
    else:
        per = math.ceil(len(items) / shards)
        weight_map, total = {}, 0
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = items[s * per:(s + 1) * per]
            write_safetensors(os.path.join(dirname, fname), part, {"format": "pt"})
            for name, arr, dt in part:
                weight_map[name] = fname
                total += len(encode(arr, dt)[0])
        with open(os.path.join(dirname, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return seen


# ---------------------------------------------------------------- HF-style forward

def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


class Recorder:
    """Captures every hook point (float64 clone) and applies optional edits."""

    def __init__(self, edits=None):
        self.acts, self.edits = {}, edits or {}

    def __call__(self, name, x):
        if name in self.edits:
            x = self.edits[name](x)
        self.acts[name] = x.detach().clone()
        return x


def act_fn(cfg, x):
    a = cfg["activation_function"]
    if a in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    if a == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    raise ValueError(a)


def layer_norm(hook, name, x, w, b, eps):
    """TL's LayerNorm with hooks: hook_scale then hook_normalized (= HF ln output
    when w, b are given; the un-weighted normalized vector when they are None)."""
    x = x - x.mean(-1, keepdim=True)
    scale = hook(name + ".hook_scale", (x.pow(2).mean(-1, keepdim=True) + eps).sqrt())
    x = x / scale
    if w is not None:
        x = x * w + b
    return hook(name + ".hook_normalized", x)


def attn_mask_and_positions(tokens, mask):
    B, T = tokens.shape
    if mask is None:
        return torch.arange(T).expand(B, T), None
    m = torch.tensor(mask, dtype=torch.bool)
    pos = (m.long().cumsum(-1) - 1).clamp(min=0)
    return pos, m


def hf_forward(cfg, W, tokens, mask=None, hook=None, drop_mlp=(), logits=True):
    hook = hook or Recorder()
    tokens = torch.tensor(tokens)
    B, T = tokens.shape
    d, H = cfg["n_embd"], cfg["n_head"]
    dh, eps = d // H, cfg["layer_norm_epsilon"]
    pos, m = attn_mask_and_positions(tokens, mask)
    embed = hook("hook_embed", t(W["wte.weight"])[tokens])
    pe = t(W["wpe.weight"])[pos]
    if m is not None:
        pe = pe.masked_fill(~m[..., None], 0.0)
    pos_embed = hook("hook_pos_embed", pe)
    x = embed + pos_embed
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(cfg["n_layer"]):
        p = f"h.{l}."
        L = f"blocks.{l}."
        x = hook(L + "hook_resid_pre", x)
        h = layer_norm(hook, L + "ln1", x, t(W[p + "ln_1.weight"]), t(W[p + "ln_1.bias"]), eps)
        qkv = h @ t(W[p + "attn.c_attn.weight"]) + t(W[p + "attn.c_attn.bias"])
        q, k, v = qkv.split(d, dim=2)
        q = hook(L + "attn.hook_q", q.reshape(B, T, H, dh))
        k = hook(L + "attn.hook_k", k.reshape(B, T, H, dh))
        v = hook(L + "attn.hook_v", v.reshape(B, T, H, dh))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k)
        if cfg.get("scale_attn_weights", True):
            scores = scores / math.sqrt(dh)
        if cfg.get("scale_attn_by_inverse_layer_idx"):
            scores = scores / float(l + 1)
        visible = causal[None, None]
        if m is not None:
            visible = visible & m[:, None, None, :]
        scores = hook(L + "attn.hook_attn_scores", scores.masked_fill(~visible, float("-inf")))
        pattern = torch.softmax(scores, dim=-1)
        pattern = hook(L + "attn.hook_pattern", torch.where(torch.isnan(pattern), 0.0, pattern))
        z = hook(L + "attn.hook_z", torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        W_O = t(W[p + "attn.c_proj.weight"]).reshape(H, dh, d)
        result = hook(L + "attn.hook_result", torch.einsum("bqhe,hed->bqhd", z, W_O))
        attn_out = hook(L + "hook_attn_out", result.sum(2) + t(W[p + "attn.c_proj.bias"]))
        x = hook(L + "hook_resid_mid", x + attn_out)
        h = layer_norm(hook, L + "ln2", x, t(W[p + "ln_2.weight"]), t(W[p + "ln_2.bias"]), eps)
        pre = hook(L + "mlp.hook_pre", h @ t(W[p + "mlp.c_fc.weight"]) + t(W[p + "mlp.c_fc.bias"]))
        post = hook(L + "mlp.hook_post", act_fn(cfg, pre))
        mlp_out = hook(L + "hook_mlp_out", post @ t(W[p + "mlp.c_proj.weight"]) + t(W[p + "mlp.c_proj.bias"]))
        if l in drop_mlp:
            x = hook(L + "hook_resid_post", x)
        else:
            x = hook(L + "hook_resid_post", x + mlp_out)
    h = layer_norm(hook, "ln_final", x, t(W["ln_f.weight"]), t(W["ln_f.bias"]), eps)
    U = t(W.get("lm_head.weight", W["wte.weight"]))
    hook.acts["logits"] = h @ U.T
    return hook.acts


# ---------------------------------------------------------------- TL weights + forward

def to_tl(cfg, W):
    """TransformerLens' GPT-2 weight conversion (weight_conversions/gpt2.py), float64."""
    d, H = cfg["n_embd"], cfg["n_head"]
    dh = d // H
    g = lambda k: np.asarray(W[k], dtype=np.float64)
    S = {"embed.W_E": g("wte.weight"), "pos_embed.W_pos": g("wpe.weight")}
    for l in range(cfg["n_layer"]):
        p, L = f"h.{l}.", f"blocks.{l}."
        S[L + "ln1.w"], S[L + "ln1.b"] = g(p + "ln_1.weight"), g(p + "ln_1.bias")
        Wqkv, bqkv = g(p + "attn.c_attn.weight"), g(p + "attn.c_attn.bias")
        for i, n in enumerate("QKV"):
            # "m (i h) -> i m h": head-major columns
            S[L + f"attn.W_{n}"] = Wqkv[:, i * d:(i + 1) * d].reshape(d, H, dh).transpose(1, 0, 2).copy()
            S[L + f"attn.b_{n}"] = bqkv[i * d:(i + 1) * d].reshape(H, dh).copy()
        S[L + "attn.W_O"] = g(p + "attn.c_proj.weight").reshape(H, dh, d).copy()
        S[L + "attn.b_O"] = g(p + "attn.c_proj.bias")
        S[L + "ln2.w"], S[L + "ln2.b"] = g(p + "ln_2.weight"), g(p + "ln_2.bias")
        S[L + "mlp.W_in"], S[L + "mlp.b_in"] = g(p + "mlp.c_fc.weight"), g(p + "mlp.c_fc.bias")
        S[L + "mlp.W_out"], S[L + "mlp.b_out"] = g(p + "mlp.c_proj.weight"), g(p + "mlp.c_proj.bias")
    S["ln_final.w"], S["ln_final.b"] = g("ln_f.weight"), g("ln_f.bias")
    S["unembed.W_U"] = g("lm_head.weight" if "lm_head.weight" in W else "wte.weight").T.copy()
    S["unembed.b_U"] = np.zeros(cfg["vocab_size"])
    return S


def tl_process(cfg, S):
    """fold_layer_norm (fold_biases, center_weights), center_writing_weights,
    center_unembed, fold_value_biases — in that order, as
    HookedTransformer.process_weights applies them."""
    S = {k: v.copy() for k, v in S.items()}
    for l in range(cfg["n_layer"]):
        L = f"blocks.{l}."
        w, b = S.pop(L + "ln1.w"), S.pop(L + "ln1.b")
        for n in "QKV":
            S[L + f"attn.b_{n}"] = S[L + f"attn.b_{n}"] + (S[L + f"attn.W_{n}"] * b[None, :, None]).sum(-2)
            S[L + f"attn.W_{n}"] = S[L + f"attn.W_{n}"] * w[None, :, None]
            S[L + f"attn.W_{n}"] -= S[L + f"attn.W_{n}"].mean(1, keepdims=True)
        w, b = S.pop(L + "ln2.w"), S.pop(L + "ln2.b")
        S[L + "mlp.b_in"] = S[L + "mlp.b_in"] + (S[L + "mlp.W_in"] * b[:, None]).sum(-2)
        S[L + "mlp.W_in"] = S[L + "mlp.W_in"] * w[:, None]
        S[L + "mlp.W_in"] -= S[L + "mlp.W_in"].mean(0, keepdims=True)
    w, b = S.pop("ln_final.w"), S.pop("ln_final.b")
    S["unembed.b_U"] = S["unembed.b_U"] + (S["unembed.W_U"] * b[:, None]).sum(-2)
    S["unembed.W_U"] = S["unembed.W_U"] * w[:, None]
    S["unembed.W_U"] -= S["unembed.W_U"].mean(0, keepdims=True)
    # center_writing_weights
    S["embed.W_E"] -= S["embed.W_E"].mean(-1, keepdims=True)
    S["pos_embed.W_pos"] -= S["pos_embed.W_pos"].mean(-1, keepdims=True)
    for l in range(cfg["n_layer"]):
        L = f"blocks.{l}."
        S[L + "attn.W_O"] -= S[L + "attn.W_O"].mean(-1, keepdims=True)
        S[L + "attn.b_O"] -= S[L + "attn.b_O"].mean()
        S[L + "mlp.W_out"] -= S[L + "mlp.W_out"].mean(-1, keepdims=True)
        S[L + "mlp.b_out"] -= S[L + "mlp.b_out"].mean()
    # center_unembed
    S["unembed.W_U"] -= S["unembed.W_U"].mean(-1, keepdims=True)
    S["unembed.b_U"] -= S["unembed.b_U"].mean()
    # fold_value_biases
    for l in range(cfg["n_layer"]):
        L = f"blocks.{l}."
        S[L + "attn.b_O"] = S[L + "attn.b_O"] + (S[L + "attn.b_V"][:, :, None] * S[L + "attn.W_O"]).sum((0, 1))
        S[L + "attn.b_V"] = np.zeros_like(S[L + "attn.b_V"])
    return S


def tl_forward(cfg, S, tokens, hook=None):
    hook = hook or Recorder()
    tokens = torch.tensor(tokens)
    B, T = tokens.shape
    d, H = cfg["n_embd"], cfg["n_head"]
    dh, eps = d // H, cfg["layer_norm_epsilon"]
    g = lambda k: t(S[k]) if k in S else None
    x = hook("hook_embed", g("embed.W_E")[tokens]) + hook("hook_pos_embed", g("pos_embed.W_pos")[torch.arange(T)].expand(B, T, d))
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(cfg["n_layer"]):
        L = f"blocks.{l}."
        x = hook(L + "hook_resid_pre", x)
        h = layer_norm(hook, L + "ln1", x, g(L + "ln1.w"), g(L + "ln1.b"), eps)
        q = hook(L + "attn.hook_q", torch.einsum("bpm,hme->bphe", h, g(L + "attn.W_Q")) + g(L + "attn.b_Q"))
        k = hook(L + "attn.hook_k", torch.einsum("bpm,hme->bphe", h, g(L + "attn.W_K")) + g(L + "attn.b_K"))
        v = hook(L + "attn.hook_v", torch.einsum("bpm,hme->bphe", h, g(L + "attn.W_V")) + g(L + "attn.b_V"))
        attn_scale = math.sqrt(dh) * ((l + 1) if cfg.get("scale_attn_by_inverse_layer_idx") else 1)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / attn_scale
        scores = hook(L + "attn.hook_attn_scores", scores.masked_fill(~causal, float("-inf")))
        pattern = hook(L + "attn.hook_pattern", torch.softmax(scores, dim=-1))
        z = hook(L + "attn.hook_z", torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        result = hook(L + "attn.hook_result", torch.einsum("bqhe,hem->bqhm", z, g(L + "attn.W_O")))
        attn_out = hook(L + "hook_attn_out", result.sum(2) + g(L + "attn.b_O"))
        x = hook(L + "hook_resid_mid", x + attn_out)
        h = layer_norm(hook, L + "ln2", x, g(L + "ln2.w"), g(L + "ln2.b"), eps)
        pre = hook(L + "mlp.hook_pre", h @ g(L + "mlp.W_in") + g(L + "mlp.b_in"))
        post = hook(L + "mlp.hook_post", act_fn(cfg, pre))
        mlp_out = hook(L + "hook_mlp_out", post @ g(L + "mlp.W_out") + g(L + "mlp.b_out"))
        x = hook(L + "hook_resid_post", x + mlp_out)
    h = layer_norm(hook, "ln_final", x, g("ln_final.w"), g("ln_final.b"), eps)
    hook.acts["logits"] = h @ g("unembed.W_U") + g("unembed.b_U")
    return hook.acts


# ---------------------------------------------------------------- main

def main():
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    rng = np.random.default_rng(100)
    V = BASE["vocab_size"]
    batch = rng.integers(0, V - 1, size=(2, 8)).tolist()
    padded = [[96, 96, 96] + rng.integers(0, V - 1, size=5).tolist(), rng.integers(0, V - 1, size=8).tolist()]
    padded_mask = [[False] * 3 + [True] * 5, [True] * 8]
    with open("inputs.json", "w") as f:
        json.dump({"batch": batch, "padded": padded, "padded_mask": padded_mask, "nomlp_layer": 0}, f, indent=1)

    specs = [
        ("tied_f32", make_config(), dict(seed=1), dict(attn_buffers=True)),
        ("prefixed_untied", make_config(tie_word_embeddings=False), dict(seed=2, lm_head=True), dict(prefix="transformer.")),
        ("f16", make_config(), dict(seed=3), dict(dtype="F16")),
        ("bf16", make_config(), dict(seed=4), dict(dtype="BF16")),
        ("sharded", make_config(), dict(seed=5), dict(shards=2)),
        ("options", make_config(scale_attn_by_inverse_layer_idx=True, activation_function="gelu",
                                n_inner=96, layer_norm_epsilon=1e-3), dict(seed=6), {}),
    ]
    for name, cfg, wargs, sargs in specs:
        W = random_weights(cfg, **wargs)
        W = save_checkpoint(name, cfg, W, **sargs)  # the values a reader gets back
        out = {f"batch/{k}": v for k, v in hf_forward(cfg, W, batch).items()}

        # The TL-style forward on unprocessed weights must agree with the HF one.
        tl_raw = tl_forward(cfg, to_tl(cfg, W), batch)
        for k, v in tl_raw.items():
            ref = out[f"batch/{k}"]
            fin = torch.isfinite(ref)
            assert torch.equal(fin, torch.isfinite(v)), k
            err = (v[fin] - ref[fin]).abs().max().item()
            assert err < 1e-10, (name, k, err)

        if name == "tied_f32":
            out.update({f"padded/{k}": v for k, v in hf_forward(cfg, W, padded, mask=padded_mask).items()})
            out.update({f"nomlp0/{k}": v for k, v in hf_forward(cfg, W, batch, drop_mlp=(0,)).items()})
            out.update({f"tl/{k}": v for k, v in tl_forward(cfg, tl_process(cfg, to_tl(cfg, W)), batch).items()})
            # Padding sanity: real tokens of padded row 0 equal that row run alone.
            alone = hf_forward(cfg, W, [padded[0][3:]])
            err = (out["padded/logits"][0, 3:] - alone["logits"][0]).abs().max().item()
            assert err < 1e-10, err
        if name not in ("tied_f32", "options"):
            # Loader variants: the outputs that depend on every weight suffice.
            out = {k: v for k, v in out.items() if k.endswith(("logits", "hook_resid_post", "hook_embed"))}
        items = [(k, v.numpy().astype(np.float32), "F32") for k, v in sorted(out.items())]
        write_safetensors(f"acts_{name}.safetensors", items,
                          {"reference": "make_goldens.py float64 forward, stored as float32"})
        print(f"{name}: {len(items)} tensors")


if __name__ == "__main__":
    main()
