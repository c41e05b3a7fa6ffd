"""The bd3lms DiT denoiser in PyTorch, with the parameter names of our checkpoints (without "backbone."), written
for the benchmark and parity scripts from DESIGN.md section 5 and engine/Model/Denoiser.cs:

  vocab_embed.embedding [V, D]; sigma_map.mlp.{0,2} (256 -> cond -> cond, SiLU between; c = SiLU(sigma_map(0)));
  blocks.i: norm1/norm2 (LayerNorm weight only, eps 1e-5), attn_qkv [3D, D] (three, heads, head_dim), attn_out [D, D],
  mlp.0 [4D, D]+b, GELU(tanh), mlp.2 [D, 4D]+b, adaLN_modulation [6D, cond]+b giving
  (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp); x += gate * dropout(branch(LN(x)*(1+scale)+shift));
  rotary on q and k, half-split, base 10000; output_layer: norm_final, adaLN_modulation [2D, cond] (shift, scale),
  linear [V, D]+b.
The attention itself is passed in (FlexAttention with a BlockMask, SDPA with a dense mask, ...).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FREQ_DIM = 256


class WeightOnlyLayerNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # statistics in fp32 (fp64 when the whole model is fp64, for the parity reference), as our engine does
        y = F.layer_norm(x.to(torch.promote_types(x.dtype, torch.float32)), (x.shape[-1],), eps=1e-5)
        return y.to(x.dtype) * self.weight.to(x.dtype)


class Embedding(nn.Module):
    def __init__(self, vocab, dim):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab, dim).uniform_(-1 / math.sqrt(dim), 1 / math.sqrt(dim)))

    def forward(self, ids):
        return F.embedding(ids, self.embedding)


class SigmaMap(nn.Module):
    def __init__(self, cond):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, cond), nn.SiLU(), nn.Linear(cond, cond))

    def forward(self, dtype, device):
        # t = 0 (BD3-LM has no time conditioning): [cos(0*f), sin(0*f)] = [1]*128 + [0]*128
        freq = torch.cat([torch.ones(FREQ_DIM // 2), torch.zeros(FREQ_DIM // 2)]).to(device=device, dtype=dtype)
        return self.mlp(freq[None])


def rotary_tables(positions, head_dim, device, dtype):
    """cos, sin [len(positions), head_dim/2]; angles in float64 as our engine forms them, then rounded to float32."""
    half = head_dim // 2
    inv = 1.0 / (10000.0 ** (torch.arange(half, dtype=torch.float64) * 2.0 / head_dim))
    ang = positions.to(torch.float64).cpu()[:, None] * inv[None, :]
    return ang.cos().float().to(device=device, dtype=dtype), ang.sin().float().to(device=device, dtype=dtype)


def apply_rotary(x, cos, sin):
    """x [B, T, H, hd]; cos/sin [T, hd/2] (or [B, T, hd/2])."""
    half = x.shape[-1] // 2
    if cos.dim() == 2:
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    else:
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):
    def __init__(self, dim, heads, cond):
        super().__init__()
        self.heads = heads
        self.norm1 = WeightOnlyLayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = WeightOnlyLayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.adaLN_modulation = nn.Linear(cond, 6 * dim)

    def qkv(self, x, c, cos, sin):
        B, T, D = x.shape
        mods = self.adaLN_modulation(c)[:, None, :].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + mods[1]) + mods[0]
        qkv = self.attn_qkv(h).view(B, T, 3, self.heads, D // self.heads)
        q, k, v = qkv.unbind(dim=2)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v, mods

    def finish(self, x, attn, mods, dropout):
        """attn [B, T, H, hd] -> residual updates."""
        B, T = x.shape[:2]
        y = self.attn_out(attn.reshape(B, T, -1))
        x = x + mods[2] * F.dropout(y, dropout, self.training)
        h = self.norm2(x) * (1 + mods[4]) + mods[3]
        return x + mods[5] * F.dropout(self.mlp(h), dropout, self.training)

    def forward(self, x, c, cos, sin, attention, dropout):
        q, k, v, mods = self.qkv(x, c, cos, sin)
        # attention(q, k, v) takes and returns [B, H, T, hd]
        o = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        return self.finish(x, o, mods, dropout)


class FinalLayer(nn.Module):
    def __init__(self, dim, vocab, cond):
        super().__init__()
        self.norm_final = WeightOnlyLayerNorm(dim)
        self.linear = nn.Linear(dim, vocab)
        self.adaLN_modulation = nn.Linear(cond, 2 * dim)

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c)[:, None, :].chunk(2, dim=-1)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class DiT(nn.Module):
    def __init__(self, vocab, dim, layers, heads, cond=128, dropout=0.1):
        super().__init__()
        self.vocab, self.dim, self.heads, self.dropout = vocab, dim, heads, dropout
        self.vocab_embed = Embedding(vocab, dim)
        self.sigma_map = SigmaMap(cond)
        self.blocks = nn.ModuleList([Block(dim, heads, cond) for _ in range(layers)])
        self.output_layer = FinalLayer(dim, vocab, cond)

    @property
    def head_dim(self):
        return self.dim // self.heads

    def cond(self, x):
        return F.silu(self.sigma_map(x.dtype, x.device))

    def body(self, ids, positions, attention, rope=None):
        x = self.vocab_embed(ids)
        c = self.cond(x)
        cos, sin = rope if rope is not None else rotary_tables(positions, self.head_dim, x.device, x.dtype)
        for blk in self.blocks:
            x = blk(x, c, cos, sin, attention, self.dropout)
        return x, c

    def forward(self, ids, positions, attention, head_rows=None, rope=None):
        """ids [B, T]; positions [T] (or rope = precomputed (cos, sin) for them); logits of rows head_rows or all rows."""
        x, c = self.body(ids, positions, attention, rope)
        if head_rows is not None:
            x = x[:, head_rows]
        return self.output_layer(x, c)


def bd3_nelbo(logits, x, weights, mask_id):
    """Mean over all B*L tokens of weights * (-log softmax(logits with the MASK column at -inf)[x])."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)).clone()  # fp32, or fp64 for a float64 reference
    logits[..., mask_id] = float("-inf")
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, x[..., None].long()).squeeze(-1)
    nll = torch.where(weights > 0, nll, torch.zeros_like(nll))
    return (weights * nll).sum() / x.numel()


def config_from_json(cfg):
    return dict(vocab=cfg["vocab_size"], dim=cfg["hidden_dim"], layers=cfg["n_blocks"], heads=cfg["n_heads"],
                cond=cfg["cond_dim"])


SIZES = {
    "tiny": dict(dim=256, layers=4, heads=4, cond=128),
    "small": dict(dim=768, layers=12, heads=12, cond=128),
    "6x512": dict(dim=512, layers=6, heads=8, cond=128),  # the CPU comparison's GPT-2-vocabulary model (bench custom --width 512 --layers 6 --heads 8)
}
