using System.Buffers;
using System.Collections.Concurrent;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastBlockDiff.Kernels.Cpu;

// Training backward in FlashAttention-2 form: key tiles outer (dK, dV accumulated in the tile's own buffers), query
// tiles inner, P recomputed from Q, K and the saved lse, dQ accumulated per (batch, head) in a buffer of the task.
public static partial class CpuAttention
{
    /// <summary>
    /// Per-task buffers of the backward for one (batch, head), packed once per task: QT / DOT the query tiles of
    /// scale·Q and dO transposed (tile t at t·hd·32, [c·32 + i]), Qp / DOp / Kp the rows of scale·Q, dO and K with
    /// their width padded to a multiple of 32 (zeros), DQ the unscaled dQ; ST / DPT the Pᵀ and dSᵀ of one tile pair
    /// ([j·32 + i]); DK / DV one key tile's gradients; Lse / Delta per query (+inf / 0 where a query has no gradient).
    /// </summary>
    sealed class BackwardScratch
    {
        public readonly int HeadDim, Rows, Hp;
        public readonly float[] QT, DOT, Qp, DOp, Kp, DQ, ST, DPT, DK, DV, Lse, Delta;
        public readonly int[] R = new int[Strip * 4];
        public BackwardScratch(int hd, int seqLen)
        {
            int tiles = (seqLen + QueryTile - 1) / QueryTile, rows = tiles * QueryTile;
            HeadDim = hd; Rows = rows;
            Hp = (hd + Strip - 1) / Strip * Strip;
            QT = new float[tiles * hd * Strip]; DOT = new float[tiles * hd * Strip];
            Qp = new float[rows * Hp]; DOp = new float[rows * Hp]; Kp = new float[rows * Hp]; DQ = new float[rows * Hp];
            ST = new float[KeyTile * Strip]; DPT = new float[KeyTile * Strip];
            DK = new float[KeyTile * Hp]; DV = new float[KeyTile * Hp];
            Lse = new float[rows]; Delta = new float[rows];
        }
    }

    /// <summary>
    /// Backward scratch is megabytes at long sequences; allocated per call it would feed the large-object heap and its
    /// blocking collections, so tasks rent it here and give it back (one per worker at most stays).
    /// </summary>
    static readonly ConcurrentBag<BackwardScratch> SpareBackwardScratch = [];

    /// <summary>
    /// At most one task per processor: each holds megabytes of scratch, and Parallel.For left to itself adds workers
    /// when the machine is busy, each with its own scratch (past the pool's ProcessorCount spares: large-object-heap
    /// allocations and collections in every backward).
    /// </summary>
    static readonly ParallelOptions OnePerProcessor = new() { MaxDegreeOfParallelism = Environment.ProcessorCount };

    static BackwardScratch RentBackwardScratch(int hd, int seqLen)
    {
        int rows = (seqLen + QueryTile - 1) / QueryTile * QueryTile;
        while (SpareBackwardScratch.TryTake(out var sc))
            if (sc.HeadDim == hd && sc.Rows >= rows && sc.Rows <= 2 * rows) return sc;   // others are dropped
        return new BackwardScratch(hd, seqLen);
    }

    static void ReturnBackwardScratch(BackwardScratch sc)
    {
        if (SpareBackwardScratch.Count < Environment.ProcessorCount) SpareBackwardScratch.Add(sc);
    }

    static void Backward(AttentionShape s, float[] qkv, int qkvOff, float[] o, int oOff, float[] lse, int lseOff,
        float[] dO, int dOOff, float[] dQkv, int dOff, bool? fused)
    {
        int B = s.Batch, T = s.SeqLen, H = s.Heads, hd = s.HeadDim, stride = s.QkvRowStride, D = s.ModelDim, BH = B * H;
        float scale = 1f / MathF.Sqrt(hd);

        // Delta_i = rowsum(dO_i ⊙ O_i), laid out like lse.
        var delta = ArrayPool<float>.Shared.Rent(BH * T);
        CpuBackend.ParallelRanges(B * T, (r0, r1) =>
        {
            for (int bt = r0; bt < r1; bt++)
            {
                int b = bt / T, t = bt % T;
                for (int h = 0; h < H; h++)
                    delta[(b * H + h) * T + t] = TensorPrimitives.Dot(dO.AsSpan(dOOff + bt * D + h * hd, hd), o.AsSpan(oOff + bt * D + h * hd, hd));
            }
        }, 16);

        // One task per (batch, head) when there are enough of them to keep every processor busy to the end (four per
        // processor); otherwise the key tiles of each (batch, head) are dealt round-robin to `parts` tasks, each with
        // its own dQ partial, summed afterwards.
        int nkt = (T + KeyTile - 1) / KeyTile, want = 4 * Environment.ProcessorCount;
        int parts = fused ?? BH >= want ? 1 : Math.Min(nkt, Math.Max(2, (want + BH - 1) / BH));
        int hp = (hd + Strip - 1) / Strip * Strip;
        long partsLength = (long)BH * parts * T * hp;
        if (partsLength > Array.MaxLength) throw new ArgumentException($"attention backward: {partsLength} floats of dQ partials exceed an array");
        float[]? dQParts = parts > 1 ? ArrayPool<float>.Shared.Rent((int)partsLength) : null;
        Parallel.For(0, BH * parts, OnePerProcessor, () => RentBackwardScratch(hd, T), (task, _, sc) =>
        {
            int part = task % parts, bh = task / parts, h = bh % H, b = bh / H;
            PackBackward(s, sc, b, h, scale, delta, qkv, qkvOff, lse, lseOff, dO, dOOff);
            float[] dq = dQParts ?? sc.DQ;
            int dqOff = dQParts != null ? task * T * hp : 0;
            dq.AsSpan(dqOff, T * hp).Clear();
            for (int kt = part; kt < nkt; kt += parts)
                BackwardKeyTile(s, sc, b, h, kt, qkv, qkvOff, dq, dqOff, dQkv, dOff);
            if (dQParts == null)
            {
                int qRow = dOff + b * T * stride + h * hd;
                for (int i = 0; i < T; i++)
                    TensorPrimitives.Multiply(sc.DQ.AsSpan(i * hp, hd), scale, dQkv.AsSpan(qRow + i * stride, hd));
            }
            return sc;
        }, ReturnBackwardScratch);
        if (dQParts == null)
        {
            ArrayPool<float>.Shared.Return(delta);
            return;
        }

        // dQ = scale · Σ over the parts, written into the q third of dQkv.
        CpuBackend.ParallelRanges(BH * T, (r0, r1) =>
        {
            for (int row = r0; row < r1; row++)
            {
                int bh = row / T, i = row % T, h = bh % H, b = bh / H;
                var dst = dQkv.AsSpan(dOff + (b * T + i) * stride + h * hd, hd);
                dst.Clear();
                for (int p = 0; p < parts; p++)
                    TensorPrimitives.Add(dst, dQParts.AsSpan(((bh * parts + p) * T + i) * hp, hd), dst);
                TensorPrimitives.Multiply(dst, scale, dst);
            }
        }, 16);
        ArrayPool<float>.Shared.Return(delta);
        ArrayPool<float>.Shared.Return(dQParts);
    }

    /// <summary>Fills the packed per-(batch, head) layouts of <see cref="BackwardScratch"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackBackward(AttentionShape s, BackwardScratch sc, int b, int h, float scale, float[] delta,
        float[] qkv, int qkvOff, float[] lse, int lseOff, float[] dO, int dOOff)
    {
        int T = s.SeqLen, H = s.Heads, hd = s.HeadDim, stride = s.QkvRowStride, D = s.ModelDim, hp = sc.Hp;
        int qBase = qkvOff + b * T * stride + h * hd, dOBase = dOOff + b * T * D + h * hd, lBase = lseOff + (b * H + h) * T;
        for (int q0 = 0; q0 < T; q0 += QueryTile)
        {
            int nq = Math.Min(T, q0 + QueryTile) - q0, tile = q0 / QueryTile * hd * Strip;
            if (nq < Strip)
            {
                sc.QT.AsSpan(tile, hd * Strip).Clear();
                sc.DOT.AsSpan(tile, hd * Strip).Clear();
            }
            for (int r = 0; r < nq; r++)
            {
                int i = q0 + r, qRow = qBase + i * stride, dRow = dOBase + i * D;
                for (int c = 0; c < hd; c++)
                {
                    float q = scale * qkv[qRow + c], g = dO[dRow + c];
                    sc.QT[tile + c * Strip + r] = q;
                    sc.DOT[tile + c * Strip + r] = g;
                    sc.Qp[i * hp + c] = q;
                    sc.DOp[i * hp + c] = g;
                }
                Array.Copy(qkv, qRow + D, sc.Kp, i * hp, hd);
            }
        }
        // padding queries (and rows that saw no key, lse = -inf or NaN) get lse = +inf: P = exp(s - inf) = 0
        sc.Lse.AsSpan().Fill(float.PositiveInfinity);
        sc.Delta.AsSpan().Clear();
        for (int i = 0; i < T; i++)
        {
            float l = lse[lBase + i];
            if (float.IsNegativeInfinity(l) || float.IsNaN(l)) continue;
            sc.Lse[i] = l;
            sc.Delta[i] = delta[(b * H + h) * T + i];
        }
    }

    /// <summary>
    /// dK and dV of key tile kt of (b, h) over every query tile that sees it, written to dQkv; the unscaled
    /// dQ = Σ_j dS_ij k_j of those queries accumulated into dq (rows of hp floats from dqOff).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void BackwardKeyTile(AttentionShape s, BackwardScratch sc, int b, int h, int kt, float[] qkv, int qkvOff,
        float[] dq, int dqOff, float[] dQkv, int dOff)
    {
        int T = s.SeqLen, hd = s.HeadDim, stride = s.QkvRowStride, D = s.ModelDim, hp = sc.Hp;
        int k0 = kt * KeyTile, k1 = Math.Min(T, k0 + KeyTile), nkTile = k1 - k0;
        int vBase = qkvOff + b * T * stride + h * hd + 2 * D;
        sc.DK.AsSpan(0, nkTile * hp).Clear();
        sc.DV.AsSpan(0, nkTile * hp).Clear();
        for (int q0 = 0; q0 < T; q0 += QueryTile)
        {
            int q1 = Math.Min(T, q0 + QueryTile), nq = q1 - q0;
            var kind = Bd3Mask.ClassifyTile(s.Mask, T, s.BlockSize, q0, q1, k0, k1);
            if (kind == TileKind.Empty) continue;
            int g0 = k0, g1 = k1;
            if (kind == TileKind.Partial)
            {
                for (int r = 0; r < nq; r++)
                    KeyRanges(s.Mask, T, s.BlockSize, q0 + r, out sc.R[4 * r], out sc.R[4 * r + 1], out sc.R[4 * r + 2], out sc.R[4 * r + 3]);
                if (!KeySpan(sc.R, nq, k0, k1, out g0, out g1)) continue;
            }
            int nk = g1 - g0, jo = g0 - k0, tile = q0 / QueryTile * hd * Strip;
            // Sᵀ = K·(scale·Q)ᵀ and dPᵀ = V·dOᵀ over keys [g0, g1)
            TileGemm(nk, Strip, hd, ref sc.Kp[g0 * hp], hp, 1, ref sc.QT[tile], Strip, ref sc.ST[0], Strip, accumulate: false);
            if (kind == TileKind.Partial) MaskTile(sc.ST, sc.R, nq, g0, g1);
            TileGemm(nk, Strip, hd, ref qkv[vBase + g0 * stride], stride, 1, ref sc.DOT[tile], Strip, ref sc.DPT[0], Strip, accumulate: false);
            ProbabilitiesAndScoreGradients(sc, q0, nk);
            // dV += P·dO, dK += dS·(scale·Q) (A = Pᵀ / dSᵀ rows), dQ += dSᵀ·K (A = dSᵀ read transposed)
            TileGemm(nk, hp, nq, ref sc.ST[0], Strip, 1, ref sc.DOp[q0 * hp], hp, ref sc.DV[jo * hp], hp, accumulate: true);
            TileGemm(nk, hp, nq, ref sc.DPT[0], Strip, 1, ref sc.Qp[q0 * hp], hp, ref sc.DK[jo * hp], hp, accumulate: true);
            TileGemm(nq, hp, nk, ref sc.DPT[0], 1, Strip, ref sc.Kp[g0 * hp], hp, ref dq[dqOff + q0 * hp], hp, accumulate: true);
        }
        for (int j = 0; j < nkTile; j++)
        {
            int row = dOff + (b * T + k0 + j) * stride + h * hd;
            Array.Copy(sc.DK, j * hp, dQkv, row + D, hd);
            Array.Copy(sc.DV, j * hp, dQkv, row + 2 * D, hd);
        }
    }

    /// <summary>ST ← Pᵀ = exp(Sᵀ - lse) and DPT ← dSᵀ = Pᵀ ⊙ (dPᵀ - Delta) for nk keys × the 32 queries from q0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ProbabilitiesAndScoreGradients(BackwardScratch sc, int q0, int nk)
    {
        float[] st = sc.ST, dp = sc.DPT;
        for (int j = 0; j < nk; j++)
            for (int i = 0; i < Strip; i += 8)
                (Vector256.LoadUnsafe(ref st[j * Strip + i]) - Vector256.LoadUnsafe(ref sc.Lse[q0 + i])).StoreUnsafe(ref st[j * Strip + i]);
        var p = st.AsSpan(0, nk * Strip);
        TensorPrimitives.Exp(p, p);
        for (int j = 0; j < nk; j++)
            for (int i = 0; i < Strip; i += 8)
            {
                var pv = Vector256.LoadUnsafe(ref st[j * Strip + i]);
                (pv * (Vector256.LoadUnsafe(ref dp[j * Strip + i]) - Vector256.LoadUnsafe(ref sc.Delta[q0 + i]))).StoreUnsafe(ref dp[j * Strip + i]);
            }
    }
}
