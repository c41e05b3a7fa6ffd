#!/usr/bin/env python3
"""The PyTorch peer of our block sampler: KV-cached BD3 block sampling (DESIGN.md 1.2) with the bd3lms DiT of
bd3_model.py and random weights. Per block: L' tokens start as MASK (the first block holds BOS); T = L' DDPM steps,
each revealing a still-masked token with probability (t - s)/t (the last step reveals all), tokens drawn by nucleus
sampling (top-p 0.9) with the MASK logit at -inf; a step that changed nothing reuses the last logits (no NFE); a
finished block is run once more as clean input to append its keys and values to the cache (a sliding window of L).
No EOS or entropy stop: every sequence generates --tokens tokens. On a GPU: bf16 autocast and a bf16 cache; on the
CPU (--device cpu, the CPU comparison of bench/run-cpu-compare.sh): fp32, no autocast. SDPA for attention where this
torch has it, else the dense computation (torch 1.13).

  python3 bench/flex/sampler.py --out bench/results/raw/torch-sample.json [--model small] [--batch 1,32] [--tokens 1024]
  /usr/bin/python3 bench/flex/sampler.py --device cpu --threads 2 --model tiny --vocab 260 --L 256 --batch 1,8 --tokens 64
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from bd3_model import DiT, SIZES, rotary_tables  # noqa: E402


class KvCache:
    def __init__(self, model, batch, capacity, device, dtype):
        H, hd = model.heads, model.head_dim
        self.k = [torch.zeros(batch, capacity, H, hd, device=device, dtype=dtype) for _ in model.blocks]
        self.v = [torch.zeros(batch, capacity, H, hd, device=device, dtype=dtype) for _ in model.blocks]
        self.length, self.capacity = 0, capacity

    def make_room(self, rows):
        drop = self.length + rows - self.capacity
        if drop > 0:
            keep = self.length - drop
            for buf in self.k + self.v:
                buf[:, :keep] = buf[:, drop:self.length].clone()
            self.length = keep


@torch.no_grad()
def decode(model, cache, ids, start, commit, rope):
    """Logits [B, L', V] of a block at absolute positions start.. against the cache (and itself, bidirectionally).
    rope = (cos, sin) tables for every position, precomputed once."""
    x = model.vocab_embed(ids)
    c = model.cond(x)
    cos, sin = rope[0][start:start + ids.shape[1]], rope[1][start:start + ids.shape[1]]
    n = cache.length
    for l, blk in enumerate(model.blocks):
        q, k, v, mods = blk.qkv(x, c, cos, sin)
        kk = torch.cat([cache.k[l][:, :n], k.to(cache.k[l].dtype)], dim=1)
        vv = torch.cat([cache.v[l][:, :n], v.to(cache.v[l].dtype)], dim=1)
        o = common.masked_attention(q.transpose(1, 2), kk.transpose(1, 2).to(q.dtype), vv.transpose(1, 2).to(q.dtype)).transpose(1, 2)
        x = blk.finish(x, o, mods, 0.0)
        if commit:
            cache.k[l][:, n:n + ids.shape[1]] = k
            cache.v[l][:, n:n + ids.shape[1]] = v
    if commit:
        cache.length += ids.shape[1]
        return None
    return model.output_layer(x, c)


def nucleus(logits, mask_id, top_p, gen):
    logits = logits.float()
    logits[..., mask_id] = float("-inf")
    p = torch.softmax(logits, dim=-1)
    sp, idx = p.sort(dim=-1, descending=True)
    keep = (sp.cumsum(-1) - sp) < top_p
    sp = torch.where(keep, sp, torch.zeros_like(sp))
    pick = torch.multinomial(sp.view(-1, sp.shape[-1]), 1, generator=gen).view(sp.shape[:-1])
    return idx.gather(-1, pick[..., None]).squeeze(-1)


@torch.no_grad()
def generate(model, batch, tokens, L, Lp, steps, mask_id, bos, device, seed):
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    gpu = device.type == "cuda"
    cache = KvCache(model, batch, L, device, torch.bfloat16 if gpu else torch.float32)
    nfe = 0
    out = []
    committed = 0
    total = tokens + 1  # BOS + tokens
    rope = rotary_tables(torch.arange(total + Lp), model.head_dim, device, torch.float32)
    while committed < total:
        block = torch.full((batch, Lp), mask_id, dtype=torch.long, device=device)
        if committed == 0:
            block[:, 0] = bos
        cache.make_room(Lp)
        logits = None
        stale = True
        for k in range(steps):
            masked = block == mask_id
            if not bool(masked.any()):
                break
            if stale:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
                    logits = decode(model, cache, block, committed, commit=False, rope=rope)
                nfe += 1
            sampled = nucleus(logits, mask_id, 0.9, gen)
            t = 1.0 - k / steps
            s = max(0.0, t - 1.0 / steps)
            p = 1.0 if k >= steps - 1 else (t - s) / t
            reveal = masked & (torch.rand(block.shape, generator=gen, device=device) < p)
            block = torch.where(reveal, sampled, block)
            stale = bool(reveal.any())
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            decode(model, cache, block, committed, commit=True, rope=rope)
        out.append(block)
        committed += Lp
    if gpu:
        torch.cuda.synchronize()
    return torch.cat(out, dim=1)[:, 1:total], nfe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small")
    ap.add_argument("--vocab", type=int, default=50258)
    ap.add_argument("--L", type=int, default=1024)
    ap.add_argument("--Lp", default="16")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=0, help="DDPM steps per block; 0 = L'")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--out", default="torch-sample.json")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    gpu = dev.type == "cuda"
    size = SIZES[a.model]
    torch.manual_seed(5)
    model = DiT(a.vocab, size["dim"], size["layers"], size["heads"], size["cond"], dropout=0.0).to(dev).eval()
    mask_id, bos = a.vocab - 1, (50256 if a.vocab == 50258 else a.vocab - 4)
    doc = common.new_doc(f"wall time ({'CUDA synchronised' if gpu else f'{torch.get_num_threads()} CPU threads'}) of whole generations, median of --repeat after one warm-up generation")
    for Lp in [int(x) for x in a.Lp.split(",")]:
        steps = a.steps or Lp
        for batch in [int(x) for x in a.batch.split(",")]:
            generate(model, batch, min(a.tokens, 4 * Lp), a.L, Lp, steps, mask_id, bos, dev, 0)  # warm-up
            times, nfes = [], []
            for r in range(a.repeat):
                t0 = time.perf_counter()
                toks, nfe = generate(model, batch, a.tokens, a.L, Lp, steps, mask_id, bos, dev, 11 + r)
                times.append(time.perf_counter() - t0)
                nfes.append(nfe)
            sec = statistics.median(times)
            tps = batch * a.tokens / sec
            shp = common.shape(batch, size["heads"], a.L, Lp, size["dim"] // size["heads"], "bf16" if gpu else "fp32",
                               V=a.vocab, width=size["dim"], layers=size["layers"], tokens=a.tokens, steps=steps)
            doc["results"].append(common.result("sample", "pytorch-kvcache", shp, sec * 1e3, tokens_per_s=tps,
                                                nfe=int(statistics.median(nfes)), runs=len(times),
                                                backend=dev.type,
                                                note=(f"eager PyTorch, {'bf16 autocast' if gpu else f'fp32, {torch.get_num_threads()} threads'}, "
                                                      f"{common.attention_kind()} attention against the KV cache; nucleus (sort) over every position of the block at every NFE")))
            print(f"sample {a.model} L'={Lp} T={steps} batch={batch}: {sec:.2f} s, {tps:,.1f} tokens/s, NFE {statistics.median(nfes)}")
    common.write_doc(doc, a.out)


if __name__ == "__main__":
    main()
