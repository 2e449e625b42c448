#!/usr/bin/python3
"""Compare factlens' GPT-2 small forward with PyTorch's at full scale.

Loads a 548 MB GPT-2 small checkpoint (written by the PyTorch baseline's
gpt2_torch.write_safetensors) into gpt2_torch.GPT2, runs a few prompts of
token ids in float32 and float64, runs `factlens cache` on the same ids and
checkpoint folder, reads its safetensors output by hand (struct + json +
numpy) and prints max abs / max rel differences of the logits and of
blocks.11.hook_resid_post (the residual stream before ln_f).

Usage (from the repository root):
  go build -o /tmp/factlens-bench ./cmd/factlens
  /usr/bin/python3 gpt2/testdata/fullscale/compare_torch.py \
      --torch-dir ../shared/bench/torch-gpt2 --model /tmp/gpt2rand-bench \
      --factlens /tmp/factlens-bench

--model is a folder holding model.safetensors, GPT-2 small's config.json,
vocab.json and merges.txt.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for k, meta in header.items():
            if k == "__metadata__":
                continue
            if meta["dtype"] != "F32":
                raise ValueError("%s: dtype %s, want F32" % (k, meta["dtype"]))
            b, e = meta["data_offsets"]
            f.seek(base + b)
            out[k] = np.frombuffer(f.read(e - b), dtype="<f4").reshape(meta["shape"])
    return out


def diffs(got, want):
    got = got.astype(np.float64)
    want = want.astype(np.float64)
    d = np.abs(got - want)
    scale = np.abs(want).max()
    return d.max(), d.max() / scale, np.abs(want).max()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch-dir", required=True, help="folder with gpt2_torch.py")
    ap.add_argument("--model", required=True, help="folder with model.safetensors and config.json")
    ap.add_argument("--factlens", default="factlens", help="factlens binary")
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.torch_dir))
    import gpt2_torch as g

    torch.set_num_threads(2)
    model = g.GPT2(empty=True)
    g.load_readinto(model, os.path.join(args.model, "model.safetensors"))
    model.eval()
    model64 = g.GPT2(empty=True).double()
    model64.load_state_dict({k: (v.double() if v.is_floating_point() else v) for k, v in model.state_dict().items()})
    model64.eval()

    resid = {}
    model.h[-1].register_forward_hook(lambda mod, inp, out: resid.__setitem__("f32", out.detach()))
    model64.h[-1].register_forward_hook(lambda mod, inp, out: resid.__setitem__("f64", out.detach()))

    rng = np.random.default_rng(0)
    prompts = {
        "1 token": [464],
        "8 tokens (text ids)": [464, 3139, 286, 4881, 318, 6342, 13, 383],
        "128 random": rng.integers(0, g.VOCAB, 128).tolist(),
        "1024 random": rng.integers(0, g.VOCAB, 1024).tolist(),
    }
    print("%-22s %-26s %12s %12s %12s" % ("prompt", "comparison", "max|abs|", "max abs/max|ref|", "max|ref|"))
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, ids in prompts.items():
            out = os.path.join(tmp, "x.safetensors")
            subprocess.run([args.factlens, "-q", "cache", "--model", args.model,
                            "--ids", ",".join(map(str, ids)),
                            "--hooks", "blocks.11.hook_resid_post", "--out", out], check=True)
            fl = read_safetensors(out)
            idx = torch.tensor([ids])
            with torch.no_grad():
                l32 = model(idx).numpy()
                l64 = model64(idx).numpy()
            r32, r64 = resid["f32"].numpy(), resid["f64"].numpy()
            rows = [
                ("logits factlens-torch32", fl["logits"], l32),
                ("logits factlens-torch64", fl["logits"], l64),
                ("logits torch32-torch64", l32, l64),
                ("resid11 factlens-torch32", fl["blocks.11.hook_resid_post"], r32),
                ("resid11 factlens-torch64", fl["blocks.11.hook_resid_post"], r64),
                ("resid11 torch32-torch64", r32, r64),
            ]
            for label, got, want in rows:
                if got.shape != want.shape:
                    raise SystemExit("%s %s: shape %s, want %s" % (name, label, got.shape, want.shape))
                a, rel, ref = diffs(got, want)
                if label.startswith("logits factlens-torch32"):
                    worst = max(worst, rel)
                print("%-22s %-26s %12.3e %12.3e %12.3e" % (name, label, a, rel, ref))
            agree = (fl["logits"][0].argmax(-1) == l32[0].argmax(-1)).mean()
            print("%-22s %-26s %12.4f" % (name, "argmax agreement", agree))
    print("worst logits max abs / max |torch32|: %.3e" % worst)


if __name__ == "__main__":
    main()
