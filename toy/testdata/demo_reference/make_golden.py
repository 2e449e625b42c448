#!/usr/bin/python3
"""Independent reference for the shipped demo model: what it answers.

Run from this folder with Debian's python3 (numpy, regex; no torch needed):

    cd toy/testdata/demo_reference && /usr/bin/python3 make_golden.py

It reads ../demo (config.json, model.safetensors parsed by hand, vocab.json,
merges.txt, world.json), tokenizes every fact's prompt with the encoder.py
re-implementation of ../tokenizer/make_golden.py, runs a float64 numpy GPT-2
forward written from Hugging Face's GPT2LMHeadModel (pre-LayerNorm blocks,
Conv1D x@W+b, fused c_attn split q|k|v head-major, causal softmax attention
scaled by 1/sqrt(d_head), gelu_new, tied lm_head), and writes golden.json:
for every fact the prompt ids, the answer id, the top-1 id over the whole
vocabulary and the answer's softmax probability, plus the recall.
"""
import json
import math
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tokenizer"))
from make_golden import Encoder  # noqa: E402

DEMO = "../demo"


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[base + a:base + b], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return out


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(p, cfg, ids):
    d, h = cfg["n_embd"], cfg["n_head"]
    dh = d // h
    eps = cfg["layer_norm_epsilon"]
    t = len(ids)
    x = p["wte.weight"][ids] + p["wpe.weight"][:t]
    mask = np.triu(np.ones((t, t), dtype=bool), 1)
    for l in range(cfg["n_layer"]):
        g = lambda k: p[f"h.{l}.{k}"]  # noqa: E731
        a = layer_norm(x, g("ln_1.weight"), g("ln_1.bias"), eps)
        qkv = a @ g("attn.c_attn.weight") + g("attn.c_attn.bias")
        q, k, v = np.split(qkv, 3, axis=-1)
        heads = []
        for i in range(h):
            s = slice(i * dh, (i + 1) * dh)
            sc = q[:, s] @ k[:, s].T / math.sqrt(dh)
            sc[mask] = -np.inf
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc /= sc.sum(-1, keepdims=True)
            heads.append(sc @ v[:, s])
        x = x + np.concatenate(heads, -1) @ g("attn.c_proj.weight") + g("attn.c_proj.bias")
        m = layer_norm(x, g("ln_2.weight"), g("ln_2.bias"), eps)
        x = x + gelu_new(m @ g("mlp.c_fc.weight") + g("mlp.c_fc.bias")) @ g("mlp.c_proj.weight") + g("mlp.c_proj.bias")
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], eps)
    return x[-1] @ p["wte.weight"].T


def main():
    with open(os.path.join(DEMO, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["activation_function"] == "gelu_new" and cfg.get("tie_word_embeddings", True)
    p = load_safetensors(os.path.join(DEMO, "model.safetensors"))
    with open(os.path.join(DEMO, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(DEMO, "merges.txt"), encoding="utf-8") as f:
        merges = [l.split(" ") for l in f.read().split("\n")[1:] if l]
    enc = Encoder(vocab, merges)
    with open(os.path.join(DEMO, "world.json")) as f:
        world = json.load(f)
    facts = []
    correct = 0
    for rel in world["relations"]:
        for person in world["people"]:
            prompt = rel["template"].replace("{first}", person["first"]).replace("{last}", person["last"])
            ids = enc.encode(prompt)
            (answer,) = enc.encode(" " + person["attributes"][rel["name"]])
            logits = forward(p, cfg, ids)
            z = logits - logits.max()
            prob = float(np.exp(z[answer]) / np.exp(z).sum())
            top = int(np.argmax(logits))
            correct += top == answer
            facts.append({"prompt": prompt, "ids": ids, "answer": answer, "top1": top, "answer_prob": prob})
    out = {"facts": facts, "correct": correct, "recall": correct / len(facts)}
    with open("golden.json", "w") as f:
        json.dump(out, f, indent=0)
        f.write("\n")
    print(f"recall {correct}/{len(facts)}")


if __name__ == "__main__":
    main()
