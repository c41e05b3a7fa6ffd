"""Shared pieces of the PyTorch side of the FastBlockDiff benchmark suite.

Every script here writes JSON in the schema of bench/BenchJson.cs:
  {device, software: {dotnet?, os, torch, cuda, python, ...}, commit, command, date_utc, timing, flops_convention,
   results: [{suite, impl, backend, shape: {B, H, L, Lp, d, dtype, ...}, ms, tflops?, tokens_per_s?, nfe?, runs?, note?}]}
and `bench compare` pairs results of the same suite and shape with ours (impl "fastblockdiff*").
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

FLOPS_CONVENTION = (
    "attention FLOPs count only allowed (unmasked) query-key pairs P: forward 4*d*P, backward 2.5x forward, "
    "forward+backward 3.5x forward = 14*d*P; dense peers are credited with the same useful FLOPs. "
    "tokens_per_s: training = batch*L per step; sampling = generated tokens per second.")


def commit():
    env = os.environ.get("FBD_COMMIT")
    if env:
        return env
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        head = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except Exception:  # no git on the device machine, or not a checkout
        return "unknown"


def software():
    import torch
    s = {"torch": torch.__version__, "python": platform.python_version(), "os": platform.platform()}
    if torch.version.cuda:
        s["cuda"] = torch.version.cuda
    try:
        import triton
        s["triton"] = triton.__version__
    except Exception:
        pass
    return s


def device_name():
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:  # the same words as the engine's bench (BenchEnv.Device): "<model name>, <n> cores"
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        return f"{model}, {os.cpu_count()} cores"
    except Exception:
        return platform.processor() or "cpu"


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def new_doc(timing):
    return {
        "device": device_name(),
        "software": software(),
        "commit": commit(),
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "timing": timing,
        "flops_convention": FLOPS_CONVENTION,
        "load": load_average(),
        "results": [],
    }


def shape(B, H, L, Lp, d, dtype, **extra):
    s = {"B": B, "H": H, "L": L, "Lp": Lp, "d": d, "dtype": dtype}
    s.update(extra)
    return s


def result(suite, impl, shp, ms, tflops=None, tokens_per_s=None, nfe=None, runs=None, note=None, backend="cuda"):
    r = {"suite": suite, "impl": impl, "backend": backend, "shape": shp, "ms": round(ms, 5)}
    if tflops is not None:
        r["tflops"] = round(tflops, 7)
    if tokens_per_s is not None:
        r["tokens_per_s"] = round(tokens_per_s, 2)
    if nfe is not None:
        r["nfe"] = int(nfe)
    if runs is not None:
        r["runs"] = runs
    if note:
        r["note"] = note
    return r


def write_doc(doc, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


def cuda_time(fn, warmup=5, runs=20, rotate=None):
    """Median milliseconds of fn(i) over `runs` calls after `warmup` calls, each call timed with its own pair of
    CUDA events. `rotate` (the number of input buffer sets) is passed through as i % rotate by the caller's fn."""
    import torch
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    for i in range(runs):
        starts[i].record()
        fn(warmup + i)
        ends[i].record()
    torch.cuda.synchronize()
    times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    return statistics.median(times), len(times)


def masked_attention(q, k, v, mask=None):
    """softmax(q·kᵀ/√d + mask)·v for [B, H, T, d] tensors and a boolean mask (True = allowed): SDPA where this torch
    has it (>= 2.0), else the dense masked computation (torch 1.13 has neither SDPA nor FlexAttention)."""
    import torch
    import torch.nn.functional as F
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def attention_kind():
    import torch.nn.functional as F
    return "sdpa" if hasattr(F, "scaled_dot_product_attention") else "dense-masked"


# ---------------------------------------------------------------- the BD3 mask (DESIGN.md 1.1)

def bd3_mask_mod(L, Lp):
    """FlexAttention mask_mod over 2L tokens: x_noisy (0..L-1) then x_clean (L..2L-1)."""
    def mask_mod(b, h, q_idx, kv_idx):
        q_clean = q_idx >= L
        k_clean = kv_idx >= L
        q_blk = (q_idx - q_clean.to(q_idx.dtype) * L) // Lp
        k_blk = (kv_idx - k_clean.to(kv_idx.dtype) * L) // Lp
        noisy_diag = (~q_clean) & (~k_clean) & (q_blk == k_blk)
        noisy_to_clean = (~q_clean) & k_clean & (k_blk < q_blk)
        clean_causal = q_clean & k_clean & (k_blk <= q_blk)
        return noisy_diag | noisy_to_clean | clean_causal
    return mask_mod


def bd3_dense_independent(L, Lp, device):
    """The same mask built another way: a (2n x 2n) block pattern expanded by L' (no per-token arithmetic)."""
    import torch
    n = L // Lp
    eye = torch.eye(n, dtype=torch.bool, device=device)
    strict_lower = torch.ones(n, n, dtype=torch.bool, device=device).tril(-1)
    lower = torch.ones(n, n, dtype=torch.bool, device=device).tril(0)
    zero = torch.zeros(n, n, dtype=torch.bool, device=device)
    top = torch.cat([eye, strict_lower], dim=1)      # noisy queries: own noisy block | earlier clean blocks
    bottom = torch.cat([zero, lower], dim=1)         # clean queries: never noisy     | clean blocks up to own
    blocks = torch.cat([top, bottom], dim=0)
    return blocks.repeat_interleave(Lp, dim=0).repeat_interleave(Lp, dim=1)


def dense_from_mask_mod(mask_mod, T, device):
    import torch
    q = torch.arange(T, device=device)[:, None]
    k = torch.arange(T, device=device)[None, :]
    zero = torch.zeros((), dtype=torch.long, device=device)
    return mask_mod(zero, zero, q, k)


def bd3_pairs(L, Lp):
    """Allowed (query, key) pairs of the 2L BD3 mask for one (batch, head)."""
    n = L // Lp
    noisy = Lp * Lp * (n + n * (n - 1) // 2)
    clean = Lp * Lp * (n * (n + 1) // 2)
    return noisy + clean


def causal_pairs(T):
    return T * (T + 1) // 2
