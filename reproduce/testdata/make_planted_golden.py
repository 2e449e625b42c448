#!/usr/bin/python3
"""Independent reference for reproduce's measurements on the planted model.

Reads testdata/planted (config.json, model.safetensors, vocab.json,
facts.jsonl), runs GPT-2's forward pass written here in numpy (float64),
and writes testdata/planted_golden.json with:

  clean_lead       per athlete: logit(right sport) − mean logit(other sports)
                   at the last position, in facts.jsonl order
  effects          1 − Σ ablated lead / Σ clean lead, per layer, for
                   hook_mlp_out and hook_attn_out mean-ablated at the final
                   name token and hook_mlp_out mean-ablated at the final token
                   (means over the athletes at that position)
  name_attention   per layer, max over heads of the mean attention weight from
                   the last name token onto the first name token
  gate_removed     per athlete, 1 − lead / clean lead with its own AND neuron
                   (MLP 0 neuron n(i, j), athletes in order) mean-ablated at
                   the final name token
  pair_sport_logits[first][last]  the sport logits (order w, x, y, z) at the
                   last position of "T {first} {last} p", for all 36 pairs

Command (from the repository root):
  /usr/bin/python3 reproduce/testdata/make_planted_golden.py   (Debian python3-numpy 1.24.2)
"""
import json
import math
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(HERE, "planted")


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").astype(np.float64).reshape(info["shape"])
    return out


cfg = json.load(open(os.path.join(DIR, "config.json")))
W = load_safetensors(os.path.join(DIR, "model.safetensors"))
vocab = json.load(open(os.path.join(DIR, "vocab.json")))
facts = [json.loads(l) for l in open(os.path.join(DIR, "facts.jsonl")) if l.strip()]
L, H, d = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
dh = d // H
eps = cfg["layer_norm_epsilon"]


def ln(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(tokens, edits=()):
    """edits: (hook, layer, pos, lo, values) replacing part of a vector."""
    def apply(hook, layer, x):
        for h, l, p, lo, v in edits:
            if h == hook and l == layer:
                x[p, lo:lo + len(v)] = v
        return x

    P = len(tokens)
    x = W["wte.weight"][tokens] + W["wpe.weight"][:P]
    cache = {}
    for l in range(L):
        p = "h.%d." % l
        a = ln(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"])
        qkv = a @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]
        q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
        z = np.zeros((P, d))
        pats = []
        for h in range(H):
            s = q[:, h * dh:(h + 1) * dh] @ k[:, h * dh:(h + 1) * dh].T / math.sqrt(dh)
            s = s + np.triu(np.full((P, P), -np.inf), 1)
            s = np.exp(s - s.max(-1, keepdims=True))
            s = s / s.sum(-1, keepdims=True)
            pats.append(s)
            z[:, h * dh:(h + 1) * dh] = s @ v[:, h * dh:(h + 1) * dh]
        attn = apply("attn_out", l, z @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"])
        x = x + attn
        m = ln(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"])
        post = apply("post", l, gelu_new(m @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"]))
        mlp = apply("mlp_out", l, post @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"])
        x = x + mlp
        cache[l] = dict(attn_out=attn.copy(), mlp_out=mlp.copy(), post=post.copy(), pattern=np.array(pats))
    f = ln(x, W["ln_f.weight"], W["ln_f.bias"])
    return f[-1] @ W["lm_head.weight"].T, cache


sports = []
for f in facts:
    s = f["target"].strip()
    if s not in sports:
        sports.append(s)
sport_ids = [vocab["Ġ" + s] for s in ["w", "x", "y", "z"]]


def prompt(subject):
    first, last = subject.split(" ")
    return [vocab["T"], vocab["Ġ" + first], vocab["Ġ" + last], vocab["Ġp"]]


def lead(logits, target):
    sl = logits[sport_ids]
    t = ["w", "x", "y", "z"].index(target)
    return sl[t] - np.delete(sl, t).mean()


NAME, FINAL = 2, 3
runs = [forward(prompt(f["subject"])) for f in facts]
targets = [f["target"].strip() for f in facts]
clean = [lead(lg, t) for (lg, _), t in zip(runs, targets)]
mean = {key: [np.mean([c[l][key][pos] for _, c in runs], axis=0) for l in range(L)]
        for key, pos in [("mlp_out", NAME), ("attn_out", NAME), ("post", NAME)]}
mean_final = [np.mean([c[l]["mlp_out"][FINAL] for _, c in runs], axis=0) for l in range(L)]

effects = {"mlp_at_final_name_token": [], "attn_at_final_name_token": [], "mlp_at_final_token": []}
for l in range(L):
    for key, hook, pos, mu in [("mlp_at_final_name_token", "mlp_out", NAME, mean["mlp_out"][l]),
                               ("attn_at_final_name_token", "attn_out", NAME, mean["attn_out"][l]),
                               ("mlp_at_final_token", "mlp_out", FINAL, mean_final[l])]:
        tot = sum(lead(forward(prompt(f["subject"]), [(hook, l, pos, 0, mu)])[0], t) for f, t in zip(facts, targets))
        effects[key].append(1 - tot / sum(clean))

name_attention = [max(np.mean([c[l]["pattern"][h][NAME][NAME - 1] for _, c in runs]) for h in range(H)) for l in range(L)]

firsts, lasts = "ABCDEF", "GHJKLM"
gate_removed = []
n = 0
for f, t, c0 in zip(facts, targets, clean):
    first, last = f["subject"].split(" ")
    i, j = firsts.index(first), lasts.index(last)
    neuron = i * 5 + (j if j < i else j - 1)  # pairs (i, j), i != j, in order
    lg, _ = forward(prompt(f["subject"]), [("post", 0, NAME, neuron, [mean["post"][0][neuron]])])
    gate_removed.append(1 - lead(lg, t) / c0)

pair = {a: {b: list(forward(prompt(a + " " + b))[0][sport_ids]) for b in lasts} for a in firsts}

golden = dict(sports_order=["w", "x", "y", "z"], clean_lead=clean, effects=effects,
              name_attention=name_attention, gate_removed=gate_removed, pair_sport_logits=pair)
with open(os.path.join(HERE, "planted_golden.json"), "w") as out:
    json.dump(golden, out, indent=1, default=float)
    out.write("\n")
