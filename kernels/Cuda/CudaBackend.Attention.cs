using FastBlockDiff.Interop;

namespace FastBlockDiff.Kernels.Cuda;

public sealed unsafe partial class CudaBackend
{
    const string ATT = "attention.cu";
    const int AttTile = 32, AttThreads = 128;

    /// <summary>
    /// Attention on tensor cores (attention_bf16.cu: bf16 operands, fp32 accumulation and softmax statistics) on sm_80+:
    /// forward for head_dim 32/64/128, backward for 32/64 (other sizes fall back to the fp32 kernels).
    /// Off by default (the fp32 test mode).
    /// </summary>
    public bool Bf16Attention { get; set; }

    /// <summary>
    /// Bit-reproducible bf16 attention backward: dK/dV per key tile and dQ per query tile in a second kernel (it
    /// recomputes the probabilities), instead of dQ accumulated with atomics in whatever order the blocks run.
    /// </summary>
    public bool DeterministicAttention { get; set; }

    bool UseBf16AttentionFor(int hd) => Bf16Attention && ComputeCapability.Major >= 8 && hd is 32 or 64 or 128;

    const string BF = "attention_bf16.cu";

    /// <summary>The bf16 copy (qkv_bf16.cu) of an fp32 tensor that the tensor-core kernels read, in scratch <paramref name="name"/>.</summary>
    ulong Bf16Copy(string name, FloatView x)
    {
        long n = x.Length;
        ulong dst = Scratch(name, n * 2);
        Launch("qkv_bf16.cu", "fbd_bf16_pairs", (Blocks(n / 2), 1, 1), (Threads, 1, 1), 0, Ptr(x), dst, n / 2);
        return dst;
    }

    /// <summary>Warps per block of the bf16 forward (16 query rows each): 128-row tiles for head_dim 64, 64 rows otherwise.</summary>
    static int Bf16ForwardWarps(int hd) => hd == 64 ? 8 : 4;

    static int MaskCode(MaskKind k) => k switch { MaskKind.Bd3 => 0, MaskKind.BlockCausal => 1, MaskKind.Causal => 2, _ => 3 };

    static void CheckHeadDim(int hd)
    {
        if (hd > 128) throw new NotSupportedException($"the CUDA attention kernels support head_dim <= 128, got {hd}");
    }

    public void AttentionForward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse)
    {
        shape.Validate(); CheckHeadDim(shape.HeadDim);
        int hd = shape.HeadDim, T = shape.SeqLen;
        float scale = 1f / MathF.Sqrt(hd);
        if (UseBf16AttentionFor(hd))
        {
            ulong q16 = Bf16Copy("attn.qkv16", qkv);
            int warps = Bf16ForwardWarps(hd), smemBf = 2 * 2 * 64 * (hd + 8) * 2;
            Launch(BF, $"fbd_attn_fwd_bf16_hd{hd}", ((uint)(shape.Batch * shape.Heads), Div(T, 16 * warps), 1), ((uint)(32 * warps), 1, 1), smemBf,
                q16, Ptr(output), Ptr(lse), shape.Batch, shape.Heads, T, MaskCode(shape.Mask), Math.Max(1, shape.BlockSize), scale);
            return;
        }
        int smem = (32 * hd + 2 * 32 * (hd + 1)) * 4;
        Launch(ATT, "fbd_attn_fwd_f32", (Div(T, AttTile), (uint)(shape.Batch * shape.Heads), 1), (AttThreads, 1, 1), smem,
            Ptr(qkv), Ptr(output), Ptr(lse), shape.Batch, shape.Heads, hd, T, MaskCode(shape.Mask), Math.Max(1, shape.BlockSize), scale);
    }

    public void AttentionBackward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse, FloatView dOutput, FloatView dQkv)
    {
        shape.Validate(); CheckHeadDim(shape.HeadDim);
        int hd = shape.HeadDim, T = shape.SeqLen, B = shape.Batch, H = shape.Heads, bs = Math.Max(1, shape.BlockSize), mk = MaskCode(shape.Mask);
        float scale = 1f / MathF.Sqrt(hd);
        ulong d = Scratch("attn.D", (long)B * H * T * 4);
        long rowsTotal = (long)B * T * H;
        Launch(ATT, "fbd_attn_bwd_dot", (Div(rowsTotal * 32, 256), 1, 1), (256, 1, 1), 0, Ptr(output), Ptr(dOutput), d, B, H, hd, T);
        if (Bf16Attention && ComputeCapability.Major >= 8 && hd is 32 or 64)
        {
            ulong q16 = Bf16Copy("attn.qkv16", qkv), g16 = Bf16Copy("attn.dout16", dOutput);
            int smemBf = (2 * 64 * (hd + 8) + 64 * 72 + 2 * (2 * 64 * (hd + 8) + 256)) * 2;
            var grid = ((uint)(B * H), Div(T, 64), 1u);
            if (DeterministicAttention)
            {
                Launch(BF, $"fbd_attn_bwd_dkv_bf16_hd{hd}", grid, (128, 1, 1), smemBf, q16, g16, Ptr(lse), d, Ptr(dQkv), B, H, T, mk, bs, scale);
                Launch(BF, $"fbd_attn_bwd_dq_bf16_hd{hd}", grid, (128, 1, 1), 2 * 2 * 64 * (hd + 8) * 2, q16, g16, Ptr(lse), d, Ptr(dQkv), B, H, T, mk, bs, scale);
                return;
            }
            Enter();
            Cu.MemsetD32Async(Ptr(dQkv), 0, (long)B * T * 3 * H * hd, stream); // dQ is accumulated atomically
            Launch(BF, $"fbd_attn_bwd_bf16_hd{hd}", grid, (128, 1, 1), smemBf, q16, g16, Ptr(lse), d, Ptr(dQkv), B, H, T, mk, bs, scale);
            return;
        }
        int smemQ = (2 * 32 * hd + 2 * 32 * (hd + 1)) * 4;
        Launch(ATT, "fbd_attn_bwd_dq_f32", (Div(T, AttTile), (uint)(B * H), 1), (AttThreads, 1, 1), smemQ,
            Ptr(qkv), Ptr(dOutput), Ptr(lse), d, Ptr(dQkv), B, H, hd, T, mk, bs, scale);
        int smemKV = (2 * 32 * hd + 2 * 32 * (hd + 1) + 64) * 4;
        Launch(ATT, "fbd_attn_bwd_dkv_f32", (Div(T, AttTile), (uint)(B * H), 1), (AttThreads, 1, 1), smemKV,
            Ptr(qkv), Ptr(dOutput), Ptr(lse), d, Ptr(dQkv), B, H, hd, T, mk, bs, scale);
    }

    /// <summary>Split count of the decode kernel: enough blocks to fill the device, at least 256 keys per split.</summary>
    public int DecodeSplits(DecodeShape s)
    {
        int nk = s.CacheLen + s.BlockLen;
        long baseBlocks = (long)Div(s.BlockLen, AttTile) * s.Batch * s.Heads;
        long want = Math.Max(1, 2L * MultiprocessorCount / Math.Max(1, baseBlocks));
        return (int)Math.Clamp(want, 1, Math.Max(1, nk / 256));
    }

    public void DecodeAttention(DecodeShape s, FloatView qkv, FloatView kCache, FloatView vCache, FloatView output)
    {
        CheckHeadDim(s.HeadDim);
        if (s.CacheLen < 0 || s.CacheLen > s.CacheCapacity) throw new ArgumentException($"cache length {s.CacheLen} outside capacity {s.CacheCapacity}");
        int hd = s.HeadDim, nk = s.CacheLen + s.BlockLen, bh = s.Batch * s.Heads;
        int splits = DecodeSplits(s);
        int perSplit = (nk + splits - 1) / splits;
        perSplit = (perSplit + AttTile - 1) / AttTile * AttTile;
        splits = (nk + perSplit - 1) / perSplit;
        float scale = 1f / MathF.Sqrt(hd);
        int smem = (32 * hd + 2 * 32 * (hd + 1)) * 4;
        ulong pO = 0, pM = 0, pL = 0;
        if (splits > 1)
        {
            long rows = (long)splits * bh * s.BlockLen;
            pO = Scratch("decode.o", rows * hd * 4); pM = Scratch("decode.m", rows * 4); pL = Scratch("decode.l", rows * 4);
        }
        Launch(ATT, "fbd_decode_attn_f32", (Div(s.BlockLen, AttTile), (uint)splits, (uint)bh), (AttThreads, 1, 1), smem,
            Ptr(qkv), Ptr(kCache), Ptr(vCache), Ptr(output), pO, pM, pL, s.Batch, s.Heads, hd, s.BlockLen, s.CacheLen, s.CacheCapacity, perSplit, scale);
        if (splits > 1)
            Launch(ATT, "fbd_decode_combine", (Div((long)bh * s.BlockLen * 32, 256), 1, 1), (256, 1, 1), 0,
                pO, pM, pL, Ptr(output), s.Batch, s.Heads, hd, s.BlockLen, splits);
    }
}
