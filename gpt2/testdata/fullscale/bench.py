#!/usr/bin/python3
"""Interleaved factlens vs PyTorch benchmarks on a shared machine.

Every benchmark runs in its own process. Around each process the script
reads /proc/stat and the process's own CPU time, and records how many cores
everything else used meanwhile ("others") and the hypervisor's steal. On
this 2-vCPU machine the scheduler splits the CPUs between sessions (Linux
autogroup), so another session's busy process halves a two-thread
benchmark whatever its nice value: a run is clean when others < --clean
cores. Rounds repeat (torch, factlens, torch, …) until every benchmark has
--want clean runs or --max-rounds is reached.

Usage (from the repository root):
  /usr/bin/python3 gpt2/testdata/fullscale/bench.py run OUTDIR \
      [--torch-dir ../shared/bench/torch-gpt2] [--weights /tmp/gpt2rand-bench/model.safetensors]
  /usr/bin/python3 gpt2/testdata/fullscale/bench.py summary OUTDIR
"""
import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HZ = os.sysconf("SC_CLK_TCK")


def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return sum(v[0:3]) + v[5] + v[6], v[7]


def measure(cmd, env):
    b0, s0 = cpu_times()
    r0 = os.times()
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    el = time.monotonic() - t0
    r1 = os.times()
    b1, s1 = cpu_times()
    if p.returncode != 0:
        raise SystemExit("%s failed:\n%s%s" % (cmd, p.stdout, p.stderr))
    own = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    others = ((b1 - b0) / HZ - own) / el
    return p.stdout, {"elapsed": el, "own_cores": own / el, "others": max(others, 0.0),
                      "steal": (s1 - s0) / HZ / el, "load1": os.getloadavg()[0]}


def parse(out):
    res = {}
    for line in out.splitlines():
        m = re.match(r"threads=2 B=(\d+) T=(\d+) hooks=(\d).*tok/s min [\d.]+ med ([\d.]+)", line)
        if m:
            res["torch %sx%s hooks=%s tok/s" % m.group(1, 2, 3)] = float(m.group(4))
        m = re.match(r"torch grad (\S+) (\S+) \| ms/step min [\d.]+ med ([\d.]+)", line)
        if m:
            res["torch grad %s/%s ms" % m.group(1, 2)] = float(m.group(3))
        m = re.match(r"Benchmark(\S+?)(-\d+)?\s+\d+\s+[\d.]+ ns/op\s+([\d.]+) (\S+)", line)
        if m:
            res["factlens %s %s" % (m.group(1), m.group(4))] = float(m.group(3))
    return res


def groups(args):
    """Benchmarks to compare back to back run as a group, in this order."""
    tw = ["--weights", args.weights]
    fwd = [sys.executable, os.path.join(args.torch_dir, "bench_torch_fwd.py"), "--threads", "2"]
    grad = [sys.executable, os.path.join(HERE, "bench_torch_grad.py"), "--torch-dir", args.torch_dir] + tw
    gob = lambda pat, bt: [os.path.join(args.out, "gpt2.test"), "-test.run", "^$", "-test.bench", pat,
                           "-test.benchtime", bt, "-test.count", "1"]
    gs = []
    for b, t in [(1, 8), (1, 128), (8, 128)]:
        gs.append([("torch fwd %dx%d" % (b, t), fwd + ["--batch", str(b), "--seq", str(t)] + tw),
                   ("torch fwd %dx%d hooks" % (b, t), fwd + ["--batch", str(b), "--seq", str(t), "--hooks"] + tw),
                   ("factlens fwd %dx%d" % (b, t), gob("Forward/%dx%d/" % (b, t), "1.5s"))])
    gs.append([("factlens linear", gob("Linear", "1s"))])
    gs.append([("torch grad 1x%d%s" % (seq, " params" if extra else ""), grad + ["--seq", str(seq)] + extra)
               for seq, extra in [(10, []), (128, []), (128, ["--params"])]] +
              [("factlens grad", gob("Gradients", "2s"))])
    gs.append([("factlens generate", gob(r"Generate/8\+32/kvcache$", "3s"))])
    return gs


def run(args):
    os.makedirs(args.out, exist_ok=True)
    subprocess.run(["go", "test", "-c", "-o", os.path.join(args.out, "gpt2.test"), "./gpt2/"], check=True)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2")
    clean = collections.Counter()
    gs = groups(args)
    with open(os.path.join(args.out, "runs.jsonl"), "a") as log:
        for rnd in range(1, args.max_rounds + 1):
            for name, cmd in [s for g in gs if any(clean[n] < args.want for n, _ in g) for s in g]:
                out, m = measure(cmd, env)
                rec = dict(m, round=rnd, step=name, results=parse(out), clean=m["others"] < args.clean)
                clean[name] += rec["clean"]
                log.write(json.dumps(rec) + "\n")
                log.flush()
                print("round %d %-24s others %.2f steal %.2f load %.2f %s" % (
                    rnd, name, m["others"], m["steal"], m["load1"], "clean" if rec["clean"] else "CONTENDED"), flush=True)
            if all(clean[n] >= args.want for g in gs for n, _ in g):
                break


def summary(args):
    recs = [json.loads(l) for l in open(os.path.join(args.out, "runs.jsonl"))]
    vals = collections.defaultdict(dict)  # metric -> round -> value (clean runs)
    dropped = collections.Counter()
    for r in recs:
        for k, v in r["results"].items():
            if r["clean"]:
                vals[k][r["round"]] = v
            else:
                dropped[k] += 1
    o = [r["others"] for r in recs if r["clean"]]
    print("%d processes, %d clean (others < %.2f cores; clean runs: others median %.3f, max %.3f; load1 median %.2f)" % (
        len(recs), sum(r["clean"] for r in recs), args.clean, statistics.median(o), max(o),
        statistics.median(r["load1"] for r in recs if r["clean"])))

    def stat(xs):
        xs = sorted(xs)
        f = lambda x: "%.2f" % x if x < 10 else "%.0f" % x
        return "%7s [%s–%s] n=%d" % (f(statistics.median(xs)), f(xs[0]), f(xs[-1]), len(xs))

    for k in sorted(vals):
        print("%-55s %s (dropped %d)" % (k, stat(vals[k].values()), dropped[k]))
    print("\nratios, factlens speed / PyTorch speed, within a round (both runs clean):")
    pairs = []
    for shape in ["1x8", "1x128", "8x128"]:
        for cache, hooks in [("none", "0"), ("mlp_post", "1")]:
            for logits in ["all", "last"]:
                pairs.append(("factlens Forward/%s/cache=%s/logits=%s tokens/s" % (shape, cache, logits),
                              "torch %s hooks=%s tok/s" % (shape, hooks), False))
    for g in ["1x10/mlp_post", "1x128/mlp_post", "1x128/mlp_post+params"]:
        pairs.append(("factlens Gradients/%s ms/op" % g, "torch grad %s ms" % g, True))
    for fl, tr, inv in pairs:
        a, b = vals.get(fl, {}), vals.get(tr, {})
        rs = [(b[r] / a[r]) if inv else (a[r] / b[r]) for r in a if r in b]
        if rs:
            print("%-55s %s   vs %s" % (fl.split(" ")[1], stat(rs), tr.split(" tok")[0].split(" ms")[0]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["run", "summary"])
    ap.add_argument("out")
    ap.add_argument("--torch-dir", default="../shared/bench/torch-gpt2")
    ap.add_argument("--weights", default="/tmp/gpt2rand-bench/model.safetensors")
    ap.add_argument("--want", type=int, default=5)
    ap.add_argument("--max-rounds", type=int, default=12)
    ap.add_argument("--clean", type=float, default=0.15)
    args = ap.parse_args()
    args.torch_dir = os.path.abspath(args.torch_dir)
    args.out = os.path.abspath(args.out)
    (run if args.cmd == "run" else summary)(args)


if __name__ == "__main__":
    main()
