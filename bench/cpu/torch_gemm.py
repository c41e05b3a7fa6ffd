#!/usr/bin/python3
"""PyTorch's CPU matmul on the GEMMs the models run: the third column of `gemm-quick --model-shapes`.

    /usr/bin/python3 bench/cpu/torch_gemm.py [--model-shapes tiny,gpt2-6x512] [--batch N] [--threads 2]
        [--openblas-core best|env|NAME] [--out FILE]

The shapes are those of GemmQuick.ModelShapes (bench/GemmQuick.cs: keep the two lists alike): per linear layer
[in -> out] over rows = batch*2L tokens, forward y = x.W^T (op NT), dW += dy^T.x (TN, beta 1), dx = dy.W (NN);
the vocabulary head sees batch*L rows; plus 1024^3. Operands are row-major fp32 laid out as the engine keeps them
(W as [out, in]), transposes taken as views, so PyTorch (MKL-DNN/OpenBLAS, whatever its build calls) sees the
strides the engine's GEMM sees. Median of >= 7 timed calls after warm-up. Writes the shared schema of
bench/README.md (suite "gemm", impl "pytorch"), which `compare` pairs with gemm-quick's results.

Debian's torch 1.13 calls sgemm of the system BLAS (OpenBLAS), so its matmul runs the kernels OpenBLAS picks at load:
OPENBLAS_CORETYPE (this machine's environment sets Haswell) or its own detection (0.3.21: Haswell on Zen 4/5).
--openblas-core best (default) asks for its AVX-512 kernels where the CPU has them, as gemm-quick does for OpenBLAS;
env keeps the environment's choice.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time

MODELS = {  # name: (width, MLP width, L, vocabulary, default batch)
    "tiny": (256, 1024, 256, 260, 8),
    "gpt2-6x512": (512, 2048, 512, 50258, 4),
}


def model_shapes(name, batch):
    d, mlp, length, vocab, b = MODELS[name]
    if batch > 0:
        b = batch
    rows, head_rows = b * 2 * length, b * length
    shapes = []
    for layer, ind, outd, r in (("qkv", d, 3 * d, rows), ("attn_out", d, d, rows), ("mlp.0", d, mlp, rows),
                                ("mlp.2", mlp, d, rows), ("head", d, vocab, head_rows)):
        shapes.append((f"{name} {layer} fwd", r, outd, ind, False, True, 0.0))
        shapes.append((f"{name} {layer} dW", outd, ind, r, True, False, 1.0))
        shapes.append((f"{name} {layer} dX", r, ind, outd, False, False, 0.0))
    return shapes


def best_openblas_core():
    flags = ""
    try:
        flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
    except OSError:
        pass
    if " avx512f" not in flags:
        return None
    return "Cooperlake" if " avx512_bf16" in flags else "SkylakeX"


def openblas_corename():
    import ctypes
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return "unknown"


def operands(torch, m, n, k, ta, tb, gen):
    # A stored as [k, m] when transposed, B as [n, k] when transposed (row-major, as the engine's Gemm takes them)
    a = torch.rand((k, m) if ta else (m, k), generator=gen) - 0.5
    b = torch.rand((n, k) if tb else (k, n), generator=gen) - 0.5
    return (a.t() if ta else a), (b.t() if tb else b), torch.zeros(m, n)


def timed(f, min_runs=7, min_seconds=0.3):
    warm = time.perf_counter()
    i = 0
    while i < 3 or time.perf_counter() - warm < 0.5:
        f()
        i += 1
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_seconds and len(times) < 1000):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-shapes", default="tiny,gpt2-6x512")
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--openblas-core", default="best")
    args = ap.parse_args()
    ambient = os.environ.get("OPENBLAS_CORETYPE")
    core = {"best": best_openblas_core(), "env": None}.get(args.openblas_core, args.openblas_core)
    if core:
        os.environ["OPENBLAS_CORETYPE"] = core  # before torch loads OpenBLAS
    import torch
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(1)
    table = []
    for name in args.model_shapes.split(","):
        if name not in MODELS:
            raise SystemExit(f"unknown model shapes '{name}' ({', '.join(MODELS)})")
        for s in model_shapes(name, args.batch):
            if not any(t[1:] == s[1:] for t in table):
                table.append(s)
    table.append(("square", 1024, 1024, 1024, False, False, 0.0))

    load_start = open("/proc/loadavg").read().strip()
    corename = openblas_corename()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; OpenBLAS core {corename} "
          f"(asked for {core or 'nothing'}, environment's OPENBLAS_CORETYPE {ambient or 'unset'}); load average {load_start}")
    results = []
    for label, m, n, k, ta, tb, beta in table:
        a, b, c = operands(torch, m, n, k, ta, tb, gen)
        if beta == 0:
            f = lambda: torch.mm(a, b, out=c)
        else:
            f = lambda: c.addmm_(a, b)
        times = timed(f)
        ms = statistics.median(times) * 1e3
        gflops = 2.0 * m * n * k / (ms * 1e-3) / 1e9
        op = ("T" if ta else "N") + ("T" if tb else "N")
        print(f"{label:<24} {f'{m}x{n}x{k}':>20} {op:>3} {gflops:10.1f} GF/s")
        results.append({
            "suite": "gemm", "impl": "pytorch", "backend": "cpu",
            "shape": {"M": m, "N": n, "K": k, "transA": ta, "transB": tb, "dtype": "fp32"},
            "ms": round(ms, 4), "tflops": round(gflops / 1e3, 6), "runs": len(times),
            "note": f"{label}; beta {beta:g}",
        })
        del a, b, c

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    doc = {
        "device": f"{model}, {os.cpu_count()} cores",
        "software": {"torch": torch.__version__, "python": platform.python_version(), "os": platform.platform(),
                     "openblas_core": corename, "openblas_core_requested": core or ""},
        "commit": commit,
        "command": "/usr/bin/python3 bench/cpu/torch_gemm.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "timing": "median wall time of >= 7 calls (and >= 0.3 s) after >= 0.5 s of warm-up; fp32, row-major, "
                  "torch.mm(out=) for beta 0, addmm_ for beta 1",
        "flops_convention": "GEMM: 2·M·N·K",
        "load": f"{load_start} -> {open('/proc/loadavg').read().strip()}",
        "results": results,
    }
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results",
                                   f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}-cpu-gemm-torch.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
