#!/usr/bin/env python3
"""BD3 training attention on the GPU with PyTorch: FlexAttention (BlockMask from a mask_mod over 2L tokens, compiled),
SDPA with a dense boolean mask, and causal SDPA (the dense ceiling), forward and forward+backward, for exactly the
shapes of our suite: L in {1024, 4096, 8192}, L' in {4, 16}, B*H = 96 (B=8, H=12), d = 64, bf16.

Timing: CUDA events around each call, median of >= 20 calls after warm-up, rotating among several input buffer sets
so that repeated calls do not run out of L2. The mask is checked against an independent construction and, when
attn_gym is importable, against attention-gym's block-diffusion mask.

  python3 bench/flex/flex_bench.py --out bench/results/raw/flex.json [--L 1024,4096,8192] [--Lp 4,16]
"""
import argparse
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __import__("os").path.dirname(__file__))
import common  # noqa: E402


def check_mask(L, Lp, device):
    """Returns (ok, note). Compares our mask_mod evaluated densely with an independent block construction, and with
    attn_gym's block diffusion mask when available."""
    T = 2 * L
    ours = common.dense_from_mask_mod(common.bd3_mask_mod(L, Lp), T, device)
    indep = common.bd3_dense_independent(L, Lp, device)
    ok = bool(torch.equal(ours, indep))
    pairs = int(ours.sum().item())
    ok &= pairs == common.bd3_pairs(L, Lp)
    note = f"mask == independent block construction: {ok}; pairs {pairs} ({pairs / T / T:.4f} of (2L)^2)"
    gym = None
    try:
        from attn_gym.masks.block_diffusion import generate_block_diffusion_mask as gym  # noqa: F811
    except Exception:
        try:
            from attn_gym.masks import generate_block_diffusion_mask as gym  # noqa: F811
        except Exception:
            gym = None
    if gym is not None:
        try:
            g = dense_from_gym(gym, L, Lp, T, device)
            same = bool(torch.equal(ours, g))
            ok &= same
            note += f"; == attn_gym block_diffusion: {same}"
        except Exception as e:  # API drift: say so rather than fail the run
            note += f"; attn_gym present but not compared ({type(e).__name__}: {e})"
    else:
        note += "; attn_gym not importable"
    return ok, note


def dense_from_gym(gym, L, Lp, T, device):
    try:
        mm = gym(seq_len=L, block_size=Lp)
    except TypeError:
        mm = gym(L, Lp)
    return common.dense_from_mask_mod(mm, T, device)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", default="1024,4096,8192")
    ap.add_argument("--Lp", default="4,16")
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--H", type=int, default=12)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rotate", type=int, default=4)
    ap.add_argument("--no-sdpa-dense", action="store_true")
    ap.add_argument("--out", default="flex.json")
    a = ap.parse_args()

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    dev = torch.device("cuda")
    dtype = torch.bfloat16
    flex = torch.compile(flex_attention, dynamic=False)
    doc = common.new_doc(f"CUDA events per call, median of {a.runs} after {a.warmup} warm-up calls, "
                         f"{a.rotate} rotating input buffer sets; fwd+bwd = one forward and one backward with a given dO")
    B, H, d = a.B, a.H, a.d
    print(f"{'impl':<22} {'L':>6} {'Lp':>3} {'fwd ms':>9} {'TF/s':>7} {'fwd+bwd ms':>11} {'TF/s':>7}")

    def bufs(T):
        out = []
        for _ in range(a.rotate):
            q, k, v = (torch.randn(B, H, T, d, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
            do = torch.randn(B, H, T, d, device=dev, dtype=dtype)
            out.append((q, k, v, do))
        return out

    def run(impl, suite_shape, fwd_call, pairs, note, suite_prefix="attn_bd3"):
        Ls, Lps = suite_shape["L"], suite_shape["Lp"]
        sets = bufs(suite_shape["T"])
        shp = common.shape(B, H, Ls, Lps, d, "bf16")

        def f(i):
            q, k, v, _ = sets[i % len(sets)]
            with torch.no_grad():
                fwd_call(q, k, v)

        def fb(i):
            q, k, v, do = sets[i % len(sets)]
            o = fwd_call(q, k, v)
            o.backward(do)
            for t in (q, k, v):
                t.grad = None

        fwd_flops = 4.0 * d * pairs * B * H
        try:
            ms_f, n_f = common.cuda_time(f, a.warmup, a.runs)
            ms_fb, n_fb = common.cuda_time(fb, a.warmup, a.runs)
        except torch.cuda.OutOfMemoryError as e:
            print(f"{impl:<22} {Ls:>6} {Lps:>3} out of memory: {str(e)[:80]}")
            doc["results"].append({"suite": suite_prefix + "_fwd", "impl": impl, "backend": "cuda", "shape": shp, "ms": None, "note": "out of memory"})
            torch.cuda.empty_cache()
            return
        doc["results"].append(common.result(suite_prefix + "_fwd", impl, shp, ms_f, fwd_flops / ms_f / 1e9, runs=n_f, note=note))
        doc["results"].append(common.result(suite_prefix + "_fwd_bwd", impl, shp, ms_fb, 3.5 * fwd_flops / ms_fb / 1e9, runs=n_fb, note=note))
        print(f"{impl:<22} {Ls:>6} {Lps:>3} {ms_f:>9.3f} {fwd_flops / ms_f / 1e9:>7.1f} {ms_fb:>11.3f} {3.5 * fwd_flops / ms_fb / 1e9:>7.1f}")
        del sets
        torch.cuda.empty_cache()

    all_ok = True
    for L in [int(x) for x in a.L.split(",")]:
        T = 2 * L
        for Lp in [int(x) for x in a.Lp.split(",")]:
            ok, check_note = check_mask(L, Lp, dev)
            all_ok &= ok
            print(f"mask L={L} L'={Lp}: {check_note}")
            mm = common.bd3_mask_mod(L, Lp)
            bm = create_block_mask(mm, B=None, H=None, Q_LEN=T, KV_LEN=T, device=dev)
            pairs = common.bd3_pairs(L, Lp)
            note = f"FlexAttention BlockMask {bm.BLOCK_SIZE} tiles, sparsity {bm.sparsity():.1f}%; {check_note}"
            run("flex_attention", {"L": L, "Lp": Lp, "T": T}, lambda q, k, v, bm=bm: flex(q, k, v, block_mask=bm), pairs, note)
            if not a.no_sdpa_dense:
                dense = common.dense_from_mask_mod(mm, T, dev)
                run("sdpa_dense_mask", {"L": L, "Lp": Lp, "T": T},
                    lambda q, k, v, m=dense: F.scaled_dot_product_attention(q, k, v, attn_mask=m), pairs,
                    "SDPA with a dense boolean [2L, 2L] mask (PyTorch picks the kernel)")
                del dense
            # the dense ceiling: causal flash attention over the same 2L tokens (not the same mask)
            run("sdpa_causal_ceiling", {"L": L, "Lp": Lp, "T": T},
                lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), common.causal_pairs(T),
                "causal SDPA over the same 2L tokens: a different (denser) mask, the dense-kernel ceiling; FLOPs on its own causal pairs")
        # token-causal over L tokens pairs with our attn_causal suite
        run("sdpa_causal", {"L": L, "Lp": 1, "T": L},
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), common.causal_pairs(L),
            "causal SDPA over L tokens", suite_prefix="attn_causal")
    doc["mask_checks_passed"] = all_ok
    common.write_doc(doc, a.out)
    if not all_ok:
        print("MASK CHECK FAILED", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
