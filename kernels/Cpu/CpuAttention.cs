using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace FastBlockDiff.Kernels.Cpu;

/// <summary>
/// Tiled online-softmax attention (FlashAttention-2 style) for the CPU backend, fp32. Work is split over
/// (batch, head, tile); every query tile × key tile is classified with <see cref="Bd3Mask.ClassifyTile"/>: Empty
/// tiles are skipped, Full tiles run without masking, and Partial tiles (the masked diagonals) are cut to the key
/// span their rows can see, with the other pairs of that span set to -inf from each row's ranges
/// (<see cref="KeyRanges"/>, at most two contiguous ranges for every mask kind). The tile products of the training
/// forward and backward are register-tiled GEMM micro-kernels (CpuAttention.TileGemm.cs) over a transposed layout
/// with the 32 queries of a tile along the vector lanes (CpuAttention.Forward.cs, CpuAttention.Backward.cs); the
/// block decode below keeps row-major 4-row kernels.
/// </summary>
public static partial class CpuAttention
{
    /// <summary>Query rows per task (the register tile width of <see cref="TileGemm"/>, 32).</summary>
    public const int QueryTile = Strip;
    /// <summary>Keys per gathered K/V tile.</summary>
    public const int KeyTile = 64;

    /// <summary>
    /// The keys query <paramref name="i"/> may attend, as two half-open ranges [a0, a1) and [b0, b1) (either may be
    /// empty: end ≤ start), ascending and disjoint. Agrees with <see cref="Bd3Mask.Allowed"/> for every pair.
    /// </summary>
    public static void KeyRanges(MaskKind kind, int seqLen, int blockSize, int i, out int a0, out int a1, out int b0, out int b1)
    {
        b0 = b1 = 0;
        a0 = 0;
        switch (kind)
        {
            case MaskKind.Full: a1 = seqLen; return;
            case MaskKind.Causal: a1 = i + 1; return;
            case MaskKind.BlockCausal: a1 = Math.Min(seqLen, (i / blockSize + 1) * blockSize); return;
            default:
                int l = seqLen / 2;
                if (i < l)
                {
                    int blk = i / blockSize;
                    a0 = blk * blockSize; a1 = a0 + blockSize;   // own noisy block, bidirectional
                    b0 = l; b1 = l + blk * blockSize;             // clean blocks strictly before
                }
                else
                {
                    int blk = (i - l) / blockSize;
                    a0 = l; a1 = l + (blk + 1) * blockSize;       // clean blocks up to and including its own
                }
                return;
        }
    }

    sealed class Scratch
    {
        public readonly float[] Q, O, K, V, S, S2, M, L, KT, S4;
        public readonly int[] R;
        public Scratch(int hd)
        {
            Q = new float[QueryTile * hd]; O = new float[QueryTile * hd];
            K = new float[KeyTile * hd]; V = new float[KeyTile * hd];
            KT = new float[hd * KeyTile]; S4 = new float[4 * KeyTile];
            S2 = new float[KeyTile];
            S = new float[KeyTile + 1]; // +1: a slice may start at n1 = KeyTile with n2 = 0
            M = new float[QueryTile]; L = new float[QueryTile];
            R = new int[QueryTile * 4];
        }
    }

    static void RequireView(FloatView v, long need, string name)
    {
        if (v.Length < need) throw new ArgumentException($"{name}: view of {v.Length} floats, attention needs {need}");
    }

    // ------------------------------------------------------------------ forward

    /// <summary>Forward over views of the CPU backend. See <see cref="IBackend.AttentionForward"/>.</summary>
    public static void Forward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse)
    {
        shape.Validate();
        long bt = (long)shape.Batch * shape.SeqLen;
        RequireView(qkv, bt * shape.QkvRowStride, nameof(qkv));
        RequireView(output, bt * shape.ModelDim, nameof(output));
        RequireView(lse, bt * shape.Heads, nameof(lse));
        Forward(shape, CpuBackend.Storage(qkv), qkv.Offset, CpuBackend.Storage(output), output.Offset, CpuBackend.Storage(lse), lse.Offset);
    }

    static void LoadQueries(Scratch sc, float[] qkv, int qBase, int stride, int q0, int nq, int hd, float scale)
    {
        for (int r = 0; r < nq; r++)
            TensorPrimitives.Multiply(qkv.AsSpan(qBase + (q0 + r) * stride, hd), scale, sc.Q.AsSpan(r * hd, hd));
        sc.O.AsSpan(0, nq * hd).Clear();
        sc.M.AsSpan(0, nq).Fill(float.NegativeInfinity);
        sc.L.AsSpan(0, nq).Clear();
    }

    static void Gather(float[] src, int baseOff, int stride, int j0, int j1, int hd, float[] dst)
    {
        for (int j = j0; j < j1; j++) Array.Copy(src, baseOff + j * stride, dst, (j - j0) * hd, hd);
    }

    /// <summary>Online-softmax step of query row r over gathered keys [a0, a0+n1) ∪ [b0, b0+n2).</summary>
    static void OnlineUpdate(Scratch sc, int r, int hd, int a0, int n1, int b0, int n2)
    {
        ref float q = ref sc.Q[r * hd];
        ref float s0 = ref sc.S[0];
        Dots(ref q, ref sc.K[0], a0, n1, hd, ref s0);
        Dots(ref q, ref sc.K[0], b0, n2, hd, ref Unsafe.Add(ref s0, n1));
        SoftmaxStep(sc, r, hd, sc.S.AsSpan(0, n1 + n2));
        ref float or = ref sc.O[r * hd];
        AccumulateRows(ref or, ref sc.V[0], a0, n1, hd, ref s0);
        AccumulateRows(ref or, ref sc.V[0], b0, n2, hd, ref Unsafe.Add(ref s0, n1));
    }

    /// <summary>
    /// Every row of the query tile against all n gathered keys (a Full tile), as small GEMMs: four query rows at a
    /// time, the scores Q·Kᵀ by a 4×16 register tile over the transposed keys, then P·V by a 4-row tile that shares
    /// each value load; a remaining pair and row go through the two-row and one-row kernels.
    /// </summary>
    static void UpdateAllRows(Scratch sc, int nq, int hd, int n)
    {
        int r = 0;
        if (Vector256.IsHardwareAccelerated && hd % 8 == 0)
        {
            if (nq >= 4)
            {
                for (int j = 0; j < n; j++)
                    for (int c = 0; c < hd; c++) sc.KT[c * KeyTile + j] = sc.K[j * hd + c];
            }
            for (; r + 4 <= nq; r += 4)
            {
                Scores4(ref sc.Q[r * hd], hd, ref sc.KT[0], n, ref sc.S4[0]);
                for (int i = 0; i < 4; i++) SoftmaxStep(sc, r + i, hd, sc.S4.AsSpan(i * KeyTile, n));
                AccumulateRows4(ref sc.O[r * hd], ref sc.V[0], n, hd, ref sc.S4[0]);
            }
            for (; r + 1 < nq; r += 2)
            {
                Dots2(ref sc.Q[r * hd], ref sc.Q[(r + 1) * hd], ref sc.K[0], n, hd, ref sc.S[0], ref sc.S2[0]);
                SoftmaxStep(sc, r, hd, sc.S.AsSpan(0, n));
                SoftmaxStep(sc, r + 1, hd, sc.S2.AsSpan(0, n));
                AccumulateRows2(ref sc.O[r * hd], ref sc.O[(r + 1) * hd], ref sc.V[0], n, hd, ref sc.S[0], ref sc.S2[0]);
            }
        }
        for (; r < nq; r++) OnlineUpdate(sc, r, hd, 0, n, 0, 0);
    }

    /// <summary>Turns row r's new scores s into exp(s - m_new) in place and rescales its running O and l.</summary>
    static void SoftmaxStep(Scratch sc, int r, int hd, Span<float> s)
    {
        float mOld = sc.M[r], mNew = Math.Max(mOld, TensorPrimitives.Max(s));
        TensorPrimitives.Subtract(s, mNew, s);
        TensorPrimitives.Exp(s, s);
        float sum = TensorPrimitives.Sum(s);
        if (mNew > mOld)
        {
            float corr = MathF.Exp(mOld - mNew); // 0 for the first keys of a row (mOld = -inf)
            sc.L[r] *= corr;
            var o = sc.O.AsSpan(r * hd, hd);
            TensorPrimitives.Multiply(o, corr, o);
        }
        sc.L[r] += sum;
        sc.M[r] = mNew;
    }

    /// <summary>Writes O/l and lse = m + log l; rows that saw no key get 0 and -inf.</summary>
    static void Finish(Scratch sc, int nq, int hd, float[] output, int outRow0, int outStride, float[]? lse, int lse0)
    {
        for (int r = 0; r < nq; r++)
        {
            var dst = output.AsSpan(outRow0 + r * outStride, hd);
            float l = sc.L[r];
            if (l > 0)
            {
                TensorPrimitives.Multiply(sc.O.AsSpan(r * hd, hd), 1f / l, dst);
                if (lse != null) lse[lse0 + r] = sc.M[r] + MathF.Log(l);
            }
            else
            {
                dst.Clear();
                if (lse != null) lse[lse0 + r] = float.NegativeInfinity;
            }
        }
    }

    // ------------------------------------------------------------------ SIMD micro-kernels

    /// <summary>dst[t] = x · rows[start+t] for t &lt; count; rows are contiguous, hd floats each.</summary>
    static void Dots(ref float x, ref float rows, int start, int count, int hd, ref float dst)
    {
        if (count <= 0) return;
        int t = 0;
        if (Vector256.IsHardwareAccelerated && hd % 8 == 0)
        {
            for (; t + 4 <= count; t += 4)
            {
                ref float r0 = ref Unsafe.Add(ref rows, (start + t) * hd);
                ref float r1 = ref Unsafe.Add(ref r0, hd);
                ref float r2 = ref Unsafe.Add(ref r1, hd);
                ref float r3 = ref Unsafe.Add(ref r2, hd);
                Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
                for (int c = 0; c < hd; c += 8)
                {
                    var xv = Vector256.LoadUnsafe(ref x, (nuint)c);
                    c0 = Vector256.MultiplyAddEstimate(xv, Vector256.LoadUnsafe(ref r0, (nuint)c), c0);
                    c1 = Vector256.MultiplyAddEstimate(xv, Vector256.LoadUnsafe(ref r1, (nuint)c), c1);
                    c2 = Vector256.MultiplyAddEstimate(xv, Vector256.LoadUnsafe(ref r2, (nuint)c), c2);
                    c3 = Vector256.MultiplyAddEstimate(xv, Vector256.LoadUnsafe(ref r3, (nuint)c), c3);
                }
                Unsafe.Add(ref dst, t) = Vector256.Sum(c0);
                Unsafe.Add(ref dst, t + 1) = Vector256.Sum(c1);
                Unsafe.Add(ref dst, t + 2) = Vector256.Sum(c2);
                Unsafe.Add(ref dst, t + 3) = Vector256.Sum(c3);
            }
            for (; t < count; t++)
            {
                ref float r0 = ref Unsafe.Add(ref rows, (start + t) * hd);
                Vector256<float> c0 = default;
                for (int c = 0; c < hd; c += 8)
                    c0 = Vector256.MultiplyAddEstimate(Vector256.LoadUnsafe(ref x, (nuint)c), Vector256.LoadUnsafe(ref r0, (nuint)c), c0);
                Unsafe.Add(ref dst, t) = Vector256.Sum(c0);
            }
            return;
        }
        var xs = MemoryMarshal.CreateReadOnlySpan(ref x, hd);
        for (; t < count; t++)
            Unsafe.Add(ref dst, t) = TensorPrimitives.Dot(xs, MemoryMarshal.CreateReadOnlySpan(ref Unsafe.Add(ref rows, (start + t) * hd), hd));
    }

    /// <summary>acc[c] += Σ_t w[t]·rows[start+t][c] over t &lt; count.</summary>
    static void AccumulateRows(ref float acc, ref float rows, int start, int count, int hd, ref float w)
    {
        if (count <= 0) return;
        ref float r0 = ref Unsafe.Add(ref rows, start * hd);
        if (Vector256.IsHardwareAccelerated && hd % 8 == 0)
        {
            int c = 0;
            for (; c + 32 <= hd; c += 32)
            {
                // four accumulators share each broadcast weight: 5 loads per 4 FMAs
                var a0 = Vector256.LoadUnsafe(ref acc, (nuint)c);
                var a1 = Vector256.LoadUnsafe(ref acc, (nuint)(c + 8));
                var a2 = Vector256.LoadUnsafe(ref acc, (nuint)(c + 16));
                var a3 = Vector256.LoadUnsafe(ref acc, (nuint)(c + 24));
                for (int t = 0; t < count; t++)
                {
                    var wv = Vector256.Create(Unsafe.Add(ref w, t));
                    ref float rt = ref Unsafe.Add(ref r0, t * hd + c);
                    a0 = Vector256.MultiplyAddEstimate(wv, Vector256.LoadUnsafe(ref rt), a0);
                    a1 = Vector256.MultiplyAddEstimate(wv, Vector256.LoadUnsafe(ref rt, 8), a1);
                    a2 = Vector256.MultiplyAddEstimate(wv, Vector256.LoadUnsafe(ref rt, 16), a2);
                    a3 = Vector256.MultiplyAddEstimate(wv, Vector256.LoadUnsafe(ref rt, 24), a3);
                }
                a0.StoreUnsafe(ref acc, (nuint)c);
                a1.StoreUnsafe(ref acc, (nuint)(c + 8));
                a2.StoreUnsafe(ref acc, (nuint)(c + 16));
                a3.StoreUnsafe(ref acc, (nuint)(c + 24));
            }
            for (; c + 16 <= hd; c += 16)
            {
                var a0 = Vector256.LoadUnsafe(ref acc, (nuint)c);
                var a1 = Vector256.LoadUnsafe(ref acc, (nuint)(c + 8));
                for (int t = 0; t < count; t++)
                {
                    var wv = Vector256.Create(Unsafe.Add(ref w, t));
                    ref float rt = ref Unsafe.Add(ref r0, t * hd + c);
                    a0 = Vector256.MultiplyAddEstimate(wv, Vector256.LoadUnsafe(ref rt), a0);
                    a1 = Vector256.MultiplyAddEstimate(wv, Vector256.LoadUnsafe(ref rt, 8), a1);
                }
                a0.StoreUnsafe(ref acc, (nuint)c);
                a1.StoreUnsafe(ref acc, (nuint)(c + 8));
            }
            if (c < hd)
            {
                var a0 = Vector256.LoadUnsafe(ref acc, (nuint)c);
                for (int t = 0; t < count; t++)
                    a0 = Vector256.MultiplyAddEstimate(Vector256.Create(Unsafe.Add(ref w, t)), Vector256.LoadUnsafe(ref Unsafe.Add(ref r0, t * hd + c)), a0);
                a0.StoreUnsafe(ref acc, (nuint)c);
            }
            return;
        }
        var a = MemoryMarshal.CreateSpan(ref acc, hd);
        for (int t = 0; t < count; t++)
            TensorPrimitives.MultiplyAdd(MemoryMarshal.CreateReadOnlySpan(ref Unsafe.Add(ref r0, t * hd), hd), Unsafe.Add(ref w, t), a, a);
    }

    /// <summary>d0[t] = x0 · rows[t], d1[t] = x1 · rows[t] for t &lt; count (two query rows share each key load). hd % 8 == 0.</summary>
    static void Dots2(ref float x0, ref float x1, ref float rows, int count, int hd, ref float d0, ref float d1)
    {
        int t = 0;
        for (; t + 4 <= count; t += 4)
        {
            ref float r0 = ref Unsafe.Add(ref rows, t * hd);
            ref float r1 = ref Unsafe.Add(ref r0, hd);
            ref float r2 = ref Unsafe.Add(ref r1, hd);
            ref float r3 = ref Unsafe.Add(ref r2, hd);
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
            for (int c = 0; c < hd; c += 8)
            {
                var u = Vector256.LoadUnsafe(ref x0, (nuint)c);
                var v = Vector256.LoadUnsafe(ref x1, (nuint)c);
                var k = Vector256.LoadUnsafe(ref r0, (nuint)c);
                a0 = Vector256.MultiplyAddEstimate(u, k, a0); b0 = Vector256.MultiplyAddEstimate(v, k, b0);
                k = Vector256.LoadUnsafe(ref r1, (nuint)c);
                a1 = Vector256.MultiplyAddEstimate(u, k, a1); b1 = Vector256.MultiplyAddEstimate(v, k, b1);
                k = Vector256.LoadUnsafe(ref r2, (nuint)c);
                a2 = Vector256.MultiplyAddEstimate(u, k, a2); b2 = Vector256.MultiplyAddEstimate(v, k, b2);
                k = Vector256.LoadUnsafe(ref r3, (nuint)c);
                a3 = Vector256.MultiplyAddEstimate(u, k, a3); b3 = Vector256.MultiplyAddEstimate(v, k, b3);
            }
            Unsafe.Add(ref d0, t) = Vector256.Sum(a0); Unsafe.Add(ref d1, t) = Vector256.Sum(b0);
            Unsafe.Add(ref d0, t + 1) = Vector256.Sum(a1); Unsafe.Add(ref d1, t + 1) = Vector256.Sum(b1);
            Unsafe.Add(ref d0, t + 2) = Vector256.Sum(a2); Unsafe.Add(ref d1, t + 2) = Vector256.Sum(b2);
            Unsafe.Add(ref d0, t + 3) = Vector256.Sum(a3); Unsafe.Add(ref d1, t + 3) = Vector256.Sum(b3);
        }
        for (; t < count; t++)
        {
            ref float r0 = ref Unsafe.Add(ref rows, t * hd);
            Vector256<float> a0 = default, b0 = default;
            for (int c = 0; c < hd; c += 8)
            {
                var k = Vector256.LoadUnsafe(ref r0, (nuint)c);
                a0 = Vector256.MultiplyAddEstimate(Vector256.LoadUnsafe(ref x0, (nuint)c), k, a0);
                b0 = Vector256.MultiplyAddEstimate(Vector256.LoadUnsafe(ref x1, (nuint)c), k, b0);
            }
            Unsafe.Add(ref d0, t) = Vector256.Sum(a0);
            Unsafe.Add(ref d1, t) = Vector256.Sum(b0);
        }
    }

    /// <summary>acc0 += Σ_t w0[t]·rows[t], acc1 += Σ_t w1[t]·rows[t] (two rows share each key load). hd % 8 == 0.</summary>
    static void AccumulateRows2(ref float acc0, ref float acc1, ref float rows, int count, int hd, ref float w0, ref float w1)
    {
        int c = 0;
        for (; c + 16 <= hd; c += 16)
        {
            var a0 = Vector256.LoadUnsafe(ref acc0, (nuint)c);
            var a1 = Vector256.LoadUnsafe(ref acc0, (nuint)(c + 8));
            var b0 = Vector256.LoadUnsafe(ref acc1, (nuint)c);
            var b1 = Vector256.LoadUnsafe(ref acc1, (nuint)(c + 8));
            for (int t = 0; t < count; t++)
            {
                var u = Vector256.Create(Unsafe.Add(ref w0, t));
                var v = Vector256.Create(Unsafe.Add(ref w1, t));
                ref float rt = ref Unsafe.Add(ref rows, t * hd + c);
                var k0 = Vector256.LoadUnsafe(ref rt);
                var k1 = Vector256.LoadUnsafe(ref rt, 8);
                a0 = Vector256.MultiplyAddEstimate(u, k0, a0); b0 = Vector256.MultiplyAddEstimate(v, k0, b0);
                a1 = Vector256.MultiplyAddEstimate(u, k1, a1); b1 = Vector256.MultiplyAddEstimate(v, k1, b1);
            }
            a0.StoreUnsafe(ref acc0, (nuint)c); a1.StoreUnsafe(ref acc0, (nuint)(c + 8));
            b0.StoreUnsafe(ref acc1, (nuint)c); b1.StoreUnsafe(ref acc1, (nuint)(c + 8));
        }
        if (c < hd)
        {
            var a0 = Vector256.LoadUnsafe(ref acc0, (nuint)c);
            var b0 = Vector256.LoadUnsafe(ref acc1, (nuint)c);
            for (int t = 0; t < count; t++)
            {
                var k0 = Vector256.LoadUnsafe(ref Unsafe.Add(ref rows, t * hd + c));
                a0 = Vector256.MultiplyAddEstimate(Vector256.Create(Unsafe.Add(ref w0, t)), k0, a0);
                b0 = Vector256.MultiplyAddEstimate(Vector256.Create(Unsafe.Add(ref w1, t)), k0, b0);
            }
            a0.StoreUnsafe(ref acc0, (nuint)c); b0.StoreUnsafe(ref acc1, (nuint)c);
        }
    }

    /// <summary>
    /// s[i·KeyTile + j] = q_i · k_j for the four query rows q_i (contiguous, hd floats each) and keys j &lt; n, the keys
    /// transposed: kt[c·KeyTile + j]. A 4×16 register tile: per c, two key loads and four broadcasts feed eight FMAs.
    /// </summary>
    static void Scores4(ref float q, int hd, ref float kt, int n, ref float s)
    {
        ref float q1 = ref Unsafe.Add(ref q, hd);
        ref float q2 = ref Unsafe.Add(ref q1, hd);
        ref float q3 = ref Unsafe.Add(ref q2, hd);
        int j = 0;
        for (; j + 16 <= n; j += 16)
        {
            Vector256<float> a0 = default, a1 = default, b0 = default, b1 = default, c0 = default, c1 = default, d0 = default, d1 = default;
            for (int c = 0; c < hd; c++)
            {
                ref float kc = ref Unsafe.Add(ref kt, c * KeyTile + j);
                var k0 = Vector256.LoadUnsafe(ref kc); var k1 = Vector256.LoadUnsafe(ref kc, 8);
                var x = Vector256.Create(Unsafe.Add(ref q, c));
                a0 = Vector256.MultiplyAddEstimate(x, k0, a0); a1 = Vector256.MultiplyAddEstimate(x, k1, a1);
                x = Vector256.Create(Unsafe.Add(ref q1, c));
                b0 = Vector256.MultiplyAddEstimate(x, k0, b0); b1 = Vector256.MultiplyAddEstimate(x, k1, b1);
                x = Vector256.Create(Unsafe.Add(ref q2, c));
                c0 = Vector256.MultiplyAddEstimate(x, k0, c0); c1 = Vector256.MultiplyAddEstimate(x, k1, c1);
                x = Vector256.Create(Unsafe.Add(ref q3, c));
                d0 = Vector256.MultiplyAddEstimate(x, k0, d0); d1 = Vector256.MultiplyAddEstimate(x, k1, d1);
            }
            a0.StoreUnsafe(ref s, (nuint)j); a1.StoreUnsafe(ref s, (nuint)(j + 8));
            b0.StoreUnsafe(ref s, (nuint)(KeyTile + j)); b1.StoreUnsafe(ref s, (nuint)(KeyTile + j + 8));
            c0.StoreUnsafe(ref s, (nuint)(2 * KeyTile + j)); c1.StoreUnsafe(ref s, (nuint)(2 * KeyTile + j + 8));
            d0.StoreUnsafe(ref s, (nuint)(3 * KeyTile + j)); d1.StoreUnsafe(ref s, (nuint)(3 * KeyTile + j + 8));
        }
        for (; j < n; j++)
        {
            float sa = 0, sb = 0, sc = 0, sd = 0;
            for (int c = 0; c < hd; c++)
            {
                float k = Unsafe.Add(ref kt, c * KeyTile + j);
                sa += Unsafe.Add(ref q, c) * k; sb += Unsafe.Add(ref q1, c) * k;
                sc += Unsafe.Add(ref q2, c) * k; sd += Unsafe.Add(ref q3, c) * k;
            }
            Unsafe.Add(ref s, j) = sa; Unsafe.Add(ref s, KeyTile + j) = sb;
            Unsafe.Add(ref s, 2 * KeyTile + j) = sc; Unsafe.Add(ref s, 3 * KeyTile + j) = sd;
        }
    }

    /// <summary>
    /// acc_i += Σ_t w[i·KeyTile + t]·rows[t] for four contiguous accumulator rows (hd floats each) and t &lt; count:
    /// a 4×16 register tile, two value loads and four broadcasts per eight FMAs. hd % 8 == 0.
    /// </summary>
    static void AccumulateRows4(ref float acc, ref float rows, int count, int hd, ref float w)
    {
        ref float w1 = ref Unsafe.Add(ref w, KeyTile);
        ref float w2 = ref Unsafe.Add(ref w1, KeyTile);
        ref float w3 = ref Unsafe.Add(ref w2, KeyTile);
        int c = 0;
        for (; c + 16 <= hd; c += 16)
        {
            ref float o0 = ref Unsafe.Add(ref acc, c);
            ref float o1 = ref Unsafe.Add(ref o0, hd);
            ref float o2 = ref Unsafe.Add(ref o1, hd);
            ref float o3 = ref Unsafe.Add(ref o2, hd);
            var a0 = Vector256.LoadUnsafe(ref o0); var a1 = Vector256.LoadUnsafe(ref o0, 8);
            var b0 = Vector256.LoadUnsafe(ref o1); var b1 = Vector256.LoadUnsafe(ref o1, 8);
            var c0 = Vector256.LoadUnsafe(ref o2); var c1 = Vector256.LoadUnsafe(ref o2, 8);
            var d0 = Vector256.LoadUnsafe(ref o3); var d1 = Vector256.LoadUnsafe(ref o3, 8);
            for (int t = 0; t < count; t++)
            {
                ref float rt = ref Unsafe.Add(ref rows, t * hd + c);
                var v0 = Vector256.LoadUnsafe(ref rt); var v1 = Vector256.LoadUnsafe(ref rt, 8);
                var x = Vector256.Create(Unsafe.Add(ref w, t));
                a0 = Vector256.MultiplyAddEstimate(x, v0, a0); a1 = Vector256.MultiplyAddEstimate(x, v1, a1);
                x = Vector256.Create(Unsafe.Add(ref w1, t));
                b0 = Vector256.MultiplyAddEstimate(x, v0, b0); b1 = Vector256.MultiplyAddEstimate(x, v1, b1);
                x = Vector256.Create(Unsafe.Add(ref w2, t));
                c0 = Vector256.MultiplyAddEstimate(x, v0, c0); c1 = Vector256.MultiplyAddEstimate(x, v1, c1);
                x = Vector256.Create(Unsafe.Add(ref w3, t));
                d0 = Vector256.MultiplyAddEstimate(x, v0, d0); d1 = Vector256.MultiplyAddEstimate(x, v1, d1);
            }
            a0.StoreUnsafe(ref o0); a1.StoreUnsafe(ref o0, 8);
            b0.StoreUnsafe(ref o1); b1.StoreUnsafe(ref o1, 8);
            c0.StoreUnsafe(ref o2); c1.StoreUnsafe(ref o2, 8);
            d0.StoreUnsafe(ref o3); d1.StoreUnsafe(ref o3, 8);
        }
        if (c < hd) // the last 8 columns
        {
            ref float o0 = ref Unsafe.Add(ref acc, c);
            ref float o1 = ref Unsafe.Add(ref o0, hd);
            ref float o2 = ref Unsafe.Add(ref o1, hd);
            ref float o3 = ref Unsafe.Add(ref o2, hd);
            var a0 = Vector256.LoadUnsafe(ref o0); var b0 = Vector256.LoadUnsafe(ref o1);
            var c0 = Vector256.LoadUnsafe(ref o2); var d0 = Vector256.LoadUnsafe(ref o3);
            for (int t = 0; t < count; t++)
            {
                var v0 = Vector256.LoadUnsafe(ref Unsafe.Add(ref rows, t * hd + c));
                a0 = Vector256.MultiplyAddEstimate(Vector256.Create(Unsafe.Add(ref w, t)), v0, a0);
                b0 = Vector256.MultiplyAddEstimate(Vector256.Create(Unsafe.Add(ref w1, t)), v0, b0);
                c0 = Vector256.MultiplyAddEstimate(Vector256.Create(Unsafe.Add(ref w2, t)), v0, c0);
                d0 = Vector256.MultiplyAddEstimate(Vector256.Create(Unsafe.Add(ref w3, t)), v0, d0);
            }
            a0.StoreUnsafe(ref o0); b0.StoreUnsafe(ref o1); c0.StoreUnsafe(ref o2); d0.StoreUnsafe(ref o3);
        }
    }

    // ------------------------------------------------------------------ backward

    /// <summary>Backward over views of the CPU backend. See <see cref="IBackend.AttentionBackward"/>.</summary>
    /// <param name="fused">true: one task per (batch, head) accumulating its dQ in place; false: the key tiles of each
    /// (batch, head) split over several tasks (at least two where there are two key tiles) with their own dQ
    /// partials, summed afterwards; null: fused when there are at least four times as many (batch, head) pairs as
    /// processors.</param>
    public static void Backward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse, FloatView dOutput, FloatView dQkv, bool? fused = null)
    {
        shape.Validate();
        long bt = (long)shape.Batch * shape.SeqLen;
        RequireView(qkv, bt * shape.QkvRowStride, nameof(qkv));
        RequireView(output, bt * shape.ModelDim, nameof(output));
        RequireView(lse, bt * shape.Heads, nameof(lse));
        RequireView(dOutput, bt * shape.ModelDim, nameof(dOutput));
        RequireView(dQkv, bt * shape.QkvRowStride, nameof(dQkv));
        Backward(shape, CpuBackend.Storage(qkv), qkv.Offset, CpuBackend.Storage(output), output.Offset, CpuBackend.Storage(lse), lse.Offset,
            CpuBackend.Storage(dOutput), dOutput.Offset, CpuBackend.Storage(dQkv), dQkv.Offset, fused);
    }

    // ------------------------------------------------------------------ decode

    /// <summary>Block decode against a KV cache. See <see cref="IBackend.DecodeAttention"/>.</summary>
    public static void Decode(DecodeShape shape, FloatView qkv, FloatView kCache, FloatView vCache, FloatView output)
    {
        if (shape.Batch <= 0 || shape.Heads <= 0 || shape.HeadDim <= 0 || shape.BlockLen <= 0 || shape.CacheLen < 0 || shape.CacheLen > shape.CacheCapacity)
            throw new ArgumentException($"invalid decode shape: {shape}");
        int B = shape.Batch, T = shape.BlockLen, H = shape.Heads, hd = shape.HeadDim, D = shape.ModelDim, stride = 3 * D;
        int cap = shape.CacheCapacity, cl = shape.CacheLen;
        RequireView(qkv, (long)B * T * stride, nameof(qkv));
        RequireView(kCache, (long)B * cap * D, nameof(kCache));
        RequireView(vCache, (long)B * cap * D, nameof(vCache));
        RequireView(output, (long)B * T * D, nameof(output));
        float[] q = CpuBackend.Storage(qkv), kc = CpuBackend.Storage(kCache), vc = CpuBackend.Storage(vCache), outp = CpuBackend.Storage(output);
        int qkvOff = qkv.Offset, kcOff = kCache.Offset, vcOff = vCache.Offset, outOff = output.Offset;
        int nqt = (T + QueryTile - 1) / QueryTile;
        float scale = 1f / MathF.Sqrt(hd);
        Parallel.For(0, B * H * nqt, () => new Scratch(hd), (task, _, sc) =>
        {
            int qt = task % nqt, bh = task / nqt, h = bh % H, b = bh / H;
            int q0 = qt * QueryTile, nq = Math.Min(T, q0 + QueryTile) - q0;
            int qBase = qkvOff + b * T * stride + h * hd;
            LoadQueries(sc, q, qBase, stride, q0, nq, hd, scale);
            // cached keys (all visible), then the block's own keys (bidirectional)
            AllKeys(sc, nq, hd, kc, kcOff + b * cap * D + h * hd, vc, vcOff + b * cap * D + h * hd, D, cl);
            AllKeys(sc, nq, hd, q, qBase + D, q, qBase + 2 * D, stride, T);
            Finish(sc, nq, hd, outp, outOff + (b * T + q0) * D + h * hd, D, null, 0);
            return sc;
        }, _ => { });
    }

    static void AllKeys(Scratch sc, int nq, int hd, float[] k, int kBase, float[] v, int vBase, int stride, int count)
    {
        for (int k0 = 0; k0 < count; k0 += KeyTile)
        {
            int k1 = Math.Min(count, k0 + KeyTile);
            Gather(k, kBase, stride, k0, k1, hd, sc.K);
            Gather(v, vBase, stride, k0, k1, hd, sc.V);
            UpdateAllRows(sc, nq, hd, k1 - k0);
        }
    }
}
