#!/usr/bin/env python3
"""The PyTorch CPU peer of `bench attention-quick` for the BD3 training attention: softmax(Q·Kᵀ/√d, BD3 mask)·V over
x_noisy ⊕ x_clean (2L tokens) with autograd, forward and backward timed apart (ours: tile skipping; here: the dense
masked computation — torch 1.13 has neither SDPA nor FlexAttention; SDPA with the mask on a newer torch). Credited
with the allowed pairs only (bench/README.md), so TFLOP/s ratios are time ratios. fwd_bwd = median(fwd) + median(bwd),
as ours reports it.

  /usr/bin/python3 bench/cpu/torch_attention.py --L 256,512,1024,2048 --Lp 16 --out torch-attention.json
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "flex"))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", default="256,512,1024,2048")
    ap.add_argument("--Lp", default="16")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--H", type=int, default=4)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="torch-attention.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    kind = common.attention_kind()
    doc = common.new_doc(f"median wall time of {a.runs} forward and {a.runs} backward calls (alternating) after {a.warmup} warm-up pairs; "
                         f"{torch.get_num_threads()} threads; fwd_bwd = median(fwd) + median(bwd)")
    print(f"{'suite':<18} {'L':>6} {'Lp':>4} {'ms':>10} {'GFLOP/s':>9}")
    for L in [int(x) for x in a.L.split(",")]:
        for Lp in [int(x) for x in a.Lp.split(",")]:
            if L % Lp:
                continue
            T = 2 * L
            mask = common.dense_from_mask_mod(common.bd3_mask_mod(L, Lp), T, "cpu")
            gen = torch.Generator()
            gen.manual_seed(1)
            q, k, v = (torch.rand(a.B, a.H, T, a.d, generator=gen).mul_(2).sub_(1).requires_grad_() for _ in range(3))
            dout = torch.rand(a.B, a.H, T, a.d, generator=gen).mul_(2).sub_(1)
            fwd, bwd = [], []
            for i in range(a.warmup + a.runs):
                q.grad = k.grad = v.grad = None
                t0 = time.perf_counter()
                o = common.masked_attention(q, k, v, mask)
                t1 = time.perf_counter()
                o.backward(dout)
                t2 = time.perf_counter()
                if i >= a.warmup:
                    fwd.append(t1 - t0)
                    bwd.append(t2 - t1)
            pairs = common.bd3_pairs(L, Lp)
            ff = 4.0 * a.d * pairs * a.B * a.H
            shp = common.shape(a.B, a.H, L, Lp, a.d, "fp32")
            note = f"{kind}: [2L x 2L] scores, masked_fill, softmax, matmul; autograd backward; allowed pairs {pairs} per head"
            for suite, sec, flops in (("fwd", statistics.median(fwd), ff), ("bwd", statistics.median(bwd), 2.5 * ff),
                                      ("fwd_bwd", statistics.median(fwd) + statistics.median(bwd), 3.5 * ff)):
                doc["results"].append(common.result(f"attn_bd3_{suite}", f"pytorch-{kind}", shp, sec * 1e3, tflops=flops / sec / 1e12,
                                                    runs=len(fwd), backend="cpu", note=note))
                print(f"{'attn_bd3_' + suite:<18} {L:>6} {Lp:>4} {sec * 1e3:>10.2f} {flops / sec / 1e9:>9.1f}")
    common.write_doc(doc, a.out)


if __name__ == "__main__":
    main()
