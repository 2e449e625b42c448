#!/usr/bin/python3
"""Independent safetensors goldens for package weights.

Run from anywhere (needs only numpy; the second step needs Go):

    /usr/bin/python3 weights/testdata/make_safetensors_golden.py

Step 1 writes weights/testdata/golden/: small .safetensors files (F32, F16,
BF16, data out of header order, misaligned F32, non-float dtypes, with
__metadata__), two tiny GPT-2 checkpoints in different real layouts, and
expected.json with every expected float32 value as its IEEE bit pattern.
The files are written by hand here from the format specification
(8-byte little-endian header length, JSON header, data section), with
struct + json + numpy only, so the Go reader is checked against code that
shares nothing with it. F16 is decoded with numpy's float16; BF16 by the
16-bit shift.

Step 2 checks the opposite direction: it runs

    FACTLENS_GO_WRITER_DIR=<tmp> go test ./weights -run '^TestGoWriterForPython$' -count=1

which makes the Go writer (WriteSafetensors, SaveCheckpoint) write files
into <tmp> from golden/writer_input.json and from the tiny checkpoint, then
parses them here with a strict reader (the reference implementation's rules:
contiguous, non-overlapping data covering the whole data section, header
padded to 8 bytes) and compares every value bit for bit: F32 exactly, F16
against numpy's float32->float16 rounding, BF16 against round-to-nearest-even
computed here on integers. Pass --skip-go to do step 1 only.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "golden")
REPO = os.path.dirname(os.path.dirname(HERE))
GO = "/usr/local/go/bin/go"

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
         "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


# ---------------------------------------------------------------- writing

def write_safetensors(path, tensors, metadata=None, order=None, header_mod=(8, 0)):
    """tensors: list of (name, dtype, shape, raw little-endian bytes), header in
    list order; order: permutation giving the data order; header_mod (m, r):
    pad the header with spaces until (8 + len) % m == r."""
    if order is None:
        order = list(range(len(tensors)))
    begins, off = {}, 0
    for i in order:
        begins[i] = off
        off += len(tensors[i][3])
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    for i, (name, dtype, shape, raw) in enumerate(tensors):
        assert len(raw) == int(np.prod(shape, dtype=np.int64)) * SIZES[dtype], name
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [begins[i], begins[i] + len(raw)]}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    m, r = header_mod
    while (8 + len(h)) % m != r:
        h += b" "
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for i in order:
            f.write(tensors[i][3])


def f32_bytes(a):
    return np.asarray(a, dtype="<f4").tobytes()


def bits_of_f32(a):
    return [int(x) for x in np.asarray(a, dtype="<f4").view("<u4").ravel()]


def f16_to_f32_bits(u16):
    return bits_of_f32(np.asarray(u16, dtype="<u2").view("<f2").astype("<f4"))


def bf16_to_f32_bits(u16):
    return [int(x) for x in (np.asarray(u16, dtype="<u2").astype("<u4") << 16)]


def f32_to_bf16_rne(f):
    """PyTorch's round_to_nearest_even, on integers."""
    out = []
    for b in np.asarray(f, dtype="<f4").view("<u4").ravel():
        b = int(b)
        if (b & 0x7F800000) == 0x7F800000 and (b & 0x007FFFFF) != 0:
            out.append(0x7FC0)
        else:
            out.append(((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF)
    return out


# ---------------------------------------------------------------- reading (strict)

def read_safetensors(path):
    b = open(path, "rb").read()
    assert len(b) >= 8, path
    (n,) = struct.unpack("<Q", b[:8])
    assert 8 + n <= len(b), path
    assert (8 + n) % 8 == 0, f"{path}: header not padded to 8 bytes"
    hdr_bytes = b[8:8 + n]
    assert hdr_bytes[:1] == b"{", path
    hdr = json.loads(hdr_bytes.decode("utf-8"))
    data = b[8 + n:]
    meta = hdr.pop("__metadata__", {})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    spans, out = [], {}
    for name, info in hdr.items():
        dtype, shape, (s, e) = info["dtype"], info["shape"], info["data_offsets"]
        nbytes = int(np.prod(shape, dtype=np.int64)) * SIZES[dtype]
        assert e - s == nbytes, (path, name)
        spans.append((s, e, name))
        out[name] = (dtype, shape, data[s:e])
    spans.sort()
    pos = 0
    for s, e, name in spans:
        assert s == pos, f"{path}: {name} not contiguous"
        pos = e
    assert pos == len(data), f"{path}: data section has {len(data) - pos} unused bytes"
    return meta, out, [name for name in hdr]


def decode(dtype, raw):
    if dtype == "F32":
        return np.frombuffer(raw, dtype="<u4").astype(np.int64)
    if dtype in ("F16", "BF16"):
        return np.frombuffer(raw, dtype="<u2").astype(np.int64)
    raise ValueError(dtype)


# ---------------------------------------------------------------- goldens

def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240601)
    expected = {}

    def record(fname, tensors, metadata, order=None, header_mod=(8, 0), values=None):
        write_safetensors(os.path.join(OUT, fname), tensors, metadata, order, header_mod)
        # re-read the offsets we just wrote, to record them
        b = open(os.path.join(OUT, fname), "rb").read()
        (n,) = struct.unpack("<Q", b[:8])
        hdr = json.loads(b[8:8 + n])
        hdr.pop("__metadata__", None)
        ent = {"metadata": metadata or {}, "tensors": {}}
        for name, dtype, shape, raw in tensors:
            ent["tensors"][name] = {"dtype": dtype, "shape": list(shape),
                                    "data_offsets": hdr[name]["data_offsets"],
                                    "f32_bits": values.get(name) if values else None}
        expected[fname] = ent

    # F32, including a scalar and an empty tensor.
    a = rng.standard_normal((2, 3)).astype("<f4")
    bvals = np.array([0.0, -0.0, np.inf, 1e-45], dtype="<f4")
    sc = np.array(3.25, dtype="<f4")
    record("f32.safetensors",
           [("a", "F32", [2, 3], f32_bytes(a)), ("b", "F32", [4], f32_bytes(bvals)),
            ("scalar", "F32", [], f32_bytes(sc)), ("empty", "F32", [0, 3], b"")],
           {"format": "pt", "note": "golden f32"},
           values={"a": bits_of_f32(a), "b": bits_of_f32(bvals), "scalar": bits_of_f32(sc), "empty": []})

    # F16: specials (zeros, subnormals, max, inf, quiet and signalling NaN) + random bits.
    f16 = np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF,
                    0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x3555], dtype="<u2")
    f16 = np.concatenate([f16, rng.integers(0, 0x7C00, 19, dtype=np.uint16)]).astype("<u2")
    f16b = rng.integers(0, 0x7C00, 6, dtype=np.uint16).astype("<u2") | np.uint16(0x8000)
    record("f16.safetensors",
           [("x", "F16", [len(f16)], f16.tobytes()), ("y", "F16", [2, 3], f16b.tobytes())],
           {"dtype": "float16"},
           values={"x": f16_to_f32_bits(f16), "y": f16_to_f32_bits(f16b)})

    # BF16: specials + random bits.
    bf = np.array([0x0000, 0x8000, 0x3F80, 0xBF80, 0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x7F7F], dtype="<u2")
    bf = np.concatenate([bf, rng.integers(0, 0x10000, 23, dtype=np.uint32).astype(np.uint16)]).astype("<u2")
    record("bf16.safetensors", [("x", "BF16", [4, 8], bf.tobytes())], None,
           values={"x": bf16_to_f32_bits(bf)})

    # Data section in an order unrelated to the header, mixed float dtypes.
    p = rng.standard_normal(5).astype("<f4")
    q = rng.integers(0, 0x7C00, 3, dtype=np.uint16).astype("<u2")
    r = rng.standard_normal((3, 2)).astype("<f4")
    s = rng.integers(0, 0x10000, 4, dtype=np.uint32).astype("<u2")
    record("out_of_order.safetensors",
           [("p", "F32", [5], f32_bytes(p)), ("q", "F16", [3], q.tobytes()),
            ("r", "F32", [3, 2], f32_bytes(r)), ("s", "BF16", [2, 2], s.tobytes())],
           {"format": "pt"}, order=[2, 0, 3, 1],
           values={"p": bits_of_f32(p), "q": f16_to_f32_bits(q), "r": bits_of_f32(r), "s": bf16_to_f32_bits(s)})

    # Header length chosen so that F32 data starts 2 bytes off a 4-byte boundary.
    m = rng.standard_normal(7).astype("<f4")
    record("misaligned.safetensors", [("m", "F32", [7], f32_bytes(m))], None,
           header_mod=(4, 2), values={"m": bits_of_f32(m)})

    # Dtypes that can be listed but not read as float32.
    mask = np.tril(np.ones((4, 4), dtype=np.uint8)).reshape(1, 1, 4, 4)
    w = np.array([1.5, -2.5], dtype="<f4")
    record("mixed_dtypes.safetensors",
           [("h.0.attn.bias", "BOOL", [1, 1, 4, 4], mask.tobytes()),
            ("ids", "I64", [3], np.array([1, -2, 3], dtype="<i8").tobytes()),
            ("d", "F64", [2], np.array([0.5, 0.25], dtype="<f8").tobytes()),
            ("w", "F32", [2], f32_bytes(w))],
           {"format": "pt"}, values={"w": bits_of_f32(w)})

    # Tiny GPT-2 checkpoints in two real layouts.
    cfg = {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
           "attn_pdrop": 0.1, "bos_token_id": 10, "embd_pdrop": 0.1, "eos_token_id": 10,
           "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
           "n_ctx": 6, "n_embd": 4, "n_head": 2, "n_inner": None, "n_layer": 2,
           "n_positions": 6, "resid_pdrop": 0.1, "summary_activation": None,
           "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
           "summary_type": "cls_index", "summary_use_proj": True,
           "transformers_version": "4.40.0", "use_cache": True, "vocab_size": 11}
    V, P, D, L, M = 11, 6, 4, 2, 16
    shapes = [("wte.weight", [V, D]), ("wpe.weight", [P, D])]
    for i in range(L):
        h = f"h.{i}."
        shapes += [(h + "ln_1.weight", [D]), (h + "ln_1.bias", [D]),
                   (h + "attn.c_attn.weight", [D, 3 * D]), (h + "attn.c_attn.bias", [3 * D]),
                   (h + "attn.c_proj.weight", [D, D]), (h + "attn.c_proj.bias", [D]),
                   (h + "ln_2.weight", [D]), (h + "ln_2.bias", [D]),
                   (h + "mlp.c_fc.weight", [D, M]), (h + "mlp.c_fc.bias", [M]),
                   (h + "mlp.c_proj.weight", [M, D]), (h + "mlp.c_proj.bias", [D])]
    shapes += [("ln_f.weight", [D]), ("ln_f.bias", [D])]
    params = {n: (rng.standard_normal(s) * 0.1).astype("<f4") for n, s in shapes}
    tril = np.tril(np.ones((P, P), dtype="<f4")).reshape(1, 1, P, P)
    ckpts = {}

    # (a) openai-community/gpt2 style: no prefix, F32 mask buffers, tied, sorted names.
    d = os.path.join(OUT, "tiny-gpt2-openai")
    os.makedirs(d, exist_ok=True)
    ts = [(n, "F32", list(params[n].shape), f32_bytes(params[n])) for n, _ in shapes]
    ts += [(f"h.{i}.attn.bias", "F32", [1, 1, P, P], f32_bytes(tril)) for i in range(L)]
    ts.sort(key=lambda t: t[0])
    write_safetensors(os.path.join(d, "model.safetensors"), ts, {"format": "pt"})
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2, sort_keys=True)
    ckpts["tiny-gpt2-openai"] = {"unembedding": "wte.weight",
                                 "params": {n: {"shape": list(params[n].shape), "dtype": "F32",
                                                "f32_bits": bits_of_f32(params[n])} for n, _ in shapes}}

    # (b) GPT2LMHeadModel.save_pretrained style with an untied F16 lm_head:
    # "transformer." prefix, BOOL mask + scalar masked_bias buffers, F16 data
    # stored in reverse order.
    d = os.path.join(OUT, "tiny-gpt2-prefixed-f16")
    os.makedirs(d, exist_ok=True)
    lm = (rng.standard_normal((V, D)) * 0.1).astype("<f4")
    allp = dict(params)
    allp["lm_head.weight"] = lm
    f16p = {n: a.astype("<f2") for n, a in allp.items()}
    ts = [("transformer." + n, "F16", list(a.shape), a.tobytes()) for n, a in f16p.items() if n != "lm_head.weight"]
    ts.append(("lm_head.weight", "F16", [V, D], f16p["lm_head.weight"].tobytes()))
    for i in range(L):
        ts.append((f"transformer.h.{i}.attn.bias", "BOOL", [1, 1, P, P], tril.astype(np.uint8).tobytes()))
        ts.append((f"transformer.h.{i}.attn.masked_bias", "F32", [], f32_bytes(np.float32(-1e4))))
    write_safetensors(os.path.join(d, "model.safetensors"), ts, {"format": "pt"},
                      order=list(reversed(range(len(ts)))))
    cfg_b = dict(cfg, tie_word_embeddings=False)
    json.dump(cfg_b, open(os.path.join(d, "config.json"), "w"), indent=2, sort_keys=True)
    ckpts["tiny-gpt2-prefixed-f16"] = {"unembedding": "lm_head.weight",
                                       "params": {n: {"shape": list(a.shape), "dtype": "F16",
                                                      "f32_bits": f16_to_f32_bits(a.view("<u2"))}
                                                  for n, a in f16p.items()}}
    expected["checkpoints"] = ckpts

    # Input for the Go writer check (step 2).
    wv = np.concatenate([
        np.array([0.0, -0.0, 1.0, -1.0, 65504.0, 65520.0, 1e-8, 6e-5, np.inf, -np.inf, np.nan,
                  3.14159265, 1.00048828125, 1.000732421875], dtype="<f4"),
        np.array([0x3F808000, 0x3F818000, 0x3F80C000, 0x00000001, 0x7F7FFFFF, 0xFF7FFFFF],
                 dtype="<u4").view("<f4"),
        rng.standard_normal(40).astype("<f4")]).astype("<f4")
    writer_input = {"metadata": {"format": "pt", "written_by": "go"},
                    "tensors": [{"name": "v", "shape": [len(wv)], "f32_bits": bits_of_f32(wv)},
                                {"name": "m", "shape": [3, 2], "f32_bits": bits_of_f32(rng.standard_normal((3, 2)))},
                                {"name": "e", "shape": [0], "f32_bits": []}]}
    json.dump(writer_input, open(os.path.join(OUT, "writer_input.json"), "w"), indent=1)

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=None, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print("wrote goldens to", OUT)

    if "--skip-go" not in sys.argv:
        check_go_writer(writer_input, params, tril)


def check_go_writer(writer_input, params, tril):
    tmp = tempfile.mkdtemp(prefix="factlens-go-writer-")
    try:
        check_go_files(tmp, writer_input, params, tril)
    finally:
        shutil.rmtree(tmp)


def check_go_files(tmp, writer_input, params, tril):
    env = dict(os.environ, FACTLENS_GO_WRITER_DIR=tmp)
    subprocess.run([GO, "test", "./weights", "-run", "^TestGoWriterForPython$", "-count=1"],
                   cwd=REPO, env=env, check=True)
    want = {t["name"]: (t["shape"], np.array(t["f32_bits"], dtype="<u4")) for t in writer_input["tensors"]}
    for dtype in ("F32", "F16", "BF16", "F32-shuffled"):
        path = os.path.join(tmp, f"go_{dtype}.safetensors")
        meta, tensors, header_order = read_safetensors(path)
        assert meta == writer_input["metadata"], (path, meta)
        assert header_order == [t["name"] for t in writer_input["tensors"]], header_order
        stored = dtype.split("-")[0]
        for name, (shape, bits) in want.items():
            got_dtype, got_shape, raw = tensors[name]
            assert got_dtype == stored and got_shape == shape, (path, name, got_dtype, got_shape)
            got = decode(stored, raw)
            f = bits.view("<f4")
            if stored == "F32":
                exp = bits.astype(np.int64)
            elif stored == "F16":
                with np.errstate(over="ignore"):  # 65520 rounds to inf in float16, on purpose
                    exp = f.astype("<f2").view("<u2").astype(np.int64)
            else:
                exp = np.array(f32_to_bf16_rne(f), dtype=np.int64)
            for g, e, x in zip(got, exp, f):
                if np.isnan(x):
                    exp_mask, frac_mask = {"F32": (0x7F800000, 0x007FFFFF), "F16": (0x7C00, 0x03FF),
                                           "BF16": (0x7F80, 0x007F)}[stored]
                    assert (g & exp_mask) == exp_mask and (g & frac_mask) != 0, f"{path}: {name}: NaN stored as {g:#x}"
                else:
                    assert g == e, f"{path}: {name}: value {x!r}: got {g:#x}, want {e:#x}"
        if dtype == "F32-shuffled":
            b = open(path, "rb").read()
            (n,) = struct.unpack("<Q", b[:8])
            hdr = json.loads(b[8:8 + n])
            begins = [hdr[t["name"]]["data_offsets"][0] for t in writer_input["tensors"] if t["f32_bits"]]
            assert begins != sorted(begins), "shuffled file stores data in header order"
        print("python read", os.path.basename(path), "OK")

    # SaveCheckpoint: prefixed, BF16, lm_head, mask buffers, sharded, shuffled.
    d = os.path.join(tmp, "ckpt")
    index = json.load(open(os.path.join(d, "model.safetensors.index.json")))
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1, shards
    seen, total = {}, 0
    for s in shards:
        meta, tensors, _ = read_safetensors(os.path.join(d, s))
        assert meta.get("format") == "pt", meta
        for name, (dt, shape, raw) in tensors.items():
            assert index["weight_map"][name] == s, name
            assert name not in seen
            seen[name] = (dt, shape, raw)
            total += len(raw)
    assert set(seen) == set(index["weight_map"]), "index and shards disagree"
    assert index["metadata"]["total_size"] == total
    for n, a in params.items():
        dt, shape, raw = seen["transformer." + n]
        assert dt == "BF16" and shape == list(a.shape), n
        assert list(decode("BF16", raw)) == f32_to_bf16_rne(a), n
    dt, shape, raw = seen["lm_head.weight"]
    assert list(decode("BF16", raw)) == f32_to_bf16_rne(params["wte.weight"]), "lm_head != wte"
    for i in range(2):
        dt, shape, raw = seen[f"transformer.h.{i}.attn.bias"]
        assert shape == [1, 1, 6, 6] and list(decode("BF16", raw)) == f32_to_bf16_rne(tril)
    expected_names = {"transformer." + n for n in params} | {"lm_head.weight"} | {f"transformer.h.{i}.attn.bias" for i in range(2)}
    assert set(seen) == expected_names, set(seen) ^ expected_names
    cfg = json.load(open(os.path.join(d, "config.json")))
    assert cfg["n_embd"] == 4 and cfg["n_layer"] == 2 and cfg["vocab_size"] == 11 and cfg["n_inner"] is None
    print("python read SaveCheckpoint output (%d shards) OK" % len(shards))


if __name__ == "__main__":
    main()
