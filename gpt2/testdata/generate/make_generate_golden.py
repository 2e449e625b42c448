#!/usr/bin/python3
"""Independent reference for package gpt2's text generation (Model.Generate).

Run from this folder with Debian's python3 (torch 1.13, numpy; no transformers):

    cd gpt2/testdata/generate && /usr/bin/python3 make_generate_golden.py

It reads the tiny checkpoints of ../golden (written by make_goldens.py) and, for
each case below, decodes greedily the way Hugging Face's GPT2LMHeadModel.generate
does with use_cache=True and do_sample=False: a prefill of the prompt that returns
every layer's keys and values (past_key_values), then one forward per new token
whose single query attends to the cached keys and values, argmax of the last
logits. The KV-cached forward is written here from transformers' modeling_gpt2
(GPT2Attention with layer_past: key = cat(past_key, key)), in float64, and is
checked at every step against re-running make_goldens.hf_forward (the forward
package gpt2's goldens come from) on the whole sequence; the TransformerLens
case re-runs make_goldens.tl_forward on TL-processed weights.

Every step's argmax is required to win by a margin (MIN_MARGIN) that float32
rounding cannot overturn, so the ids are a fair test of a float32 model.

Outputs:
  generate.json             per case: checkpoint, processing, prompt, prepend_bos,
                            the greedy ids (new tokens only) and, for the
                            stop-at-EOS case, where HF's eos stop ends the output
  generate.safetensors      "<case>/logits" [new tokens, vocab] float32: the
                            logits each new token was chosen from
"""
import json
import os
import struct
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ beside make_goldens.py
HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "golden")
sys.path.insert(0, GOLDEN)
import make_goldens as mg  # noqa: E402  (sets torch's default dtype to float64)

MIN_MARGIN = 1e-3  # smallest allowed top-1 minus top-2 logit at any step


def read_checkpoint(name):
    """config.json and the float32 tensors of ../golden/<name>/model.safetensors."""
    d = os.path.join(GOLDEN, name)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    W = {}
    for k, v in header.items():
        if k == "__metadata__" or k.endswith(".attn.bias"):
            continue
        assert v["dtype"] == "F32", (name, k, v["dtype"])
        lo, hi = v["data_offsets"]
        W[k] = np.frombuffer(data[lo:hi], dtype="<f4").reshape(v["shape"])
    return cfg, W


def cached_forward(cfg, W, tokens, past):
    """HF GPT2LMHeadModel forward of `tokens` (one row) at positions
    len(past)..len(past)+T-1 with past_key_values `past` (per layer (K, V), each
    [H, t, dh]); returns the logits [T, vocab] and the extended past."""
    t = mg.t
    d, H = cfg["n_embd"], cfg["n_head"]
    dh, eps = d // H, cfg["layer_norm_epsilon"]
    T = len(tokens)
    p0 = past[0][0].shape[1] if past else 0
    pos = torch.arange(p0, p0 + T)
    x = t(W["wte.weight"])[torch.tensor(tokens)] + t(W["wpe.weight"])[pos]
    # Query i (absolute position p0+i) sees keys 0..p0+i.
    visible = torch.arange(p0 + T)[None, :] <= pos[:, None]
    ln = lambda x, w, b: torch.nn.functional.layer_norm(x, (d,), t(w), t(b), eps)
    new_past = []
    for l in range(cfg["n_layer"]):
        p = f"h.{l}."
        h = ln(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"])
        qkv = h @ t(W[p + "attn.c_attn.weight"]) + t(W[p + "attn.c_attn.bias"])
        q, k, v = (a.reshape(T, H, dh).transpose(0, 1) for a in qkv.split(d, dim=1))  # [H, T, dh]
        if past:
            k = torch.cat([past[l][0], k], dim=1)
            v = torch.cat([past[l][1], v], dim=1)
        new_past.append((k, v))
        w = q @ k.transpose(1, 2)
        if cfg.get("scale_attn_weights", True):
            w = w / (v.shape[-1] ** 0.5)
        if cfg.get("scale_attn_by_inverse_layer_idx"):
            w = w / float(l + 1)
        w = w.masked_fill(~visible[None], torch.finfo(w.dtype).min)
        a = torch.softmax(w, dim=-1) @ v  # [H, T, dh]
        a = a.transpose(0, 1).reshape(T, d)
        x = x + a @ t(W[p + "attn.c_proj.weight"]) + t(W[p + "attn.c_proj.bias"])
        h = ln(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"])
        m = mg.act_fn(cfg, h @ t(W[p + "mlp.c_fc.weight"]) + t(W[p + "mlp.c_fc.bias"]))
        x = x + m @ t(W[p + "mlp.c_proj.weight"]) + t(W[p + "mlp.c_proj.bias"])
    h = ln(x, W["ln_f.weight"], W["ln_f.bias"])
    U = t(W.get("lm_head.weight", W["wte.weight"]))
    return h @ U.T, new_past


def argmax_with_margin(row, where):
    top2 = torch.topk(row, 2).values
    margin = (top2[0] - top2[1]).item()
    assert margin >= MIN_MARGIN, f"{where}: top-2 margin {margin:.2e} is below {MIN_MARGIN}"
    return int(torch.argmax(row).item())


def greedy(cfg, W, prompt, n_new, processing):
    """Greedy continuation: KV-cached for processing "hf" (cross-checked against
    full re-runs), full re-runs of the TL-style forward for "tl"."""
    ids, rows = [], []
    seq = list(prompt)
    if processing == "tl":
        S = mg.tl_process(cfg, mg.to_tl(cfg, W))
        for step in range(n_new):
            row = mg.tl_forward(cfg, S, [seq])["logits"][0, -1]
            tok = argmax_with_margin(row, f"step {step}")
            ids.append(tok)
            rows.append(row)
            seq.append(tok)
        return ids, torch.stack(rows)
    logits, past = cached_forward(cfg, W, seq, None)
    row = logits[-1]
    for step in range(n_new):
        full = mg.hf_forward(cfg, W, [seq])["logits"][0, -1]
        err = (full - row).abs().max().item()
        assert err < 1e-10, f"step {step}: cached and full forward differ by {err}"
        tok = argmax_with_margin(row, f"step {step}")
        ids.append(tok)
        rows.append(row)
        seq.append(tok)
        if step + 1 < n_new:
            logits, past = cached_forward(cfg, W, [tok], past)
            row = logits[-1]
    assert len(seq) <= cfg["n_positions"]
    return ids, torch.stack(rows)


def main():
    os.chdir(HERE)
    # (case, checkpoint, processing, prompt, prepend_bos, new tokens). The prompts
    # were picked (from numpy's default_rng(7)) for continuations that do not
    # just repeat one token, and for one that emits eos_token_id.
    cases = [
        # Fills the 64-position context exactly: the last token is chosen at position 63.
        ("tied_f32", "tied_f32", "hf", [17, 48, 90, 81, 67, 61, 4, 71], False, 56),
        ("tied_f32_bos", "tied_f32", "hf", [56, 93, 90, 57, 39, 75, 88, 87], True, 20),
        ("tied_f32_tl", "tied_f32", "tl", [68, 3, 93, 84], True, 20),
        ("options", "options", "hf", [49, 25, 47, 36, 23], False, 30),
        ("options_eos", "options", "hf", [48, 55, 53, 48, 95], False, 12),
    ]
    meta, tensors = {}, []
    for case, ck, processing, prompt, bos, n_new in cases:
        cfg, W = read_checkpoint(ck)
        seq = ([cfg["bos_token_id"]] if bos else []) + list(prompt)
        ids, logits = greedy(cfg, W, seq, n_new, processing)
        entry = dict(checkpoint=ck, processing=processing, prompt=prompt, prepend_bos=bos,
                     max_new_tokens=n_new, greedy_ids=ids)
        eos = cfg["eos_token_id"]
        if eos in ids:
            # HF generate with eos_token_id stops after emitting it (and keeps it).
            entry["eos_token_id"] = eos
            entry["stop_at_eos_ids"] = ids[:ids.index(eos) + 1]
        meta[case] = entry
        tensors.append((f"{case}/logits", logits.numpy().astype(np.float32), "F32"))
        print(f"{case}: {ids}")
    with open("generate.json", "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    mg.write_safetensors("generate.safetensors", tensors,
                         {"reference": "make_generate_golden.py float64 greedy decoding, logits stored as float32"})


if __name__ == "__main__":
    main()
