#!/usr/bin/env python3
"""The PyTorch CPU peer of `bench step-quick`: one configuration's BD3 training step and evaluation forward with the
bd3lms DiT of bench/flex/bd3_model.py (the same widths, heads, MLP, vocabulary, rotary, adaLN and t = 0 conditioning as
our Denoiser; bench/flex/parity.py checks its logits and gradients against ours on the same weights), on the CPU:
fp32, no autocast, eager, attention dense and masked over x_noisy ⊕ x_clean (2L tokens) with the BD3 mask (torch 1.13
has neither SDPA nor FlexAttention; SDPA with the same mask where a newer torch has it).

train: random tokens, one t per (sequence, block) stratified, NELBO on the noisy half, backward, clip at 1.0, AdamW
(foreach), EMA of the weights, dropout 0.1 — what our Trainer.DeviceStep does. eval: the same objective under
no_grad, dropout off, on one noised batch. Each timed over exactly --steps calls after --warmup.

  /usr/bin/python3 bench/cpu/torch_objective.py --model tiny --vocab 260 --L 256 --Lp 4 --batch 8 --out torch-step.json
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "flex"))
import common  # noqa: E402
from bd3_model import DiT, SIZES, bd3_nelbo, rotary_tables  # noqa: E402
from train_step import noise  # noqa: E402  (the same noising as the GPU peer; it imports no CUDA-only module)


def timed(fn, warmup, steps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny", help="a size of bd3_model.SIZES (tiny = 4x256, 6x512, small)")
    ap.add_argument("--vocab", type=int, default=260)
    ap.add_argument("--L", type=int, default=256)
    ap.add_argument("--Lp", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--what", default="train,eval")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="torch-step.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    size = SIZES[a.model]
    L, Lp, B = a.L, a.Lp, a.batch
    mask_id = a.vocab - 1
    torch.manual_seed(0)
    model = DiT(a.vocab, size["dim"], size["layers"], size["heads"], size["cond"], dropout=0.1)
    nparams = sum(p.numel() for p in model.parameters())
    mask = common.dense_from_mask_mod(common.bd3_mask_mod(L, Lp), 2 * L, "cpu")
    positions = torch.cat([torch.arange(L), torch.arange(L)])
    rope = rotary_tables(positions, size["dim"] // size["heads"], "cpu", torch.float32)

    def attention(q, k, v):
        return common.masked_attention(q, k, v, mask)

    def loss_of(ids, x, w):
        return bd3_nelbo(model(ids, positions, attention, head_rows=slice(0, L), rope=rope), x, w, mask_id)

    doc = common.new_doc(f"median wall time of {a.steps} calls after {a.warmup} warm-up calls; {torch.get_num_threads()} threads")
    shp = common.shape(B, size["heads"], L, Lp, size["dim"] // size["heads"], "fp32", V=a.vocab, width=size["dim"], layers=size["layers"])
    gen = torch.Generator()
    gen.manual_seed(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {size['layers']}x{size['dim']} ({size['heads']} heads), "
          f"V={a.vocab}, {nparams:,} parameters; L={L} L'={Lp} batch={B}; attention {common.attention_kind()}")

    def add(suite, times, note):
        sec = sorted(times)[len(times) // 2] if len(times) % 2 else 0.5 * sum(sorted(times)[len(times) // 2 - 1:len(times) // 2 + 1])
        doc["results"].append(common.result(suite, "pytorch-" + common.attention_kind(), shp, sec * 1e3, tokens_per_s=B * L / sec,
                                            runs=len(times), backend="cpu", note=note))
        print(f"  {suite:<12}: {sec * 1e3:9.1f} ms = {B * L / sec:9,.0f} tokens/s")

    what = a.what.split(",")
    if "train" in what:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=True)
        params = list(model.parameters())
        ema = [p.detach().clone() for p in params]

        def step():
            x = torch.randint(0, a.vocab - 1, (B, L), generator=gen)
            xn, w = noise(x, Lp, mask_id, gen)
            loss = loss_of(torch.cat([xn, x], dim=1), x, w)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():  # ema = 0.9999·ema + 0.0001·θ (torch 1.13 has no _foreach_lerp_)
                torch._foreach_mul_(ema, 0.9999)
                torch._foreach_add_(ema, [p.detach() for p in params], alpha=1 - 0.9999)
            return loss

        add("train_step", timed(step, a.warmup, a.steps),
            f"{nparams} parameters; eager fp32, {common.attention_kind()} attention with the 2L BD3 mask, dropout 0.1, clip 1.0, AdamW (foreach), EMA")
        del opt, ema
    if "eval" in what:
        model.eval()
        x = torch.randint(0, a.vocab - 1, (B, L), generator=gen)
        xn, w = noise(x, Lp, mask_id, gen)
        ids = torch.cat([xn, x], dim=1)

        def forward():
            with torch.no_grad():
                return loss_of(ids, x, w).item()

        add("eval_forward", timed(forward, a.warmup, a.steps),
            f"no_grad forward of the 2L BD3 objective (dropout off), head on the noisy half, NELBO; {common.attention_kind()} attention")
    common.write_doc(doc, a.out)


if __name__ == "__main__":
    main()
