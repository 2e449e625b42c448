#!/usr/bin/python3
"""Reference values for toy's Adam: PyTorch's torch.optim.AdamW.

Run from this folder with Debian's python3 (torch 1.13):

    cd toy/testdata/adam && /usr/bin/python3 make_golden.py

Two float32 parameter tensors take 6 AdamW steps (lr 1e-2, betas 0.9/0.99,
eps 1e-8) with seeded random gradients, once without and once with weight
decay 0.1; golden.json holds the initial values, every step's gradients and
the parameters after every step.
"""
import json

import torch

torch.manual_seed(7)


def run(decay):
    params = [torch.randn(5, dtype=torch.float32), torch.randn(2, 3, dtype=torch.float32)]
    init = [p.detach().clone() for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=decay)
    grads, after = [], []
    for step in range(6):
        g = [torch.randn(p.shape, dtype=torch.float32) * (0.1 if step % 2 else 1.0) for p in params]
        for p, gi in zip(params, g):
            p.grad = gi.clone()
        opt.step()
        grads.append([gi.flatten().tolist() for gi in g])
        after.append([p.detach().flatten().tolist() for p in params])
    return {"weight_decay": decay, "init": [p.flatten().tolist() for p in init], "grads": grads, "after": after}


with open("golden.json", "w") as f:
    json.dump({"lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "runs": [run(0.0), run(0.1)]}, f)
    f.write("\n")
