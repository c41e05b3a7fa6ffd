using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastBlockDiff.Kernels.Cpu;

// The products inside one query tile × key tile of the attention (Q·Kᵀ, P·V and the four of the backward) as
// register-tiled GEMM micro-kernels.
public static partial class CpuAttention
{
    /// <summary>Columns of one register tile of <see cref="TileGemm"/>; also the query-tile width of the transposed layouts.</summary>
    const int Strip = 32;

    /// <summary>
    /// C[r, 0..n) = (accumulate ? C[r, 0..n) : 0) + Σ_{p &lt; k} A(r, p)·B[p, 0..n) for r &lt; m, where A(r, p) = a[r·am + p·ak]
    /// (read one element at a time and broadcast, so A may be rows of qkv or a transposed view of a tile) and B, C are
    /// row-major with row strides bs and cs. n must be a multiple of <see cref="Strip"/>. Eight rows × 32 columns at a
    /// time in sixteen Vector512 accumulators (four rows in sixteen Vector256 where 512-bit vectors are not
    /// accelerated): per p, two row loads of B and eight broadcasts of A feed sixteen FMAs.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void TileGemm(int m, int n, int k, ref float a, nint am, nint ak, ref float b, nint bs, ref float c, nint cs, bool accumulate)
    {
        for (int n0 = 0; n0 < n; n0 += Strip)
        {
            ref float bn = ref Unsafe.Add(ref b, n0);
            ref float cn = ref Unsafe.Add(ref c, n0);
            int r = 0;
            if (Vector512.IsHardwareAccelerated)
            {
                for (; r + 8 <= m; r += 8)
                    Rows8(k, ref Unsafe.Add(ref a, r * am), am, ak, ref bn, bs, ref Unsafe.Add(ref cn, r * cs), cs, accumulate);
                for (; r < m; r++)
                    Row512(k, ref Unsafe.Add(ref a, r * am), ak, ref bn, bs, ref Unsafe.Add(ref cn, r * cs), accumulate);
            }
            else
            {
                for (; r + 4 <= m; r += 4)
                    Rows4(k, ref Unsafe.Add(ref a, r * am), am, ak, ref bn, bs, ref Unsafe.Add(ref cn, r * cs), cs, accumulate);
                for (; r < m; r++)
                    Row256(k, ref Unsafe.Add(ref a, r * am), ak, ref bn, bs, ref Unsafe.Add(ref cn, r * cs), accumulate);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Rows8(int k, ref float a, nint am, nint ak, ref float b, nint bs, ref float c, nint cs, bool accumulate)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        nint a2 = 2 * am, a3 = 3 * am;
        ref float ap = ref a;
        ref float aq = ref Unsafe.Add(ref a, 4 * am);
        ref float bp = ref b;
        for (int p = 0; p < k; p++)
        {
            var b0 = Vector512.LoadUnsafe(ref bp);
            var b1 = Vector512.LoadUnsafe(ref bp, 16);
            var x = Vector512.Create(ap);
            c00 = Vector512.MultiplyAddEstimate(x, b0, c00); c01 = Vector512.MultiplyAddEstimate(x, b1, c01);
            x = Vector512.Create(Unsafe.Add(ref ap, am));
            c10 = Vector512.MultiplyAddEstimate(x, b0, c10); c11 = Vector512.MultiplyAddEstimate(x, b1, c11);
            x = Vector512.Create(Unsafe.Add(ref ap, a2));
            c20 = Vector512.MultiplyAddEstimate(x, b0, c20); c21 = Vector512.MultiplyAddEstimate(x, b1, c21);
            x = Vector512.Create(Unsafe.Add(ref ap, a3));
            c30 = Vector512.MultiplyAddEstimate(x, b0, c30); c31 = Vector512.MultiplyAddEstimate(x, b1, c31);
            x = Vector512.Create(aq);
            c40 = Vector512.MultiplyAddEstimate(x, b0, c40); c41 = Vector512.MultiplyAddEstimate(x, b1, c41);
            x = Vector512.Create(Unsafe.Add(ref aq, am));
            c50 = Vector512.MultiplyAddEstimate(x, b0, c50); c51 = Vector512.MultiplyAddEstimate(x, b1, c51);
            x = Vector512.Create(Unsafe.Add(ref aq, a2));
            c60 = Vector512.MultiplyAddEstimate(x, b0, c60); c61 = Vector512.MultiplyAddEstimate(x, b1, c61);
            x = Vector512.Create(Unsafe.Add(ref aq, a3));
            c70 = Vector512.MultiplyAddEstimate(x, b0, c70); c71 = Vector512.MultiplyAddEstimate(x, b1, c71);
            ap = ref Unsafe.Add(ref ap, ak);
            aq = ref Unsafe.Add(ref aq, ak);
            bp = ref Unsafe.Add(ref bp, bs);
        }
        Store512(ref c, c00, c01, accumulate);
        Store512(ref Unsafe.Add(ref c, cs), c10, c11, accumulate);
        Store512(ref Unsafe.Add(ref c, 2 * cs), c20, c21, accumulate);
        Store512(ref Unsafe.Add(ref c, 3 * cs), c30, c31, accumulate);
        Store512(ref Unsafe.Add(ref c, 4 * cs), c40, c41, accumulate);
        Store512(ref Unsafe.Add(ref c, 5 * cs), c50, c51, accumulate);
        Store512(ref Unsafe.Add(ref c, 6 * cs), c60, c61, accumulate);
        Store512(ref Unsafe.Add(ref c, 7 * cs), c70, c71, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Row512(int k, ref float a, nint ak, ref float b, nint bs, ref float c, bool accumulate)
    {
        Vector512<float> c0 = default, c1 = default;
        ref float ap = ref a;
        ref float bp = ref b;
        for (int p = 0; p < k; p++)
        {
            var x = Vector512.Create(ap);
            c0 = Vector512.MultiplyAddEstimate(x, Vector512.LoadUnsafe(ref bp), c0);
            c1 = Vector512.MultiplyAddEstimate(x, Vector512.LoadUnsafe(ref bp, 16), c1);
            ap = ref Unsafe.Add(ref ap, ak);
            bp = ref Unsafe.Add(ref bp, bs);
        }
        Store512(ref c, c0, c1, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store512(ref float c, Vector512<float> v0, Vector512<float> v1, bool accumulate)
    {
        if (accumulate)
        {
            v0 += Vector512.LoadUnsafe(ref c);
            v1 += Vector512.LoadUnsafe(ref c, 16);
        }
        v0.StoreUnsafe(ref c);
        v1.StoreUnsafe(ref c, 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Rows4(int k, ref float a, nint am, nint ak, ref float b, nint bs, ref float c, nint cs, bool accumulate)
    {
        Vector256<float> c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default;
        Vector256<float> c20 = default, c21 = default, c22 = default, c23 = default, c30 = default, c31 = default, c32 = default, c33 = default;
        nint a2 = 2 * am, a3 = 3 * am;
        ref float ap = ref a;
        ref float bp = ref b;
        for (int p = 0; p < k; p++)
        {
            var b0 = Vector256.LoadUnsafe(ref bp); var b1 = Vector256.LoadUnsafe(ref bp, 8);
            var b2 = Vector256.LoadUnsafe(ref bp, 16); var b3 = Vector256.LoadUnsafe(ref bp, 24);
            var x = Vector256.Create(ap);
            c00 = Vector256.MultiplyAddEstimate(x, b0, c00); c01 = Vector256.MultiplyAddEstimate(x, b1, c01);
            c02 = Vector256.MultiplyAddEstimate(x, b2, c02); c03 = Vector256.MultiplyAddEstimate(x, b3, c03);
            x = Vector256.Create(Unsafe.Add(ref ap, am));
            c10 = Vector256.MultiplyAddEstimate(x, b0, c10); c11 = Vector256.MultiplyAddEstimate(x, b1, c11);
            c12 = Vector256.MultiplyAddEstimate(x, b2, c12); c13 = Vector256.MultiplyAddEstimate(x, b3, c13);
            x = Vector256.Create(Unsafe.Add(ref ap, a2));
            c20 = Vector256.MultiplyAddEstimate(x, b0, c20); c21 = Vector256.MultiplyAddEstimate(x, b1, c21);
            c22 = Vector256.MultiplyAddEstimate(x, b2, c22); c23 = Vector256.MultiplyAddEstimate(x, b3, c23);
            x = Vector256.Create(Unsafe.Add(ref ap, a3));
            c30 = Vector256.MultiplyAddEstimate(x, b0, c30); c31 = Vector256.MultiplyAddEstimate(x, b1, c31);
            c32 = Vector256.MultiplyAddEstimate(x, b2, c32); c33 = Vector256.MultiplyAddEstimate(x, b3, c33);
            ap = ref Unsafe.Add(ref ap, ak);
            bp = ref Unsafe.Add(ref bp, bs);
        }
        Store256(ref c, c00, c01, c02, c03, accumulate);
        Store256(ref Unsafe.Add(ref c, cs), c10, c11, c12, c13, accumulate);
        Store256(ref Unsafe.Add(ref c, 2 * cs), c20, c21, c22, c23, accumulate);
        Store256(ref Unsafe.Add(ref c, 3 * cs), c30, c31, c32, c33, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Row256(int k, ref float a, nint ak, ref float b, nint bs, ref float c, bool accumulate)
    {
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        ref float ap = ref a;
        ref float bp = ref b;
        for (int p = 0; p < k; p++)
        {
            var x = Vector256.Create(ap);
            c0 = Vector256.MultiplyAddEstimate(x, Vector256.LoadUnsafe(ref bp), c0);
            c1 = Vector256.MultiplyAddEstimate(x, Vector256.LoadUnsafe(ref bp, 8), c1);
            c2 = Vector256.MultiplyAddEstimate(x, Vector256.LoadUnsafe(ref bp, 16), c2);
            c3 = Vector256.MultiplyAddEstimate(x, Vector256.LoadUnsafe(ref bp, 24), c3);
            ap = ref Unsafe.Add(ref ap, ak);
            bp = ref Unsafe.Add(ref bp, bs);
        }
        Store256(ref c, c0, c1, c2, c3, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store256(ref float c, Vector256<float> v0, Vector256<float> v1, Vector256<float> v2, Vector256<float> v3, bool accumulate)
    {
        if (accumulate)
        {
            v0 += Vector256.LoadUnsafe(ref c); v1 += Vector256.LoadUnsafe(ref c, 8);
            v2 += Vector256.LoadUnsafe(ref c, 16); v3 += Vector256.LoadUnsafe(ref c, 24);
        }
        v0.StoreUnsafe(ref c); v1.StoreUnsafe(ref c, 8);
        v2.StoreUnsafe(ref c, 16); v3.StoreUnsafe(ref c, 24);
    }
}
