#!/usr/bin/env python3
"""The PyTorch peer of our training step: the same model as our `small` (bd3lms DiT, bd3_model.py), the vectorised BD3
objective over x_noisy ⊕ x_clean (2L tokens) with FlexAttention and its BlockMask, torch.compile, bf16 autocast,
NELBO, backward, gradient clipping at 1.0, fused AdamW (lr 3e-4, betas 0.9/0.999, no weight decay) and an EMA of the
weights — what our Trainer.TrainStep does. Random tokens; one t per (sequence, block), stratified.

  python3 bench/flex/train_step.py --out bench/results/raw/torch-train.json [--model small] [--L 1024] [--Lp 4,16] [--batch 8]
"""
import argparse
import statistics
import sys
import os

import torch

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from bd3_model import DiT, SIZES, bd3_nelbo, rotary_tables  # noqa: E402


def noise(x, Lp, mask_id, gen):
    B, L = x.shape
    n = B * (L // Lp)
    u = (torch.rand((), generator=gen, device=x.device) + torch.arange(n, device=x.device) / n) % 1.0
    t = u[torch.randperm(n, generator=gen, device=x.device)].clamp_min(1e-4).view(B, L // Lp)
    t_tok = t.repeat_interleave(Lp, dim=1)
    masked = torch.rand(B, L, generator=gen, device=x.device) < t_tok
    xn = torch.where(masked, torch.full_like(x, mask_id), x)
    return xn, torch.where(masked, 1.0 / t_tok, torch.zeros_like(t_tok))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small")
    ap.add_argument("--vocab", type=int, default=50258)
    ap.add_argument("--L", type=int, default=1024)
    ap.add_argument("--Lp", default="4,16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default="torch-train.json")
    a = ap.parse_args()

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    size = SIZES[a.model]
    doc = common.new_doc(f"CUDA events per step, median of {a.steps} steps after {a.warmup} warm-up steps (compilation included in warm-up only)")
    for Lp in [int(x) for x in a.Lp.split(",")]:
        torch.manual_seed(0)
        mask_id = a.vocab - 1
        model = DiT(a.vocab, size["dim"], size["layers"], size["heads"], size["cond"], dropout=0.1).to(dev)
        model.train()
        nparams = sum(p.numel() for p in model.parameters())
        ema = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.999), weight_decay=0.0, fused=True)
        T = 2 * a.L
        bm = create_block_mask(common.bd3_mask_mod(a.L, Lp), B=None, H=None, Q_LEN=T, KV_LEN=T, device=dev)
        flex = torch.compile(flex_attention, dynamic=False)

        def attention(q, k, v):
            return flex(q, k, v, block_mask=bm)

        positions = torch.cat([torch.arange(a.L), torch.arange(a.L)]).to(dev)
        rope = rotary_tables(positions, size["dim"] // size["heads"], dev, torch.float32)  # once, outside the compiled graph

        def loss_fn(ids, x, w):
            logits = model(ids, positions, attention, head_rows=slice(0, a.L), rope=rope)
            return bd3_nelbo(logits, x, w, mask_id)

        loss_c = loss_fn if a.no_compile else torch.compile(loss_fn)
        gen = torch.Generator(device=dev)
        gen.manual_seed(1)

        def step(_):
            x = torch.randint(0, a.vocab - 1, (a.batch, a.L), device=dev, generator=gen)
            xn, w = noise(x, Lp, mask_id, gen)
            ids = torch.cat([xn, x], dim=1)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_c(ids, x, w)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 1 - 0.9999)
            return loss

        ms, n = common.cuda_time(step, warmup=a.warmup, runs=a.steps)
        tps = a.batch * a.L / (ms / 1e3)
        shp = common.shape(a.batch, size["heads"], a.L, Lp, size["dim"] // size["heads"], "bf16",
                           V=a.vocab, width=size["dim"], layers=size["layers"])
        doc["results"].append(common.result("train_step", "pytorch-flex" + ("" if a.no_compile else "-compiled"), shp, ms,
                                            tokens_per_s=tps, runs=n,
                                            note=f"{nparams} parameters; bf16 autocast, fp32 master weights, fused AdamW, clip 1.0, EMA, dropout 0.1"))
        print(f"train_step {a.model} L={a.L} L'={Lp} batch={a.batch}: {ms:.2f} ms, {tps:,.0f} tokens/s")
        del model, opt, ema
        torch.cuda.empty_cache()
    common.write_doc(doc, a.out)


if __name__ == "__main__":
    main()
