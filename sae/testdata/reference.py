#!/usr/bin/env python3
"""Independent reference values for package sae, computed with PyTorch autograd
in float64 following SAELens' definitions (standard_sae.py, topk_sae.py,
sae.py:training_forward_pass, evals.py, torch.optim.Adam).

It also writes the SAE folders under vintages/: one small SAE saved in each
cfg.json vintage (SAELens 6 nested metadata, SAELens 5 flat, pre-5
hook_point), a pre-5 TopK, an OpenAI-v5-style layer_norm SAE and a pre-5
expected_average_only_in SAE, with safetensors written by the minimal writer
below (not by the Go code under test) and the expected outputs in
vintages/expected.json.

Regenerate with (Debian's python3-torch):

    cd sae/testdata && /usr/bin/python3 reference.py > reference.json
"""
import json
import os
import struct

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(20240917)


def arr(a):
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def rand(*shape, scale=1.0):
    # float32-representable values so that Go's float32 inputs are identical.
    return (rng.standard_normal(shape) * scale).astype(np.float32).astype(np.float64)


def loss_case(name, arch, n, d_in, d_sae, k=0, l1=0.0, dead=None, aux_coeff=1.0, apply_b_dec=True):
    x = rand(n, d_in)
    W_enc = rand(d_in, d_sae, scale=0.5)
    b_enc = rand(d_sae, scale=0.1)
    W_dec = rand(d_sae, d_in, scale=0.5)
    b_dec = rand(d_in, scale=0.1)
    P = {k_: torch.tensor(v, requires_grad=True) for k_, v in
         dict(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec).items()}
    X = torch.tensor(x)
    sae_in = X - P["b_dec"] * float(apply_b_dec)
    pre = sae_in @ P["W_enc"] + P["b_enc"]
    if arch == "standard":
        acts = torch.relu(pre)
    else:
        top = torch.topk(pre, k=k, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    out = acts @ P["W_dec"] + P["b_dec"]
    mse = (out - X).pow(2).sum(-1).mean()
    l1_loss = torch.tensor(0.0)
    aux = torch.tensor(0.0)
    if arch == "standard":
        l1_loss = (l1 * (acts * P["W_dec"].norm(dim=1)).norm(p=1, dim=-1)).mean()
    elif dead is not None:
        mask = torch.zeros(d_sae, dtype=torch.bool)
        mask[dead] = True
        n_dead = int(mask.sum())
        residual = (X - out).detach()
        k_aux = d_in // 2
        scale = min(n_dead / k_aux, 1.0)
        k_aux = min(k_aux, n_dead)
        lat = torch.where(mask[None], pre, torch.tensor(-float("inf")))
        t = lat.topk(k_aux, dim=-1)
        aux_acts = torch.zeros_like(pre).scatter(-1, t.indices, t.values)
        recons = aux_acts @ P["W_dec"] + P["b_dec"]
        aux = aux_coeff * scale * (recons - residual).pow(2).sum(-1).mean()
    total = mse + l1_loss + aux
    total.backward()
    return dict(
        name=name, arch=arch, n=n, d_in=d_in, d_sae=d_sae, k=k, l1=l1,
        dead=list(dead) if dead is not None else None, aux_coeff=aux_coeff,
        apply_b_dec=apply_b_dec,
        x=arr(x), W_enc=arr(W_enc), b_enc=arr(b_enc), W_dec=arr(W_dec), b_dec=arr(b_dec),
        total=total.item(), mse=mse.item(), l1_loss=l1_loss.item(), aux=aux.item(),
        l0=float((acts > 0).sum(-1).double().mean()),
        grad_W_enc=arr(P["W_enc"].grad), grad_b_enc=arr(P["b_enc"].grad),
        grad_W_dec=arr(P["W_dec"].grad), grad_b_dec=arr(P["b_dec"].grad),
    )


def adam_case():
    p0 = rand(7)
    grads = [rand(7) for _ in range(6)]
    lrs = [1e-2 * (i + 1) / 3 if i < 3 else 1e-2 for i in range(6)]
    p = torch.tensor(p0, requires_grad=True)
    opt = torch.optim.Adam([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    for g, lr in zip(grads, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = torch.tensor(g)
        opt.step()
    return dict(p0=arr(p0), grads=[arr(g) for g in grads], lrs=lrs, p=arr(p.detach()))


def metrics_case():
    n, d = 50, 6
    x = rand(n, d) + rand(d) * 3  # a nonzero mean, as residual streams have
    xhat = x + rand(n, d, scale=0.3)
    resid = ((x - xhat) ** 2).sum(-1)
    total_var = (x ** 2).sum(-1).mean() - (x.mean(0) ** 2).sum()
    ev = 1 - resid.mean() / total_var
    legacy = (1 - resid / ((x - x.mean(0)) ** 2).sum(-1)).mean()
    # evals.py's code as written: mean_act_per_dimension holds E[x²] per
    # dimension, then torch.cat(...).mean(dim=0) averages it to a scalar.
    ev_code = 1 - resid.mean() / ((x ** 2).sum(-1).mean() - ((x ** 2).mean(0).mean()) ** 2)
    cos = ((x * xhat).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(xhat, axis=-1)).mean()
    return dict(n=n, d=d, x=arr(x), xhat=arr(xhat), explained_variance=float(ev),
                explained_variance_legacy=float(legacy), explained_variance_saelens_code=float(ev_code),
                cossim=float(cos),
                mse=float(resid.mean() / d), sum_sq_error=float(resid.mean()))


def kl_ce_case():
    # Per-token CE of next-token prediction and KL(P_clean || P_new) over a
    # vocabulary of 11, as evals.py:get_recons_loss computes them.
    T, V = 5, 11
    clean = rand(T, V, scale=2)
    new = clean + rand(T, V)
    tokens = rng.integers(0, V, size=T)
    lc = torch.log_softmax(torch.tensor(clean), -1)
    ln = torch.log_softmax(torch.tensor(new), -1)
    ce_clean = -lc[torch.arange(T - 1), torch.tensor(tokens[1:])]
    ce_new = -ln[torch.arange(T - 1), torch.tensor(tokens[1:])]
    kl = (lc.exp() * (lc - ln)).sum(-1)
    return dict(T=T, V=V, clean=arr(clean), new=arr(new), tokens=[int(t) for t in tokens],
                ce_clean=arr(ce_clean), ce_new=arr(ce_new), kl=arr(kl))


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def np_encode(x, w, arch, k=0, norm="none", factor=1.0, apply_b_dec=True):
    """SAELens inference: returns (acts, reconstruction)."""
    x = x.astype(np.float64)
    if norm == "constant_norm_rescale":
        coeff = np.sqrt(x.shape[-1]) / np.linalg.norm(x, axis=-1, keepdims=True)
        xin = x * coeff
    elif norm == "layer_norm":
        mu = x.mean(-1, keepdims=True)
        xc = x - mu
        std = xc.std(-1, ddof=1, keepdims=True)
        xin = xc / (std + 1e-5)
    elif norm == "expected_average_only_in":
        xin = x * factor
    else:
        xin = x
    pre = (xin - w["b_dec"] * apply_b_dec) @ w["W_enc"] + w["b_enc"]
    if arch == "jumprelu":
        acts = np.maximum(pre, 0) * (pre > w["threshold"])
    elif arch == "topk":
        acts = np.zeros_like(pre)
        idx = np.argsort(-pre, axis=-1, kind="stable")[:, :k]
        np.put_along_axis(acts, idx, np.maximum(np.take_along_axis(pre, idx, -1), 0), -1)
    else:
        acts = np.maximum(pre, 0)
    out = acts @ w["W_dec"] + w["b_dec"]
    if norm == "constant_norm_rescale":
        out = out / coeff
    elif norm == "layer_norm":
        out = out * std + mu
    elif norm == "expected_average_only_in":
        out = out / factor
    return acts, out


def vintages():
    d_in, d_sae, n = 8, 16, 5
    w = dict(W_enc=rand(d_in, d_sae, scale=0.5), b_enc=rand(d_sae, scale=0.1),
             W_dec=rand(d_sae, d_in, scale=0.5), b_dec=rand(d_in, scale=0.1))
    x = rand(n, d_in) * 2
    # Modelled on real files: jbloom/GPT2-Small-SAEs-Reformatted (pre-5, training
    # runner fields included), jbloom/GPT2-Small-OAI-v5-32k-resid-mid-SAEs
    # (SAELens 5) and SAELens 6's save_inference_model output.
    pre5 = {"model_name": "gpt2-small", "hook_point": "blocks.8.hook_resid_pre", "hook_point_layer": 8,
            "hook_point_head_index": None, "dataset_path": "Skylion007/openwebtext", "is_dataset_tokenized": False,
            "context_size": 128, "use_cached_activations": False, "d_in": d_in, "n_batches_in_buffer": 128,
            "total_training_tokens": 300000000, "store_batch_size": 32, "device": "mps", "seed": 42,
            "dtype": "torch.float32", "b_dec_init_method": "geometric_median", "expansion_factor": 2,
            "from_pretrained_path": None, "l1_coefficient": 8e-05, "lr": 0.0004, "lr_scheduler_name": None,
            "lr_warm_up_steps": 5000, "train_batch_size": 4096, "use_ghost_grads": False,
            "feature_sampling_window": 1000, "dead_feature_window": 5000, "dead_feature_threshold": 1e-08,
            "log_to_wandb": True, "wandb_project": "mats_sae_training_gpt2_small_resid_pre_5",
            "n_checkpoints": 10, "checkpoint_path": "checkpoints/y1t51byy", "d_sae": d_sae,
            "tokens_per_buffer": 67108864, "run_name": "16-L1-8e-05-LR-0.0004-Tokens-3.000e+08"}
    saelens5 = {"architecture": "standard", "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
                "model_name": "gpt2-small", "hook_name": "blocks.8.hook_resid_pre", "hook_layer": 8,
                "hook_head_index": None, "activation_fn_str": "relu", "activation_fn_kwargs": {},
                "apply_b_dec_to_input": True, "finetuning_scaling_factor": False,
                "sae_lens_training_version": "3.13.0", "prepend_bos": True, "dataset_path": "Skylion007/openwebtext",
                "dataset_trust_remote_code": True, "context_size": 128, "normalize_activations": "none",
                "neuronpedia_id": "gpt2-small/8-res-jb", "model_from_pretrained_kwargs": {"center_writing_weights": True}}
    saelens6 = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
                "normalize_activations": "none", "reshape_activations": "none", "architecture": "standard",
                "metadata": {"model_name": "gpt2-small", "hook_name": "blocks.8.hook_resid_pre",
                             "hook_head_index": None, "context_size": 128, "prepend_bos": True,
                             "dataset_path": "Skylion007/openwebtext",
                             "model_from_pretrained_kwargs": {"center_writing_weights": True},
                             "neuronpedia_id": "gpt2-small/8-res-jb", "sae_lens_version": "6.5.1",
                             "sae_lens_training_version": "6.5.1"}}
    pre5_topk = dict(pre5, activation_fn_str="topk", activation_fn_kwargs={"k": 3}, normalize_activations=False)
    oai_ln = dict(saelens5, hook_name="blocks.0.hook_resid_mid", hook_layer=0, context_size=64,
                  normalize_activations="layer_norm", neuronpedia_id="gpt2-small/0-res_mid_32k-oai")
    del oai_ln["model_from_pretrained_kwargs"]
    pre5_norm = dict(pre5, normalize_activations=True)
    saelens5_topk = dict(saelens5, activation_fn_str="topk", activation_fn_kwargs={"k": 3})
    jump = dict(saelens6, architecture="jumprelu")
    rescale = dict(saelens6, normalize_activations="constant_norm_rescale")
    w_jump = dict(w, threshold=np.abs(rand(d_sae, scale=0.5)))
    factor = 0.8125
    folders = {"saelens5_topk": (saelens5_topk, "topk", "none"),
               "saelens6_jumprelu": (jump, "jumprelu", "none"),
               "saelens6_constant_norm_rescale": (rescale, "standard", "constant_norm_rescale"),"pre5": (pre5, "standard", "none"), "saelens5": (saelens5, "standard", "none"),
               "saelens6": (saelens6, "standard", "none"), "pre5_topk": (pre5_topk, "topk", "none"),
               "saelens5_layer_norm": (oai_ln, "standard", "layer_norm"),
               "pre5_expected_average": (pre5_norm, "standard", "expected_average_only_in")}
    expected = {"x": arr(x), "n": n, "d_in": d_in, "d_sae": d_sae, "norm_scaling_factor": factor, "folders": {}}
    for name, (cfg, arch, norm) in folders.items():
        os.makedirs(os.path.join("vintages", name), exist_ok=True)
        with open(os.path.join("vintages", name, "cfg.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        ww = w_jump if arch == "jumprelu" else w
        write_safetensors(os.path.join("vintages", name, "sae_weights.safetensors"), ww)
        acts, out = np_encode(x, ww, arch, k=3, norm=norm, factor=factor)
        expected["folders"][name] = {"acts": arr(acts), "out": arr(out)}
    with open(os.path.join("vintages", "expected.json"), "w") as f:
        json.dump(expected, f)


vintages()

cases = [
    loss_case("standard", "standard", n=6, d_in=8, d_sae=16, l1=0.3),
    loss_case("standard_no_bdec", "standard", n=5, d_in=8, d_sae=12, l1=0.05, apply_b_dec=False),
    loss_case("topk_no_dead", "topk", n=6, d_in=8, d_sae=16, k=3),
    loss_case("topk_many_dead", "topk", n=6, d_in=8, d_sae=16, k=3, dead=[0, 2, 3, 5, 7, 8, 11, 12, 14, 15]),
    loss_case("topk_few_dead", "topk", n=7, d_in=8, d_sae=16, k=4, dead=[1, 9], aux_coeff=0.5),
]
print(json.dumps(dict(loss=cases, adam=adam_case(), metrics=metrics_case(), kl_ce=kl_ce_case())))
