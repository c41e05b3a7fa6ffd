using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastBlockDiff.Kernels.Cpu;

// Training/prefill forward: one task per (batch, head, query tile), the tile products by TileGemm in a transposed
// layout (queries along the vector lanes), so the online-softmax statistics are per-lane vector operations.
public static partial class CpuAttention
{
    /// <summary>
    /// Per-task buffers of the forward, the query tile held transposed: QT[c·32 + i] = scale·q_i[c],
    /// OT[c·32 + i] the unnormalised output, ST[j·32 + i] the scores (then probabilities) of key j.
    /// </summary>
    sealed class ForwardScratch(int hd)
    {
        public readonly float[] QT = new float[hd * Strip], OT = new float[hd * Strip], ST = new float[KeyTile * Strip];
        public readonly float[] M = new float[Strip], L = new float[Strip], Shift = new float[Strip], Corr = new float[Strip];
        public readonly int[] R = new int[Strip * 4];
    }

    static void Forward(AttentionShape s, float[] qkv, int qkvOff, float[] output, int outOff, float[] lse, int lseOff)
    {
        int T = s.SeqLen, H = s.Heads, hd = s.HeadDim, BH = s.Batch * H;
        int nqt = (T + QueryTile - 1) / QueryTile;
        float scale = 1f / MathF.Sqrt(hd);
        int[] order = HeaviestQueryTilesFirst(s, nqt);
        Parallel.For(0, BH * nqt, OnePerProcessor, () => new ForwardScratch(hd), (task, _, sc) =>
        {
            int bh = task % BH;
            ForwardQueryTile(s, sc, bh / H, bh % H, order[task / BH], scale, qkv, qkvOff, output, outOff, lse, lseOff);
            return sc;
        }, _ => { });
    }

    /// <summary>Output rows and lse of query tile qt of (b, h).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ForwardQueryTile(AttentionShape s, ForwardScratch sc, int b, int h, int qt, float scale,
        float[] qkv, int qkvOff, float[] output, int outOff, float[] lse, int lseOff)
    {
        int T = s.SeqLen, H = s.Heads, hd = s.HeadDim, stride = s.QkvRowStride, D = s.ModelDim;
        int q0 = qt * QueryTile, q1 = Math.Min(T, q0 + QueryTile), nq = q1 - q0;
        int qBase = qkvOff + b * T * stride + h * hd, kBase = qBase + D, vBase = qBase + 2 * D;
        LoadQueriesTransposed(qkv, qBase, stride, q0, nq, hd, scale, sc.QT);
        sc.OT.AsSpan().Clear();
        sc.M.AsSpan().Fill(float.NegativeInfinity);
        sc.L.AsSpan().Clear();
        for (int r = 0; r < nq; r++)
            KeyRanges(s.Mask, T, s.BlockSize, q0 + r, out sc.R[4 * r], out sc.R[4 * r + 1], out sc.R[4 * r + 2], out sc.R[4 * r + 3]);
        for (int k0 = 0; k0 < T; k0 += KeyTile)
        {
            int k1 = Math.Min(T, k0 + KeyTile);
            var kind = Bd3Mask.ClassifyTile(s.Mask, T, s.BlockSize, q0, q1, k0, k1);
            if (kind == TileKind.Empty) continue;
            int g0 = k0, g1 = k1;
            if (kind == TileKind.Partial && !KeySpan(sc.R, nq, k0, k1, out g0, out g1)) continue;
            int nk = g1 - g0;
            // Sᵀ = K·(scale·Q)ᵀ over the keys [g0, g1), the keys read straight from qkv
            TileGemm(nk, Strip, hd, ref qkv[kBase + g0 * stride], stride, 1, ref sc.QT[0], Strip, ref sc.ST[0], Strip, accumulate: false);
            if (kind == TileKind.Partial) MaskTile(sc.ST, sc.R, nq, g0, g1);
            SoftmaxStepColumns(sc, nk, hd);
            // Oᵀ += Vᵀ·Pᵀ: A(c, j) = v_j[c]
            TileGemm(hd, Strip, nk, ref qkv[vBase + g0 * stride], 1, stride, ref sc.ST[0], Strip, ref sc.OT[0], Strip, accumulate: true);
        }
        int oBase = outOff + b * T * D + h * hd, lBase = lseOff + (b * H + h) * T;
        for (int r = 0; r < nq; r++)
        {
            float l = sc.L[r];
            float inv = l > 0 ? 1f / l : 0f;   // rows that saw no key get 0 and lse = -inf
            int dst = oBase + (q0 + r) * D;
            for (int c = 0; c < hd; c++) output[dst + c] = sc.OT[c * Strip + r] * inv;
            lse[lBase + q0 + r] = l > 0 ? sc.M[r] + MathF.Log(l) : float.NegativeInfinity;
        }
    }

    /// <summary>Query tiles ordered by descending number of non-empty key tiles, so the longest tasks start first.</summary>
    static int[] HeaviestQueryTilesFirst(AttentionShape s, int nqt)
    {
        int T = s.SeqLen;
        var work = new int[nqt];
        for (int qt = 0; qt < nqt; qt++)
        {
            int q0 = qt * QueryTile, q1 = Math.Min(T, q0 + QueryTile);
            for (int k0 = 0; k0 < T; k0 += KeyTile)
                if (Bd3Mask.ClassifyTile(s.Mask, T, s.BlockSize, q0, q1, k0, Math.Min(T, k0 + KeyTile)) != TileKind.Empty) work[qt]++;
        }
        var order = new int[nqt];
        for (int i = 0; i < nqt; i++) order[i] = i;
        Array.Sort(order, (x, y) => work[y] != work[x] ? work[y].CompareTo(work[x]) : x.CompareTo(y));
        return order;
    }

    /// <summary>dst[c·32 + r] = alpha·src[row q0+r][c] for r &lt; nq, 0 for the padding rows nq ≤ r &lt; 32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void LoadQueriesTransposed(float[] src, int baseOff, int rowStride, int q0, int nq, int hd, float alpha, float[] dst)
    {
        if (nq < Strip) dst.AsSpan(0, hd * Strip).Clear();
        for (int r = 0; r < nq; r++)
        {
            int row = baseOff + (q0 + r) * rowStride;
            for (int c = 0; c < hd; c++) dst[c * Strip + r] = alpha * src[row + c];
        }
    }

    /// <summary>Smallest key span [g0, g1) inside [k0, k1) holding every row's allowed keys; false if none.</summary>
    static bool KeySpan(int[] R, int nq, int k0, int k1, out int g0, out int g1)
    {
        g0 = k1; g1 = k0;
        for (int r = 0; r < nq; r++)
        {
            for (int p = 0; p < 4; p += 2)
            {
                int lo = Math.Max(R[4 * r + p], k0), hi = Math.Min(R[4 * r + p + 1], k1);
                if (hi > lo) { g0 = Math.Min(g0, lo); g1 = Math.Max(g1, hi); }
            }
        }
        return g1 > g0;
    }

    /// <summary>
    /// Sets the scores of disallowed pairs of a Partial tile to -inf: st[(j-g0)·32 + r] for keys j in [g0, g1) outside
    /// query row r's two allowed ranges (from <see cref="KeyRanges"/>, held in R).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void MaskTile(float[] st, int[] R, int nq, int g0, int g1)
    {
        for (int r = 0; r < nq; r++)
        {
            int a0 = R[4 * r], a1 = R[4 * r + 1], b0 = R[4 * r + 2], b1 = R[4 * r + 3];
            for (int j = g0; j < g1; j++)
                if (!(j >= a0 && j < a1 || j >= b0 && j < b1)) st[(j - g0) * Strip + r] = float.NegativeInfinity;
        }
    }

    /// <summary>
    /// The online-softmax step of the 32 query columns over nk new keys: ST becomes exp(s - m_new) in place, the
    /// running OT and l are rescaled by exp(m_old - m_new). A column with no allowed key so far shifts by 0 instead of
    /// -inf, so its probabilities are exp(-inf) = 0 and nothing turns NaN.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SoftmaxStepColumns(ForwardScratch sc, int nk, int hd)
    {
        float[] st = sc.ST;
        sc.Shift.AsSpan().Fill(float.NegativeInfinity);
        for (int j = 0; j < nk; j++)
            for (int i = 0; i < Strip; i += 8)
                Vector256.Max(Vector256.LoadUnsafe(ref sc.Shift[i]), Vector256.LoadUnsafe(ref st[j * Strip + i])).StoreUnsafe(ref sc.Shift[i]);
        bool rescale = false;
        for (int i = 0; i < Strip; i++)
        {
            float mOld = sc.M[i], mNew = Math.Max(mOld, sc.Shift[i]);
            float shift = float.IsNegativeInfinity(mNew) ? 0f : mNew;
            sc.Corr[i] = MathF.Exp(mOld - shift);
            rescale |= sc.Corr[i] != 1f;
            sc.M[i] = mNew;
            sc.Shift[i] = shift;
        }
        for (int j = 0; j < nk; j++)
            for (int i = 0; i < Strip; i += 8)
                (Vector256.LoadUnsafe(ref st[j * Strip + i]) - Vector256.LoadUnsafe(ref sc.Shift[i])).StoreUnsafe(ref st[j * Strip + i]);
        var p = st.AsSpan(0, nk * Strip);
        TensorPrimitives.Exp(p, p);
        for (int i = 0; i < Strip; i += 8)
        {
            var sum = Vector256<float>.Zero;
            for (int j = 0; j < nk; j++) sum += Vector256.LoadUnsafe(ref st[j * Strip + i]);
            (Vector256.LoadUnsafe(ref sc.L[i]) * Vector256.LoadUnsafe(ref sc.Corr[i]) + sum).StoreUnsafe(ref sc.L[i]);
        }
        if (rescale) ScaleColumns(sc.OT, hd, sc.Corr);   // no row maximum grew: O stays as it is
    }

    /// <summary>x[c·32 + i] *= f[i] for c &lt; rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ScaleColumns(float[] x, int rows, float[] f)
    {
        var f0 = Vector256.LoadUnsafe(ref f[0]); var f1 = Vector256.LoadUnsafe(ref f[8]);
        var f2 = Vector256.LoadUnsafe(ref f[16]); var f3 = Vector256.LoadUnsafe(ref f[24]);
        for (int c = 0; c < rows; c++)
        {
            ref float row = ref x[c * Strip];
            (Vector256.LoadUnsafe(ref row) * f0).StoreUnsafe(ref row);
            (Vector256.LoadUnsafe(ref row, 8) * f1).StoreUnsafe(ref row, 8);
            (Vector256.LoadUnsafe(ref row, 16) * f2).StoreUnsafe(ref row, 16);
            (Vector256.LoadUnsafe(ref row, 24) * f3).StoreUnsafe(ref row, 24);
        }
    }
}
