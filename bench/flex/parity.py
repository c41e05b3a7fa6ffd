#!/usr/bin/env python3
"""Parity of our engine with PyTorch autograd: loads our safetensors checkpoint into the PyTorch DiT (bd3_model.py),
reads the dump that `bench parity-dump` wrote (x, x_noisy, t, weights, loss, logits, grad.<name>), recomputes the
BD3 NELBO over x_noisy ⊕ x with the dense BD3 mask (SDPA), backpropagates, and reports the largest relative
differences of the loss, the logits and every parameter's gradient. This is the independent check of our
hand-written backward. Runs on any machine with PyTorch (CPU is fine; float64 by default).

  dotnet bench/bin/Release/net10.0/FastBlockDiff.Bench.dll parity-dump --checkpoint CKPT --out dump.safetensors [--init custom]
  python3 bench/flex/parity.py --checkpoint CKPT --dump dump.safetensors --out bench/results/raw/parity.json
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from bd3_model import DiT, bd3_nelbo, config_from_json  # noqa: E402

DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64, "F16": np.float16}


def read_safetensors(path):
    """Own minimal reader (no dependency on the safetensors package): u64 header length, JSON header, raw data."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        if info["dtype"] == "BF16":
            a, b = info["data_offsets"]
            u16 = np.frombuffer(raw[base + a:base + b], dtype=np.uint16).astype(np.uint32) << 16
            out[name] = torch.from_numpy(u16.view(np.float32).reshape(info["shape"]).copy())
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a:base + b], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out, meta


def rel(a, b):
    """(‖a-b‖/‖b‖, max|a-b|/max|b|), with b the reference."""
    a, b = a.double(), b.double()
    d = (a - b)
    nb = b.norm().item()
    mb = b.abs().max().item() if b.numel() else 0.0
    return (d.norm().item() / nb if nb > 0 else d.norm().item(),
            d.abs().max().item() / mb if mb > 0 else d.abs().max().item())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="fail when a relative difference (norm-wise) exceeds this")
    ap.add_argument("--out", default="parity.json")
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    dev = torch.device(a.device)

    with open(os.path.join(a.checkpoint, "config.json")) as f:
        cfg = json.load(f)
    weights, _ = read_safetensors(os.path.join(a.checkpoint, "model.safetensors"))
    dump, meta = read_safetensors(a.dump)
    kw = config_from_json(cfg)
    model = DiT(kw["vocab"], kw["dim"], kw["layers"], kw["heads"], kw["cond"], dropout=0.0)
    state = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        sys.exit(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
    model = model.to(device=dev, dtype=dtype).eval()  # eval: dropout off (the dump was made with dropout 0)

    mask_id = cfg.get("mask_index", kw["vocab"] - 1)
    L, Lp = cfg["model_length"], cfg["block_size"]
    x, xn = dump["x"].long().to(dev), dump["x_noisy"].long().to(dev)
    w = dump["weights"].to(device=dev, dtype=dtype)
    ids = torch.cat([xn, x], dim=1)
    positions = torch.cat([torch.arange(L), torch.arange(L)]).to(dev)
    mask = common.dense_from_mask_mod(common.bd3_mask_mod(L, Lp), 2 * L, dev)

    def attention(q, k, v):
        return common.masked_attention(q, k, v, mask)  # SDPA, or dense masked softmax on torch < 2.0

    t0 = time.perf_counter()
    logits = model(ids, positions, attention, head_rows=slice(0, L))
    loss = bd3_nelbo(logits, x, w, mask_id)
    loss.backward()
    ms = (time.perf_counter() - t0) * 1e3

    report = {}
    ours_loss = dump["loss"].double().item()
    ref_loss = loss.double().item()
    report["loss"] = {"ours": ours_loss, "torch": ref_loss, "rel": abs(ours_loss - ref_loss) / abs(ref_loss)}
    keep = torch.ones(kw["vocab"], dtype=torch.bool)
    keep[mask_id] = False
    lr = rel(dump["logits"][..., keep], logits.detach().cpu()[..., keep])
    report["logits"] = {"rel_norm": lr[0], "rel_max": lr[1]}
    grads = {}
    params = dict(model.named_parameters())
    for name, p in params.items():
        key = "grad." + name
        if key not in dump:
            sys.exit(f"dump has no {key}")
        g = p.grad.detach().cpu() if p.grad is not None else torch.zeros_like(p).cpu()
        r = rel(dump[key], g)
        grads[name] = {"rel_norm": r[0], "rel_max": r[1], "ref_norm": g.double().norm().item()}
    report["grads"] = grads
    worst = sorted(grads.items(), key=lambda kv: -kv[1]["rel_norm"])
    worst_norm = worst[0][1]["rel_norm"] if worst else 0.0
    worst_max = max((g["rel_max"] for g in grads.values()), default=0.0)
    ok = report["loss"]["rel"] < a.tolerance and lr[0] < a.tolerance and worst_norm < a.tolerance

    print(f"loss: ours {ours_loss:.8f}, torch ({a.dtype}) {ref_loss:.8f}, rel {report['loss']['rel']:.2e}")
    print(f"logits: rel ‖Δ‖/‖ref‖ {lr[0]:.2e}, max|Δ|/max|ref| {lr[1]:.2e}")
    print(f"gradients of {len(grads)} tensors: worst rel ‖Δ‖/‖ref‖ {worst_norm:.2e} ({worst[0][0] if worst else ''}), worst max|Δ|/max|ref| {worst_max:.2e}")
    for name, g in worst[:8]:
        print(f"  {name:<44} rel_norm {g['rel_norm']:.2e}  rel_max {g['rel_max']:.2e}  ‖ref‖ {g['ref_norm']:.3e}")
    print("PARITY OK" if ok else f"PARITY FAILED (tolerance {a.tolerance})")

    doc = common.new_doc("one forward+backward with autograd; ms is PyTorch's time for it")
    shp = common.shape(int(x.shape[0]), kw["heads"], L, Lp, kw["dim"] // kw["heads"], a.dtype,
                       V=kw["vocab"], width=kw["dim"], layers=kw["layers"])
    doc["results"].append(common.result(
        "parity", f"pytorch-autograd-{a.dtype}", shp, ms, backend=a.device,
        note=(f"loss rel {report['loss']['rel']:.2e}; logits rel_norm {lr[0]:.2e} rel_max {lr[1]:.2e}; "
              f"worst grad rel_norm {worst_norm:.2e} ({worst[0][0] if worst else ''}); worst grad rel_max {worst_max:.2e}; "
              f"{'OK' if ok else 'FAILED'} at tolerance {a.tolerance}")))
    doc["parity"] = {"ok": ok, "tolerance": a.tolerance, "dump_commit": meta.get("commit", ""), **report}
    common.write_doc(doc, a.out)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
