#!/usr/bin/python3
"""Independent reference gradients for package gpt2's gradient mode.

Run from this folder with Debian's python3 (torch 1.13, numpy; no transformers):

    cd gpt2/testdata/grad && /usr/bin/python3 make_grad_goldens.py

It reads the tiny checkpoints ../golden/tied_f32 and ../golden/options and the
token batches of ../golden/inputs.json, runs its own float64 PyTorch GPT-2
forward with TransformerLens' hook structure (every hook point a tensor that
keeps its gradient), differentiates with torch.autograd, and writes
grads.safetensors (float32) with:

  <case>/value           the objective (1 element)
  <case>/<hook point>    d objective / d activation at every hook point
  <case>/param/<name>    d objective / d parameter (CE cases only), HF names;
                         tied checkpoints: wte.weight holds both uses
  adamw/losses           CE loss before each of 3 torch.optim.AdamW steps
  adamw/param/<name>     every parameter after the 3 steps

Cases:
  tied_ld      tied_f32, batch, logit(5) - logit(17) at row 1, last position
  tied_ldpad   tied_f32, left-padded batch with mask, logit(11) - logit(3), row 0, last
  tied_ce      tied_f32, batch, weighted mean next-token cross-entropy
               (weight of position t of row b: 1 + 0.5*((b*8 + t) % 3))
  opt_ld       options (exact gelu, 1/(layer+1) scale, eps 1e-3, d_mlp 96),
               batch, logit(2) - logit(40) at row 0, last position
  opt_ce       options, batch, unweighted mean next-token cross-entropy
  adamw        tied_f32, batch, unweighted CE; AdamW lr 1e-2, betas (0.9, 0.95),
               eps 1e-8, weight decay 0.1 on 2-D parameters only, 3 steps

Padding semantics follow TransformerLens: position ids from the first real
token, pad position embeddings zero, pad keys hidden, pad queries attend to
nothing (their pattern row is zero and passes no gradient).
"""
import json
import math
import os
import struct

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
GOLDEN = os.path.join("..", "golden")


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype=np.float32)
        b = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


def load(name):
    d = os.path.join(GOLDEN, name)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    raw = read_safetensors(os.path.join(d, "model.safetensors"))
    P = {}
    for k, v in raw.items():
        k = k[len("transformer."):] if k.startswith("transformer.") else k
        if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
            continue  # causal mask buffers
        P[k] = torch.tensor(v.astype(np.float64), requires_grad=True)
    return cfg, P


class Tape:
    """Keeps every hook point tensor with retain_grad()."""

    def __init__(self):
        self.acts = {}

    def __call__(self, name, x):
        x.retain_grad()
        self.acts[name] = x
        return x


def act_fn(cfg, x):
    a = cfg["activation_function"]
    if a == "gelu_new":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if a == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    raise ValueError(a)


def layer_norm(tape, name, x, w, b, eps):
    xc = x - x.mean(-1, keepdim=True)
    scale = tape(name + ".hook_scale", (xc.pow(2).mean(-1, keepdim=True) + eps).sqrt())
    return tape(name + ".hook_normalized", xc / scale * w + b)


def forward(cfg, P, tokens, mask=None):
    tape = Tape()
    tokens = torch.tensor(tokens)
    B, T = tokens.shape
    d, H = cfg["n_embd"], cfg["n_head"]
    dh, eps = d // H, cfg["layer_norm_epsilon"]
    if mask is None:
        m = torch.ones(B, T, dtype=torch.bool)
    else:
        m = torch.tensor(mask, dtype=torch.bool)
    pos = (m.long().cumsum(-1) - 1).clamp(min=0)
    embed = tape("hook_embed", P["wte.weight"][tokens])
    pos_embed = tape("hook_pos_embed", P["wpe.weight"][pos] * m[..., None])
    x = embed + pos_embed
    visible = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None] & m[:, None, None, :]
    any_visible = visible.any(-1, keepdim=True)
    for l in range(cfg["n_layer"]):
        p, L = f"h.{l}.", f"blocks.{l}."
        x = tape(L + "hook_resid_pre", x * 1.0)  # its own node, like TL's HookPoint
        h = layer_norm(tape, L + "ln1", x, P[p + "ln_1.weight"], P[p + "ln_1.bias"], eps)
        qkv = h @ P[p + "attn.c_attn.weight"] + P[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(d, dim=2)
        q = tape(L + "attn.hook_q", q.reshape(B, T, H, dh))
        k = tape(L + "attn.hook_k", k.reshape(B, T, H, dh))
        v = tape(L + "attn.hook_v", v.reshape(B, T, H, dh))
        scale = 1.0 / math.sqrt(dh)
        if cfg.get("scale_attn_by_inverse_layer_idx"):
            scale /= l + 1
        raw = torch.einsum("bqhe,bkhe->bhqk", q, k) * scale
        scores = tape(L + "attn.hook_attn_scores", raw.masked_fill(~visible, float("-inf")))
        safe = torch.where(visible, scores, torch.tensor(-1e30))
        pattern = tape(L + "attn.hook_pattern", torch.softmax(safe, dim=-1) * any_visible)
        z = tape(L + "attn.hook_z", torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        W_O = P[p + "attn.c_proj.weight"].reshape(H, dh, d)
        result = tape(L + "attn.hook_result", torch.einsum("bqhe,hed->bqhd", z, W_O))
        attn_out = tape(L + "hook_attn_out", result.sum(2) + P[p + "attn.c_proj.bias"])
        x = tape(L + "hook_resid_mid", x + attn_out)
        h = layer_norm(tape, L + "ln2", x, P[p + "ln_2.weight"], P[p + "ln_2.bias"], eps)
        pre = tape(L + "mlp.hook_pre", h @ P[p + "mlp.c_fc.weight"] + P[p + "mlp.c_fc.bias"])
        post = tape(L + "mlp.hook_post", act_fn(cfg, pre))
        mlp_out = tape(L + "hook_mlp_out", post @ P[p + "mlp.c_proj.weight"] + P[p + "mlp.c_proj.bias"])
        x = tape(L + "hook_resid_post", x + mlp_out)
    h = layer_norm(tape, "ln_final", x, P["ln_f.weight"], P["ln_f.bias"], eps)
    U = P.get("lm_head.weight", P["wte.weight"])
    return h @ U.T, tape


def next_token_targets(tokens, mask=None):
    out = []
    for b, row in enumerate(tokens):
        r = []
        for t in range(len(row)):
            ok = t + 1 < len(row) and (mask is None or (mask[b][t] and mask[b][t + 1]))
            r.append(row[t + 1] if ok else -1)
        out.append(r)
    return out


def cross_entropy(logits, targets, weights=None):
    tg = torch.tensor(targets)
    w = torch.ones(tg.shape) if weights is None else torch.tensor(weights)
    w = torch.where(tg >= 0, w, torch.zeros(()))
    lp = torch.log_softmax(logits, dim=-1)
    nll = -lp.gather(-1, tg.clamp(min=0)[..., None])[..., 0]
    return (nll * w).sum() / w.sum()


def run_case(out, case, cfg, P, tokens, objective, mask=None, params=False):
    for t in P.values():
        t.grad = None
    logits, tape = forward(cfg, P, tokens, mask)
    value = objective(logits)
    value.backward()
    out[case + "/value"] = np.array([value.item()])
    for name, a in tape.acts.items():
        g = a.grad if a.grad is not None else torch.zeros_like(a)
        out[f"{case}/{name}"] = g.detach().numpy()
    if params:
        for name, t in P.items():
            out[f"{case}/param/{name}"] = t.grad.detach().numpy()
    print(f"{case}: value {value.item():.6f}, {len(tape.acts)} hook gradients")


def main():
    with open(os.path.join(GOLDEN, "inputs.json")) as f:
        inputs = json.load(f)
    batch, padded, pmask = inputs["batch"], inputs["padded"], inputs["padded_mask"]
    out = {}

    cfg, P = load("tied_f32")
    run_case(out, "tied_ld", cfg, P, batch, lambda lg: lg[1, -1, 5] - lg[1, -1, 17])
    run_case(out, "tied_ldpad", cfg, P, padded, lambda lg: lg[0, -1, 11] - lg[0, -1, 3], mask=pmask)
    weights = [[1 + 0.5 * ((b * 8 + t) % 3) for t in range(8)] for b in range(2)]
    targets = next_token_targets(batch)
    run_case(out, "tied_ce", cfg, P, batch, lambda lg: cross_entropy(lg, targets, weights), params=True)

    ocfg, OP = load("options")
    run_case(out, "opt_ld", ocfg, OP, batch, lambda lg: lg[0, -1, 2] - lg[0, -1, 40])
    run_case(out, "opt_ce", ocfg, OP, batch, lambda lg: cross_entropy(lg, targets), params=True)

    # AdamW: nanoGPT-style groups, weight decay on matrices only.
    cfg, P = load("tied_f32")
    decay = [t for t in P.values() if t.dim() == 2]
    no_decay = [t for t in P.values() if t.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        logits, _ = forward(cfg, P, batch)
        loss = cross_entropy(logits, targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out["adamw/losses"] = np.array(losses)
    for name, t in P.items():
        out["adamw/param/" + name] = t.detach().numpy()
    print("adamw losses", losses)

    write_safetensors("grads.safetensors", out)
    print(f"wrote grads.safetensors: {len(out)} tensors")


if __name__ == "__main__":
    main()
