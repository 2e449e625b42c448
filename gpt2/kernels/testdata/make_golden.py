"""Writes golden.json: reference outputs from torch for the kernels' tests.

Run from gpt2/kernels:  /usr/bin/python3 testdata/make_golden.py
(Debian python3-torch 1.13 + numpy; inputs from numpy RandomState(seed)).
Products are computed in float64 from the float32 inputs; GELU, LayerNorm and
softmax with torch's own float32 ops, as GPT-2 runs them.
"""
import json
import os

import numpy as np
import torch


def f32(a):
    # Shortest decimal that parses back to the same float32.
    return [float(str(v)) for v in np.asarray(a, dtype=np.float32).ravel()]


rng = np.random.RandomState(20240611)
cases = {"products": [], "gelu": None, "layernorm": [], "softmax": []}

for op, m, k, n in [("MatMul", 5, 7, 9), ("MatMul", 9, 50, 49), ("MatMulTransB", 3, 17, 65),
                    ("MatMulTransB", 10, 33, 4), ("MatMulTransA", 8, 13, 50), ("MatMulTransA", 1, 64, 3)]:
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    a_store = a.T.copy() if op == "MatMulTransA" else a    # stored [k×m]
    b_store = b.T.copy() if op == "MatMulTransB" else b    # stored [n×k]
    want = torch.from_numpy(a).double() @ torch.from_numpy(b).double()
    cases["products"].append({"op": op, "m": m, "k": k, "n": n, "a": f32(a_store), "b": f32(b_store),
                              "c0": f32(c0), "want": [float(v) for v in want.numpy().ravel()],
                              "want_acc": [float(v) for v in (want + torch.from_numpy(c0).double()).numpy().ravel()]})

x = np.concatenate([np.linspace(-12, 12, 241), rng.standard_normal(200) * 3,
                    [0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 100.0, -100.0]]).astype(np.float32)
bias = rng.standard_normal(x.size).astype(np.float32) * 0.1
pre = torch.from_numpy(x) + torch.from_numpy(bias)
cases["gelu"] = {"x": f32(x), "bias": f32(bias),
                 "want": f32(torch.nn.functional.gelu(pre, approximate="tanh").numpy())}

for rows, cols, eps, affine in [(3, 768, 1e-5, True), (4, 5, 1e-5, False), (2, 64, 1e-5, True),
                                (2, 100, 1e-5, True), (3, 37, 1e-5, False)]:
    xs = (rng.standard_normal((rows, cols)) * 4 + 2).astype(np.float32)
    ln = torch.nn.LayerNorm(cols, eps=eps, elementwise_affine=affine)
    case = {"rows": rows, "cols": cols, "eps": eps, "x": f32(xs)}
    if affine:
        g = rng.standard_normal(cols).astype(np.float32)
        bt = rng.standard_normal(cols).astype(np.float32)
        with torch.no_grad():
            ln.weight.copy_(torch.from_numpy(g))
            ln.bias.copy_(torch.from_numpy(bt))
        case["gamma"], case["beta"] = f32(g), f32(bt)
    xt = torch.from_numpy(xs)
    with torch.no_grad():
        case["want"] = f32(ln(xt).numpy())
    var = xt.double().var(dim=1, unbiased=False)
    case["mean"] = f32(xt.double().mean(dim=1).numpy())
    case["rstd"] = f32((1 / torch.sqrt(var + eps)).numpy())
    cases["layernorm"].append(case)

for rows, cols, past in [(6, 6, 0), (3, 10, 7), (4, 9, 100), (2, 1024, 1000)]:
    xs = (rng.standard_normal((rows, cols)) * 5).astype(np.float32)
    xt = torch.from_numpy(xs)
    q = torch.arange(rows).unsqueeze(1) + past
    kpos = torch.arange(cols).unsqueeze(0)
    masked = xt.masked_fill(kpos > q, float("-inf"))
    cases["softmax"].append({"rows": rows, "cols": cols, "past": past, "x": f32(xs),
                             "want": f32(torch.softmax(masked, dim=1).numpy())})

out = os.path.join(os.path.dirname(__file__), "golden.json")
with open(out + ".tmp", "w") as fh:
    json.dump(cases, fh)
os.replace(out + ".tmp", out)
