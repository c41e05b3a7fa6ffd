using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace FastBlockDiff.Kernels.Cpu;

// The small-M paths of CpuGemm (no packing of A): the batch-invariant one (RowsPath, the packed path's arithmetic)
// and the faster default one (DotPath, dot products along k, its own rounding).
public static unsafe partial class CpuGemm
{
    // ------------------------------------------------------------------ batch-invariant: the packed path's arithmetic

    /// <summary>
    /// Few rows of op(A) against slivers of NR columns of op(B), each packed as in the blocked path (transposed when
    /// B is) into a [kc][NR] buffer that stays in L1 while every row passes over it; A is read as it lies.
    /// The arithmetic of each C[i, j] is the packed path's: the same K panels (<see cref="KcStep"/>), within a panel
    /// one lane per column accumulating alpha·a[i, p]·b[p, j] over p in order from zero, the same epilogue
    /// (<see cref="Store"/>). So a row gets the same bits on either path, whatever the number of rows.
    /// </summary>
    static void RowsPath(Problem g)
    {
        int m = g.M, k = g.K;
        float[]? arr = null;
        try
        {
            bool copied = g.TransA || g.Alpha != 1f;
            fixed (float* copy = arr = copied ? ArrayPool<float>.Shared.Rent(m * k) : null)
            {
                // Rows of alpha·op(A) contiguous along k (alpha applied as the blocked path packs it): A itself, or a
                // copy when A is transposed (m ≤ SmallM then) or scaled.
                if (copied)
                {
                    for (int r = 0; r < m; r++)
                        for (int p = 0; p < k; p++) copy[r * k + p] = g.Alpha * g.A[g.TransA ? p * g.Lda + r : r * g.Lda + p];
                    g.A = copy; g.Lda = k; g.TransA = false;
                }
                int units = (g.N + g.Info.NR - 1) / g.Info.NR;
                int workers = (long)g.N * k * m >= 1 << 20 ? Math.Min(g.Threads, units) : 1;
                var gg = g;
                if (workers <= 1) RowsRange(gg, 0, units);
                else Parallel.For(0, workers, w => RowsRange(gg, (int)((long)units * w / workers), (int)((long)units * (w + 1) / workers)));
            }
        }
        finally { if (arr != null) ArrayPool<float>.Shared.Return(arr); }
    }

    /// <summary>Column slivers [u0, u1) of the small-M product; op(A) rows are contiguous (A[r*lda + p]).</summary>
    static void RowsRange(in Problem g, int u0, int u1)
    {
        int W = g.Info.NR, k = g.K, m = g.M, kcStep = KcStep(k, g.Info.KC);
        bool fused = g.Info.Kind != GemmKernel.Portable;
        float* raw = stackalloc float[kcStep * W + 16];
        float* bt = Align64(raw);
        float* tile = stackalloc float[4 * W + 16];
        tile = Align64(tile);
        float* z = stackalloc float[W];
        for (int u = u0; u < u1; u++)
        {
            int j0 = u * W, jw = Math.Min(W, g.N - j0);
            for (int pc = 0; pc < k; pc += kcStep)
            {
                int kc = Math.Min(kcStep, k - pc);
                PackSliver(g, bt, j0, pc, kc, W);
                bool first = pc == 0;
                float beta = first ? g.Beta : 1f;
                // the packed path adds the bias (or zero) to each panel's sum before C: so does this one
                for (int c = 0; c < W; c++) z[c] = first && g.Bias != null && c < jw ? g.Bias[j0 + c] : 0f;
                for (int i = 0; i < m; i += 4)
                {
                    // a missing row of the last group repeats the row before it and is dropped
                    int rows = Math.Min(4, m - i);
                    float* a0 = g.A + i * g.Lda + pc;
                    float* a1 = g.A + (i + Math.Min(1, rows - 1)) * g.Lda + pc;
                    float* a2 = g.A + (i + Math.Min(2, rows - 1)) * g.Lda + pc;
                    float* a3 = g.A + (i + Math.Min(3, rows - 1)) * g.Lda + pc;
                    g.Info.Rows(kc, a0, a1, a2, a3, bt, z, tile);
                    for (int r = 0; r < rows; r++) Store(g.C + (i + r) * g.Ldc + j0, tile + r * W, jw, beta, fused);
                }
            }
        }
    }

    // ------------------------------------------------------------------ default: dot products along k

    /// <summary>Epilogue of a row segment computed elsewhere: c = alpha·v + beta·c + bias.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Finish(float* c, float* v, int count, float alpha, float beta, float* bias)
    {
        if (beta == 0)
            for (int j = 0; j < count; j++) c[j] = alpha * v[j] + (bias != null ? bias[j] : 0f);
        else
            for (int j = 0; j < count; j++) c[j] = alpha * v[j] + beta * c[j] + (bias != null ? bias[j] : 0f);
    }

    static void DotPath(Problem g)
    {
        int m = g.M, k = g.K;
        float[]? arr = null;
        try
        {
            fixed (float* copy = arr = g.TransA ? ArrayPool<float>.Shared.Rent(m * k) : null)
            {
                // Rows of op(A) contiguous along k: A itself, or a copy when A is transposed (m ≤ SmallM then).
                if (g.TransA)
                {
                    for (int r = 0; r < m; r++)
                        for (int p = 0; p < k; p++) copy[r * k + p] = g.A[p * g.Lda + r];
                    g.A = copy; g.Lda = k; g.TransA = false;
                }
                int chunk = g.TransB ? 16 : 64;
                int units = (g.N + chunk - 1) / chunk;
                int workers = (long)g.N * k * m >= 1 << 20 ? Math.Min(g.Threads, units) : 1;
                var gg = g;
                if (workers <= 1) DotRange(gg, chunk, 0, units);
                else Parallel.For(0, workers, w => DotRange(gg, chunk, (int)((long)units * w / workers), (int)((long)units * (w + 1) / workers)));
            }
        }
        finally { if (arr != null) ArrayPool<float>.Shared.Return(arr); }
    }

    /// <summary>Column chunks [u0, u1) of the small-M product; op(A) rows are contiguous (A[r*lda + p]).</summary>
    static void DotRange(in Problem g, int chunk, int u0, int u1)
    {
        float* t = stackalloc float[64];
        int k = g.K, m = g.M, vw = Vector<float>.Count;
        bool wide = g.Info.Kind == GemmKernel.Avx512;
        for (int u = u0; u < u1; u++)
        {
            int j0 = u * chunk, j1 = Math.Min(g.N, j0 + chunk);
            if (g.TransB)
            {
                // C[i, j] = Σ_p A[i, p]·B[j, p]: 4×4 tiles of dot products, vectorised along k. Missing rows or
                // columns of an edge tile repeat the last valid one and are dropped.
                // A unit's 16 rows of B (16 KiB at k = 256) stay in L1 while 4 rows of A at a time pass over them.
                for (int i = 0; i < m; i += 4)
                {
                    int nr = Math.Min(4, m - i);
                    float* a0 = g.A + i * g.Lda;
                    float* a1 = g.A + (i + Math.Min(1, nr - 1)) * g.Lda;
                    float* a2 = g.A + (i + Math.Min(2, nr - 1)) * g.Lda;
                    float* a3 = g.A + (i + Math.Min(3, nr - 1)) * g.Lda;
                    for (int j = j0; j < j1; j += 4)
                    {
                        int nc = Math.Min(4, j1 - j);
                        float* b0 = g.B + j * g.Ldb;
                        float* b1 = g.B + (j + Math.Min(1, nc - 1)) * g.Ldb;
                        float* b2 = g.B + (j + Math.Min(2, nc - 1)) * g.Ldb;
                        float* b3 = g.B + (j + Math.Min(3, nc - 1)) * g.Ldb;
                        if (wide) Dot4x4_512(a0, a1, a2, a3, b0, b1, b2, b3, k, t);
                        else Dot4x4_256(a0, a1, a2, a3, b0, b1, b2, b3, k, t);
                        for (int r = 0; r < nr; r++)
                            Finish(g.C + (i + r) * g.Ldc + j, t + r * 4, nc, g.Alpha, g.Beta, g.Bias == null ? null : g.Bias + j);
                    }
                }
                continue;
            }
            // C[i, :] = Σ_p A[i, p]·B[p, :]: stream rows of B, vectorised along n (m ≤ SmallM rows).
            for (int r = 0; r < m; r++)
            {
                float* ar = g.A + r * g.Lda;
                int j = j0;
                for (; j + 4 * vw <= j1; j += 4 * vw)
                {
                    Vector<float> s0 = default, s1 = default, s2 = default, s3 = default;
                    float* bp = g.B + j;
                    for (int p = 0; p < k; p++, bp += g.Ldb)
                    {
                        var av = new Vector<float>(ar[p]);
                        s0 += av * Unsafe.ReadUnaligned<Vector<float>>(bp);
                        s1 += av * Unsafe.ReadUnaligned<Vector<float>>(bp + vw);
                        s2 += av * Unsafe.ReadUnaligned<Vector<float>>(bp + 2 * vw);
                        s3 += av * Unsafe.ReadUnaligned<Vector<float>>(bp + 3 * vw);
                    }
                    Unsafe.WriteUnaligned(t + (j - j0), s0);
                    Unsafe.WriteUnaligned(t + (j - j0) + vw, s1);
                    Unsafe.WriteUnaligned(t + (j - j0) + 2 * vw, s2);
                    Unsafe.WriteUnaligned(t + (j - j0) + 3 * vw, s3);
                }
                for (; j + vw <= j1; j += vw)
                {
                    Vector<float> s0 = default;
                    float* bp = g.B + j;
                    for (int p = 0; p < k; p++, bp += g.Ldb) s0 += new Vector<float>(ar[p]) * Unsafe.ReadUnaligned<Vector<float>>(bp);
                    Unsafe.WriteUnaligned(t + (j - j0), s0);
                }
                for (; j < j1; j++)
                {
                    float s = 0; float* bp = g.B + j;
                    for (int p = 0; p < k; p++, bp += g.Ldb) s += ar[p] * *bp;
                    t[j - j0] = s;
                }
                Finish(g.C + r * g.Ldc + j0, t, j1 - j0, g.Alpha, g.Beta, g.Bias == null ? null : g.Bias + j0);
            }
        }
    }
}
