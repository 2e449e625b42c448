#!/usr/bin/python3
"""Time PyTorch's equivalent of factlens' BenchmarkGradients: one forward and
backward of GPT-2 small (gpt2_torch.GPT2, random weights, float32) for
attribution patching over every MLP neuron — the gradient of
logit[100] − logit[200] at the last position with respect to all 12
blocks.L.mlp.hook_post — optionally also every parameter's gradient.

Without --params no parameter requires grad: the embedding output is made
to require grad so autograd builds the graph, and torch.autograd.grad asks
for the 12 hooked activations only. The forward computes every position's
logits (the model's only mode); factlens' benchmark computes the last
position's.

Usage:
  OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 \
    /usr/bin/python3 bench_torch_grad.py --torch-dir ../shared/bench/torch-gpt2 \
      --seq 128 [--params] [--weights /tmp/gpt2rand-bench/model.safetensors]

Prints one line; each of --runs runs repeats the step for >= --min-time s,
ms/step min/median/max over runs.
"""
import argparse
import os
import statistics
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch-dir", required=True)
    ap.add_argument("--weights", default="/tmp/gpt2rand-bench/model.safetensors")
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--params", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=1.0)
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.torch_dir))
    import gpt2_torch as g

    torch.set_num_threads(args.threads)
    model = g.GPT2(empty=True)
    g.load_readinto(model, args.weights)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(args.params)
    if not args.params:
        model.wte.register_forward_hook(lambda mod, inp, out: out.requires_grad_())
    posts = []
    for blk in model.h:
        blk.mlp.act.register_forward_hook(lambda mod, inp, out: posts.append(out))

    gen = torch.Generator().manual_seed(2)
    idx = torch.randint(0, g.VOCAB, (1, args.seq), generator=gen)

    def step():
        posts.clear()
        model.zero_grad(set_to_none=True)
        logits = model(idx)
        obj = logits[0, -1, 100] - logits[0, -1, 200]
        if args.params:
            for t in posts:
                t.retain_grad()
            obj.backward()
            grads = [t.grad for t in posts]
        else:
            grads = torch.autograd.grad(obj, posts)
        assert len(grads) == 12 and grads[0].shape == (1, args.seq, 3072)

    step()
    t0 = time.perf_counter()
    step()
    reps = max(1, int(args.min_time / (time.perf_counter() - t0)))
    per = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        per.append((time.perf_counter() - t0) / reps * 1e3)
    print("torch grad 1x%d %s | ms/step min %.1f med %.1f max %.1f" % (
        args.seq, "mlp_post+params" if args.params else "mlp_post", min(per), statistics.median(per), max(per)))


if __name__ == "__main__":
    main()
