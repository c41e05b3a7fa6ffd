// Micro-kernels of CpuGemm. Generated (register tiles are spelled out so that the JIT keeps every
// accumulator in a register); edit the shape in CpuGemm.cs's KernelInfo if you regenerate.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastBlockDiff.Kernels.Cpu;

public static unsafe partial class CpuGemm
{
    // Each kernel: C[MR×NR] (ldc) = A[kc×MR]·Bpack[kc×NR] + (beta==0 ? 0 : beta·C) + bias[NR] (bias may be null), the MR
    // values of A for step p at a + p·aStep: a packed sliver (aStep = MR), or transposed A where it lies (aStep = lda).
    // beta == 0 never reads C.

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Kernel512(int kc, float* a, nint aStep, float* b, float* c, nint ldc, float beta, float* bias)
    {
        // The tile of C (12 rows of 128 bytes, three cache lines each when unaligned) is fetched while the k loop runs,
        // so that its epilogue does not wait on memory (C of a large product lies in L3 or beyond).
        for (int r = 0; r < 12; r++) PrefetchRow(c + r * ldc, 32);
        var c0_0 = Vector512<float>.Zero; var c0_1 = Vector512<float>.Zero;
        var c1_0 = Vector512<float>.Zero; var c1_1 = Vector512<float>.Zero;
        var c2_0 = Vector512<float>.Zero; var c2_1 = Vector512<float>.Zero;
        var c3_0 = Vector512<float>.Zero; var c3_1 = Vector512<float>.Zero;
        var c4_0 = Vector512<float>.Zero; var c4_1 = Vector512<float>.Zero;
        var c5_0 = Vector512<float>.Zero; var c5_1 = Vector512<float>.Zero;
        var c6_0 = Vector512<float>.Zero; var c6_1 = Vector512<float>.Zero;
        var c7_0 = Vector512<float>.Zero; var c7_1 = Vector512<float>.Zero;
        var c8_0 = Vector512<float>.Zero; var c8_1 = Vector512<float>.Zero;
        var c9_0 = Vector512<float>.Zero; var c9_1 = Vector512<float>.Zero;
        var c10_0 = Vector512<float>.Zero; var c10_1 = Vector512<float>.Zero;
        var c11_0 = Vector512<float>.Zero; var c11_1 = Vector512<float>.Zero;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(b + 0); var b1 = Vector512.Load(b + 16);
            var a0 = Vector512.Create(a[0]); c0_0 = Avx512F.FusedMultiplyAdd(a0, b0, c0_0); c0_1 = Avx512F.FusedMultiplyAdd(a0, b1, c0_1);
            var a1 = Vector512.Create(a[1]); c1_0 = Avx512F.FusedMultiplyAdd(a1, b0, c1_0); c1_1 = Avx512F.FusedMultiplyAdd(a1, b1, c1_1);
            var a2 = Vector512.Create(a[2]); c2_0 = Avx512F.FusedMultiplyAdd(a2, b0, c2_0); c2_1 = Avx512F.FusedMultiplyAdd(a2, b1, c2_1);
            var a3 = Vector512.Create(a[3]); c3_0 = Avx512F.FusedMultiplyAdd(a3, b0, c3_0); c3_1 = Avx512F.FusedMultiplyAdd(a3, b1, c3_1);
            var a4 = Vector512.Create(a[4]); c4_0 = Avx512F.FusedMultiplyAdd(a4, b0, c4_0); c4_1 = Avx512F.FusedMultiplyAdd(a4, b1, c4_1);
            var a5 = Vector512.Create(a[5]); c5_0 = Avx512F.FusedMultiplyAdd(a5, b0, c5_0); c5_1 = Avx512F.FusedMultiplyAdd(a5, b1, c5_1);
            var a6 = Vector512.Create(a[6]); c6_0 = Avx512F.FusedMultiplyAdd(a6, b0, c6_0); c6_1 = Avx512F.FusedMultiplyAdd(a6, b1, c6_1);
            var a7 = Vector512.Create(a[7]); c7_0 = Avx512F.FusedMultiplyAdd(a7, b0, c7_0); c7_1 = Avx512F.FusedMultiplyAdd(a7, b1, c7_1);
            var a8 = Vector512.Create(a[8]); c8_0 = Avx512F.FusedMultiplyAdd(a8, b0, c8_0); c8_1 = Avx512F.FusedMultiplyAdd(a8, b1, c8_1);
            var a9 = Vector512.Create(a[9]); c9_0 = Avx512F.FusedMultiplyAdd(a9, b0, c9_0); c9_1 = Avx512F.FusedMultiplyAdd(a9, b1, c9_1);
            var a10 = Vector512.Create(a[10]); c10_0 = Avx512F.FusedMultiplyAdd(a10, b0, c10_0); c10_1 = Avx512F.FusedMultiplyAdd(a10, b1, c10_1);
            var a11 = Vector512.Create(a[11]); c11_0 = Avx512F.FusedMultiplyAdd(a11, b0, c11_0); c11_1 = Avx512F.FusedMultiplyAdd(a11, b1, c11_1);
            a += aStep; b += 32;
        }
        var z0 = Vector512<float>.Zero; var z1 = Vector512<float>.Zero;
        if (bias != null) { z0 = Vector512.Load(bias + 0); z1 = Vector512.Load(bias + 16); }
        if (beta == 0)
        {
            Vector512.Store(c0_0 + z0, c + 0 * ldc + 0); Vector512.Store(c0_1 + z1, c + 0 * ldc + 16);
            Vector512.Store(c1_0 + z0, c + 1 * ldc + 0); Vector512.Store(c1_1 + z1, c + 1 * ldc + 16);
            Vector512.Store(c2_0 + z0, c + 2 * ldc + 0); Vector512.Store(c2_1 + z1, c + 2 * ldc + 16);
            Vector512.Store(c3_0 + z0, c + 3 * ldc + 0); Vector512.Store(c3_1 + z1, c + 3 * ldc + 16);
            Vector512.Store(c4_0 + z0, c + 4 * ldc + 0); Vector512.Store(c4_1 + z1, c + 4 * ldc + 16);
            Vector512.Store(c5_0 + z0, c + 5 * ldc + 0); Vector512.Store(c5_1 + z1, c + 5 * ldc + 16);
            Vector512.Store(c6_0 + z0, c + 6 * ldc + 0); Vector512.Store(c6_1 + z1, c + 6 * ldc + 16);
            Vector512.Store(c7_0 + z0, c + 7 * ldc + 0); Vector512.Store(c7_1 + z1, c + 7 * ldc + 16);
            Vector512.Store(c8_0 + z0, c + 8 * ldc + 0); Vector512.Store(c8_1 + z1, c + 8 * ldc + 16);
            Vector512.Store(c9_0 + z0, c + 9 * ldc + 0); Vector512.Store(c9_1 + z1, c + 9 * ldc + 16);
            Vector512.Store(c10_0 + z0, c + 10 * ldc + 0); Vector512.Store(c10_1 + z1, c + 10 * ldc + 16);
            Vector512.Store(c11_0 + z0, c + 11 * ldc + 0); Vector512.Store(c11_1 + z1, c + 11 * ldc + 16);
        }
        else if (beta == 1)
        {
            Vector512.Store(c0_0 + z0 + Vector512.Load(c + 0 * ldc + 0), c + 0 * ldc + 0); Vector512.Store(c0_1 + z1 + Vector512.Load(c + 0 * ldc + 16), c + 0 * ldc + 16);
            Vector512.Store(c1_0 + z0 + Vector512.Load(c + 1 * ldc + 0), c + 1 * ldc + 0); Vector512.Store(c1_1 + z1 + Vector512.Load(c + 1 * ldc + 16), c + 1 * ldc + 16);
            Vector512.Store(c2_0 + z0 + Vector512.Load(c + 2 * ldc + 0), c + 2 * ldc + 0); Vector512.Store(c2_1 + z1 + Vector512.Load(c + 2 * ldc + 16), c + 2 * ldc + 16);
            Vector512.Store(c3_0 + z0 + Vector512.Load(c + 3 * ldc + 0), c + 3 * ldc + 0); Vector512.Store(c3_1 + z1 + Vector512.Load(c + 3 * ldc + 16), c + 3 * ldc + 16);
            Vector512.Store(c4_0 + z0 + Vector512.Load(c + 4 * ldc + 0), c + 4 * ldc + 0); Vector512.Store(c4_1 + z1 + Vector512.Load(c + 4 * ldc + 16), c + 4 * ldc + 16);
            Vector512.Store(c5_0 + z0 + Vector512.Load(c + 5 * ldc + 0), c + 5 * ldc + 0); Vector512.Store(c5_1 + z1 + Vector512.Load(c + 5 * ldc + 16), c + 5 * ldc + 16);
            Vector512.Store(c6_0 + z0 + Vector512.Load(c + 6 * ldc + 0), c + 6 * ldc + 0); Vector512.Store(c6_1 + z1 + Vector512.Load(c + 6 * ldc + 16), c + 6 * ldc + 16);
            Vector512.Store(c7_0 + z0 + Vector512.Load(c + 7 * ldc + 0), c + 7 * ldc + 0); Vector512.Store(c7_1 + z1 + Vector512.Load(c + 7 * ldc + 16), c + 7 * ldc + 16);
            Vector512.Store(c8_0 + z0 + Vector512.Load(c + 8 * ldc + 0), c + 8 * ldc + 0); Vector512.Store(c8_1 + z1 + Vector512.Load(c + 8 * ldc + 16), c + 8 * ldc + 16);
            Vector512.Store(c9_0 + z0 + Vector512.Load(c + 9 * ldc + 0), c + 9 * ldc + 0); Vector512.Store(c9_1 + z1 + Vector512.Load(c + 9 * ldc + 16), c + 9 * ldc + 16);
            Vector512.Store(c10_0 + z0 + Vector512.Load(c + 10 * ldc + 0), c + 10 * ldc + 0); Vector512.Store(c10_1 + z1 + Vector512.Load(c + 10 * ldc + 16), c + 10 * ldc + 16);
            Vector512.Store(c11_0 + z0 + Vector512.Load(c + 11 * ldc + 0), c + 11 * ldc + 0); Vector512.Store(c11_1 + z1 + Vector512.Load(c + 11 * ldc + 16), c + 11 * ldc + 16);
        }
        else
        {
            var bt = Vector512.Create(beta);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 0 * ldc + 0), c0_0 + z0), c + 0 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 0 * ldc + 16), c0_1 + z1), c + 0 * ldc + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 1 * ldc + 0), c1_0 + z0), c + 1 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 1 * ldc + 16), c1_1 + z1), c + 1 * ldc + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 2 * ldc + 0), c2_0 + z0), c + 2 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 2 * ldc + 16), c2_1 + z1), c + 2 * ldc + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 3 * ldc + 0), c3_0 + z0), c + 3 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 3 * ldc + 16), c3_1 + z1), c + 3 * ldc + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 4 * ldc + 0), c4_0 + z0), c + 4 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 4 * ldc + 16), c4_1 + z1), c + 4 * ldc + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 5 * ldc + 0), c5_0 + z0), c + 5 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 5 * ldc + 16), c5_1 + z1), c + 5 * ldc + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 6 * ldc + 0), c6_0 + z0), c + 6 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 6 * ldc + 16), c6_1 + z1), c + 6 * ldc + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 7 * ldc + 0), c7_0 + z0), c + 7 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 7 * ldc + 16), c7_1 + z1), c + 7 * ldc + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 8 * ldc + 0), c8_0 + z0), c + 8 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 8 * ldc + 16), c8_1 + z1), c + 8 * ldc + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 9 * ldc + 0), c9_0 + z0), c + 9 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 9 * ldc + 16), c9_1 + z1), c + 9 * ldc + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 10 * ldc + 0), c10_0 + z0), c + 10 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 10 * ldc + 16), c10_1 + z1), c + 10 * ldc + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 11 * ldc + 0), c11_0 + z0), c + 11 * ldc + 0); Vector512.Store(Avx512F.FusedMultiplyAdd(bt, Vector512.Load(c + 11 * ldc + 16), c11_1 + z1), c + 11 * ldc + 16);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Kernel256(int kc, float* a, nint aStep, float* b, float* c, nint ldc, float beta, float* bias)
    {
        for (int r = 0; r < 6; r++) PrefetchRow(c + r * ldc, 16);
        var c0_0 = Vector256<float>.Zero; var c0_1 = Vector256<float>.Zero;
        var c1_0 = Vector256<float>.Zero; var c1_1 = Vector256<float>.Zero;
        var c2_0 = Vector256<float>.Zero; var c2_1 = Vector256<float>.Zero;
        var c3_0 = Vector256<float>.Zero; var c3_1 = Vector256<float>.Zero;
        var c4_0 = Vector256<float>.Zero; var c4_1 = Vector256<float>.Zero;
        var c5_0 = Vector256<float>.Zero; var c5_1 = Vector256<float>.Zero;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(b + 0); var b1 = Vector256.Load(b + 8);
            var a0 = Vector256.Create(a[0]); c0_0 = Fma.MultiplyAdd(a0, b0, c0_0); c0_1 = Fma.MultiplyAdd(a0, b1, c0_1);
            var a1 = Vector256.Create(a[1]); c1_0 = Fma.MultiplyAdd(a1, b0, c1_0); c1_1 = Fma.MultiplyAdd(a1, b1, c1_1);
            var a2 = Vector256.Create(a[2]); c2_0 = Fma.MultiplyAdd(a2, b0, c2_0); c2_1 = Fma.MultiplyAdd(a2, b1, c2_1);
            var a3 = Vector256.Create(a[3]); c3_0 = Fma.MultiplyAdd(a3, b0, c3_0); c3_1 = Fma.MultiplyAdd(a3, b1, c3_1);
            var a4 = Vector256.Create(a[4]); c4_0 = Fma.MultiplyAdd(a4, b0, c4_0); c4_1 = Fma.MultiplyAdd(a4, b1, c4_1);
            var a5 = Vector256.Create(a[5]); c5_0 = Fma.MultiplyAdd(a5, b0, c5_0); c5_1 = Fma.MultiplyAdd(a5, b1, c5_1);
            a += aStep; b += 16;
        }
        var z0 = Vector256<float>.Zero; var z1 = Vector256<float>.Zero;
        if (bias != null) { z0 = Vector256.Load(bias + 0); z1 = Vector256.Load(bias + 8); }
        if (beta == 0)
        {
            Vector256.Store(c0_0 + z0, c + 0 * ldc + 0); Vector256.Store(c0_1 + z1, c + 0 * ldc + 8);
            Vector256.Store(c1_0 + z0, c + 1 * ldc + 0); Vector256.Store(c1_1 + z1, c + 1 * ldc + 8);
            Vector256.Store(c2_0 + z0, c + 2 * ldc + 0); Vector256.Store(c2_1 + z1, c + 2 * ldc + 8);
            Vector256.Store(c3_0 + z0, c + 3 * ldc + 0); Vector256.Store(c3_1 + z1, c + 3 * ldc + 8);
            Vector256.Store(c4_0 + z0, c + 4 * ldc + 0); Vector256.Store(c4_1 + z1, c + 4 * ldc + 8);
            Vector256.Store(c5_0 + z0, c + 5 * ldc + 0); Vector256.Store(c5_1 + z1, c + 5 * ldc + 8);
        }
        else if (beta == 1)
        {
            Vector256.Store(c0_0 + z0 + Vector256.Load(c + 0 * ldc + 0), c + 0 * ldc + 0); Vector256.Store(c0_1 + z1 + Vector256.Load(c + 0 * ldc + 8), c + 0 * ldc + 8);
            Vector256.Store(c1_0 + z0 + Vector256.Load(c + 1 * ldc + 0), c + 1 * ldc + 0); Vector256.Store(c1_1 + z1 + Vector256.Load(c + 1 * ldc + 8), c + 1 * ldc + 8);
            Vector256.Store(c2_0 + z0 + Vector256.Load(c + 2 * ldc + 0), c + 2 * ldc + 0); Vector256.Store(c2_1 + z1 + Vector256.Load(c + 2 * ldc + 8), c + 2 * ldc + 8);
            Vector256.Store(c3_0 + z0 + Vector256.Load(c + 3 * ldc + 0), c + 3 * ldc + 0); Vector256.Store(c3_1 + z1 + Vector256.Load(c + 3 * ldc + 8), c + 3 * ldc + 8);
            Vector256.Store(c4_0 + z0 + Vector256.Load(c + 4 * ldc + 0), c + 4 * ldc + 0); Vector256.Store(c4_1 + z1 + Vector256.Load(c + 4 * ldc + 8), c + 4 * ldc + 8);
            Vector256.Store(c5_0 + z0 + Vector256.Load(c + 5 * ldc + 0), c + 5 * ldc + 0); Vector256.Store(c5_1 + z1 + Vector256.Load(c + 5 * ldc + 8), c + 5 * ldc + 8);
        }
        else
        {
            var bt = Vector256.Create(beta);
            Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 0 * ldc + 0), c0_0 + z0), c + 0 * ldc + 0); Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 0 * ldc + 8), c0_1 + z1), c + 0 * ldc + 8);
            Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 1 * ldc + 0), c1_0 + z0), c + 1 * ldc + 0); Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 1 * ldc + 8), c1_1 + z1), c + 1 * ldc + 8);
            Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 2 * ldc + 0), c2_0 + z0), c + 2 * ldc + 0); Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 2 * ldc + 8), c2_1 + z1), c + 2 * ldc + 8);
            Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 3 * ldc + 0), c3_0 + z0), c + 3 * ldc + 0); Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 3 * ldc + 8), c3_1 + z1), c + 3 * ldc + 8);
            Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 4 * ldc + 0), c4_0 + z0), c + 4 * ldc + 0); Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 4 * ldc + 8), c4_1 + z1), c + 4 * ldc + 8);
            Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 5 * ldc + 0), c5_0 + z0), c + 5 * ldc + 0); Vector256.Store(Fma.MultiplyAdd(bt, Vector256.Load(c + 5 * ldc + 8), c5_1 + z1), c + 5 * ldc + 8);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Kernel128(int kc, float* a, nint aStep, float* b, float* c, nint ldc, float beta, float* bias)
    {
        var c0_0 = Vector128<float>.Zero; var c0_1 = Vector128<float>.Zero;
        var c1_0 = Vector128<float>.Zero; var c1_1 = Vector128<float>.Zero;
        var c2_0 = Vector128<float>.Zero; var c2_1 = Vector128<float>.Zero;
        var c3_0 = Vector128<float>.Zero; var c3_1 = Vector128<float>.Zero;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector128.Load(b + 0); var b1 = Vector128.Load(b + 4);
            var a0 = Vector128.Create(a[0]); c0_0 = MulAdd128(a0, b0, c0_0); c0_1 = MulAdd128(a0, b1, c0_1);
            var a1 = Vector128.Create(a[1]); c1_0 = MulAdd128(a1, b0, c1_0); c1_1 = MulAdd128(a1, b1, c1_1);
            var a2 = Vector128.Create(a[2]); c2_0 = MulAdd128(a2, b0, c2_0); c2_1 = MulAdd128(a2, b1, c2_1);
            var a3 = Vector128.Create(a[3]); c3_0 = MulAdd128(a3, b0, c3_0); c3_1 = MulAdd128(a3, b1, c3_1);
            a += aStep; b += 8;
        }
        var z0 = Vector128<float>.Zero; var z1 = Vector128<float>.Zero;
        if (bias != null) { z0 = Vector128.Load(bias + 0); z1 = Vector128.Load(bias + 4); }
        if (beta == 0)
        {
            Vector128.Store(c0_0 + z0, c + 0 * ldc + 0); Vector128.Store(c0_1 + z1, c + 0 * ldc + 4);
            Vector128.Store(c1_0 + z0, c + 1 * ldc + 0); Vector128.Store(c1_1 + z1, c + 1 * ldc + 4);
            Vector128.Store(c2_0 + z0, c + 2 * ldc + 0); Vector128.Store(c2_1 + z1, c + 2 * ldc + 4);
            Vector128.Store(c3_0 + z0, c + 3 * ldc + 0); Vector128.Store(c3_1 + z1, c + 3 * ldc + 4);
        }
        else if (beta == 1)
        {
            Vector128.Store(c0_0 + z0 + Vector128.Load(c + 0 * ldc + 0), c + 0 * ldc + 0); Vector128.Store(c0_1 + z1 + Vector128.Load(c + 0 * ldc + 4), c + 0 * ldc + 4);
            Vector128.Store(c1_0 + z0 + Vector128.Load(c + 1 * ldc + 0), c + 1 * ldc + 0); Vector128.Store(c1_1 + z1 + Vector128.Load(c + 1 * ldc + 4), c + 1 * ldc + 4);
            Vector128.Store(c2_0 + z0 + Vector128.Load(c + 2 * ldc + 0), c + 2 * ldc + 0); Vector128.Store(c2_1 + z1 + Vector128.Load(c + 2 * ldc + 4), c + 2 * ldc + 4);
            Vector128.Store(c3_0 + z0 + Vector128.Load(c + 3 * ldc + 0), c + 3 * ldc + 0); Vector128.Store(c3_1 + z1 + Vector128.Load(c + 3 * ldc + 4), c + 3 * ldc + 4);
        }
        else
        {
            var bt = Vector128.Create(beta);
            Vector128.Store(MulAdd128(bt, Vector128.Load(c + 0 * ldc + 0), c0_0 + z0), c + 0 * ldc + 0); Vector128.Store(MulAdd128(bt, Vector128.Load(c + 0 * ldc + 4), c0_1 + z1), c + 0 * ldc + 4);
            Vector128.Store(MulAdd128(bt, Vector128.Load(c + 1 * ldc + 0), c1_0 + z0), c + 1 * ldc + 0); Vector128.Store(MulAdd128(bt, Vector128.Load(c + 1 * ldc + 4), c1_1 + z1), c + 1 * ldc + 4);
            Vector128.Store(MulAdd128(bt, Vector128.Load(c + 2 * ldc + 0), c2_0 + z0), c + 2 * ldc + 0); Vector128.Store(MulAdd128(bt, Vector128.Load(c + 2 * ldc + 4), c2_1 + z1), c + 2 * ldc + 4);
            Vector128.Store(MulAdd128(bt, Vector128.Load(c + 3 * ldc + 0), c3_0 + z0), c + 3 * ldc + 0); Vector128.Store(MulAdd128(bt, Vector128.Load(c + 3 * ldc + 4), c3_1 + z1), c + 3 * ldc + 4);
        }
    }

    // Row kernels of the small-M path: o[r*NR + c] = Σ_p a_r[p]·b[p*NR + c] + z[c] for 4 rows of alpha·op(A)
    // (contiguous along k) against a [kc][NR] copy of op(B) — per lane the same chain as the micro-kernel of the
    // same kind (fused multiply-adds over p from zero, or multiply then add for the portable one), plus z.

    /// <summary>4 rows × 32 columns, as Kernel512.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Rows512(int kc, float* a0, float* a1, float* a2, float* a3, float* b, float* z, float* o)
    {
        var c0_0 = Vector512<float>.Zero; var c0_1 = Vector512<float>.Zero;
        var c1_0 = Vector512<float>.Zero; var c1_1 = Vector512<float>.Zero;
        var c2_0 = Vector512<float>.Zero; var c2_1 = Vector512<float>.Zero;
        var c3_0 = Vector512<float>.Zero; var c3_1 = Vector512<float>.Zero;
        for (int p = 0; p < kc; p++, b += 32)
        {
            var b0 = Vector512.Load(b + 0); var b1 = Vector512.Load(b + 16);
            var x0 = Vector512.Create(a0[p]); c0_0 = Vector512.FusedMultiplyAdd(x0, b0, c0_0); c0_1 = Vector512.FusedMultiplyAdd(x0, b1, c0_1);
            var x1 = Vector512.Create(a1[p]); c1_0 = Vector512.FusedMultiplyAdd(x1, b0, c1_0); c1_1 = Vector512.FusedMultiplyAdd(x1, b1, c1_1);
            var x2 = Vector512.Create(a2[p]); c2_0 = Vector512.FusedMultiplyAdd(x2, b0, c2_0); c2_1 = Vector512.FusedMultiplyAdd(x2, b1, c2_1);
            var x3 = Vector512.Create(a3[p]); c3_0 = Vector512.FusedMultiplyAdd(x3, b0, c3_0); c3_1 = Vector512.FusedMultiplyAdd(x3, b1, c3_1);
        }
        var z0 = Vector512.Load(z + 0); var z1 = Vector512.Load(z + 16);
        Vector512.Store(c0_0 + z0, o + 0); Vector512.Store(c0_1 + z1, o + 16);
        Vector512.Store(c1_0 + z0, o + 32); Vector512.Store(c1_1 + z1, o + 48);
        Vector512.Store(c2_0 + z0, o + 64); Vector512.Store(c2_1 + z1, o + 80);
        Vector512.Store(c3_0 + z0, o + 96); Vector512.Store(c3_1 + z1, o + 112);
    }

    /// <summary>4 rows × 16 columns, as Kernel256.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Rows256(int kc, float* a0, float* a1, float* a2, float* a3, float* b, float* z, float* o)
    {
        var c0_0 = Vector256<float>.Zero; var c0_1 = Vector256<float>.Zero;
        var c1_0 = Vector256<float>.Zero; var c1_1 = Vector256<float>.Zero;
        var c2_0 = Vector256<float>.Zero; var c2_1 = Vector256<float>.Zero;
        var c3_0 = Vector256<float>.Zero; var c3_1 = Vector256<float>.Zero;
        for (int p = 0; p < kc; p++, b += 16)
        {
            var b0 = Vector256.Load(b + 0); var b1 = Vector256.Load(b + 8);
            var x0 = Vector256.Create(a0[p]); c0_0 = Vector256.FusedMultiplyAdd(x0, b0, c0_0); c0_1 = Vector256.FusedMultiplyAdd(x0, b1, c0_1);
            var x1 = Vector256.Create(a1[p]); c1_0 = Vector256.FusedMultiplyAdd(x1, b0, c1_0); c1_1 = Vector256.FusedMultiplyAdd(x1, b1, c1_1);
            var x2 = Vector256.Create(a2[p]); c2_0 = Vector256.FusedMultiplyAdd(x2, b0, c2_0); c2_1 = Vector256.FusedMultiplyAdd(x2, b1, c2_1);
            var x3 = Vector256.Create(a3[p]); c3_0 = Vector256.FusedMultiplyAdd(x3, b0, c3_0); c3_1 = Vector256.FusedMultiplyAdd(x3, b1, c3_1);
        }
        var z0 = Vector256.Load(z + 0); var z1 = Vector256.Load(z + 8);
        Vector256.Store(c0_0 + z0, o + 0); Vector256.Store(c0_1 + z1, o + 8);
        Vector256.Store(c1_0 + z0, o + 16); Vector256.Store(c1_1 + z1, o + 24);
        Vector256.Store(c2_0 + z0, o + 32); Vector256.Store(c2_1 + z1, o + 40);
        Vector256.Store(c3_0 + z0, o + 48); Vector256.Store(c3_1 + z1, o + 56);
    }

    /// <summary>4 rows × 8 columns, as Kernel128 (multiply then add).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Rows128(int kc, float* a0, float* a1, float* a2, float* a3, float* b, float* z, float* o)
    {
        var c0_0 = Vector128<float>.Zero; var c0_1 = Vector128<float>.Zero;
        var c1_0 = Vector128<float>.Zero; var c1_1 = Vector128<float>.Zero;
        var c2_0 = Vector128<float>.Zero; var c2_1 = Vector128<float>.Zero;
        var c3_0 = Vector128<float>.Zero; var c3_1 = Vector128<float>.Zero;
        for (int p = 0; p < kc; p++, b += 8)
        {
            var b0 = Vector128.Load(b + 0); var b1 = Vector128.Load(b + 4);
            var x0 = Vector128.Create(a0[p]); c0_0 = MulAdd128(x0, b0, c0_0); c0_1 = MulAdd128(x0, b1, c0_1);
            var x1 = Vector128.Create(a1[p]); c1_0 = MulAdd128(x1, b0, c1_0); c1_1 = MulAdd128(x1, b1, c1_1);
            var x2 = Vector128.Create(a2[p]); c2_0 = MulAdd128(x2, b0, c2_0); c2_1 = MulAdd128(x2, b1, c2_1);
            var x3 = Vector128.Create(a3[p]); c3_0 = MulAdd128(x3, b0, c3_0); c3_1 = MulAdd128(x3, b1, c3_1);
        }
        var z0 = Vector128.Load(z + 0); var z1 = Vector128.Load(z + 4);
        Vector128.Store(c0_0 + z0, o + 0); Vector128.Store(c0_1 + z1, o + 4);
        Vector128.Store(c1_0 + z0, o + 8); Vector128.Store(c1_1 + z1, o + 12);
        Vector128.Store(c2_0 + z0, o + 16); Vector128.Store(c2_1 + z1, o + 20);
        Vector128.Store(c3_0 + z0, o + 24); Vector128.Store(c3_1 + z1, o + 28);
    }

    /// <summary>out[r*4+c] = Σ_p a_r[p]·b_c[p] over k for 4 rows of A and 4 rows of B (both contiguous along k).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Dot4x4_512(float* a0, float* a1, float* a2, float* a3, float* b0, float* b1, float* b2, float* b3, int k, float* o)
    {
        var s00 = Vector512<float>.Zero; var s01 = Vector512<float>.Zero; var s02 = Vector512<float>.Zero; var s03 = Vector512<float>.Zero;
        var s10 = Vector512<float>.Zero; var s11 = Vector512<float>.Zero; var s12 = Vector512<float>.Zero; var s13 = Vector512<float>.Zero;
        var s20 = Vector512<float>.Zero; var s21 = Vector512<float>.Zero; var s22 = Vector512<float>.Zero; var s23 = Vector512<float>.Zero;
        var s30 = Vector512<float>.Zero; var s31 = Vector512<float>.Zero; var s32 = Vector512<float>.Zero; var s33 = Vector512<float>.Zero;
        int p = 0;
        for (; p + 16 <= k; p += 16)
        {
            var vb0 = Vector512.Load(b0 + p); var vb1 = Vector512.Load(b1 + p); var vb2 = Vector512.Load(b2 + p); var vb3 = Vector512.Load(b3 + p);
            var va0 = Vector512.Load(a0 + p); s00 = Avx512F.FusedMultiplyAdd(va0, vb0, s00); s01 = Avx512F.FusedMultiplyAdd(va0, vb1, s01); s02 = Avx512F.FusedMultiplyAdd(va0, vb2, s02); s03 = Avx512F.FusedMultiplyAdd(va0, vb3, s03);
            var va1 = Vector512.Load(a1 + p); s10 = Avx512F.FusedMultiplyAdd(va1, vb0, s10); s11 = Avx512F.FusedMultiplyAdd(va1, vb1, s11); s12 = Avx512F.FusedMultiplyAdd(va1, vb2, s12); s13 = Avx512F.FusedMultiplyAdd(va1, vb3, s13);
            var va2 = Vector512.Load(a2 + p); s20 = Avx512F.FusedMultiplyAdd(va2, vb0, s20); s21 = Avx512F.FusedMultiplyAdd(va2, vb1, s21); s22 = Avx512F.FusedMultiplyAdd(va2, vb2, s22); s23 = Avx512F.FusedMultiplyAdd(va2, vb3, s23);
            var va3 = Vector512.Load(a3 + p); s30 = Avx512F.FusedMultiplyAdd(va3, vb0, s30); s31 = Avx512F.FusedMultiplyAdd(va3, vb1, s31); s32 = Avx512F.FusedMultiplyAdd(va3, vb2, s32); s33 = Avx512F.FusedMultiplyAdd(va3, vb3, s33);
        }
        o[0] = Vector512.Sum(s00); o[1] = Vector512.Sum(s01); o[2] = Vector512.Sum(s02); o[3] = Vector512.Sum(s03);
        o[4] = Vector512.Sum(s10); o[5] = Vector512.Sum(s11); o[6] = Vector512.Sum(s12); o[7] = Vector512.Sum(s13);
        o[8] = Vector512.Sum(s20); o[9] = Vector512.Sum(s21); o[10] = Vector512.Sum(s22); o[11] = Vector512.Sum(s23);
        o[12] = Vector512.Sum(s30); o[13] = Vector512.Sum(s31); o[14] = Vector512.Sum(s32); o[15] = Vector512.Sum(s33);
        for (; p < k; p++)
        {
            float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
            float y0 = b0[p]; o[0] += x0 * y0; o[4] += x1 * y0; o[8] += x2 * y0; o[12] += x3 * y0;
            float y1 = b1[p]; o[1] += x0 * y1; o[5] += x1 * y1; o[9] += x2 * y1; o[13] += x3 * y1;
            float y2 = b2[p]; o[2] += x0 * y2; o[6] += x1 * y2; o[10] += x2 * y2; o[14] += x3 * y2;
            float y3 = b3[p]; o[3] += x0 * y3; o[7] += x1 * y3; o[11] += x2 * y3; o[15] += x3 * y3;
        }
    }

    /// <summary>out[r*4+c] = Σ_p a_r[p]·b_c[p] over k for 4 rows of A and 4 rows of B (both contiguous along k).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Dot4x4_256(float* a0, float* a1, float* a2, float* a3, float* b0, float* b1, float* b2, float* b3, int k, float* o)
    {
        var s00 = Vector256<float>.Zero; var s01 = Vector256<float>.Zero; var s02 = Vector256<float>.Zero; var s03 = Vector256<float>.Zero;
        var s10 = Vector256<float>.Zero; var s11 = Vector256<float>.Zero; var s12 = Vector256<float>.Zero; var s13 = Vector256<float>.Zero;
        var s20 = Vector256<float>.Zero; var s21 = Vector256<float>.Zero; var s22 = Vector256<float>.Zero; var s23 = Vector256<float>.Zero;
        var s30 = Vector256<float>.Zero; var s31 = Vector256<float>.Zero; var s32 = Vector256<float>.Zero; var s33 = Vector256<float>.Zero;
        int p = 0;
        for (; p + 8 <= k; p += 8)
        {
            var vb0 = Vector256.Load(b0 + p); var vb1 = Vector256.Load(b1 + p); var vb2 = Vector256.Load(b2 + p); var vb3 = Vector256.Load(b3 + p);
            var va0 = Vector256.Load(a0 + p); s00 = Vector256.MultiplyAddEstimate(va0, vb0, s00); s01 = Vector256.MultiplyAddEstimate(va0, vb1, s01); s02 = Vector256.MultiplyAddEstimate(va0, vb2, s02); s03 = Vector256.MultiplyAddEstimate(va0, vb3, s03);
            var va1 = Vector256.Load(a1 + p); s10 = Vector256.MultiplyAddEstimate(va1, vb0, s10); s11 = Vector256.MultiplyAddEstimate(va1, vb1, s11); s12 = Vector256.MultiplyAddEstimate(va1, vb2, s12); s13 = Vector256.MultiplyAddEstimate(va1, vb3, s13);
            var va2 = Vector256.Load(a2 + p); s20 = Vector256.MultiplyAddEstimate(va2, vb0, s20); s21 = Vector256.MultiplyAddEstimate(va2, vb1, s21); s22 = Vector256.MultiplyAddEstimate(va2, vb2, s22); s23 = Vector256.MultiplyAddEstimate(va2, vb3, s23);
            var va3 = Vector256.Load(a3 + p); s30 = Vector256.MultiplyAddEstimate(va3, vb0, s30); s31 = Vector256.MultiplyAddEstimate(va3, vb1, s31); s32 = Vector256.MultiplyAddEstimate(va3, vb2, s32); s33 = Vector256.MultiplyAddEstimate(va3, vb3, s33);
        }
        o[0] = Vector256.Sum(s00); o[1] = Vector256.Sum(s01); o[2] = Vector256.Sum(s02); o[3] = Vector256.Sum(s03);
        o[4] = Vector256.Sum(s10); o[5] = Vector256.Sum(s11); o[6] = Vector256.Sum(s12); o[7] = Vector256.Sum(s13);
        o[8] = Vector256.Sum(s20); o[9] = Vector256.Sum(s21); o[10] = Vector256.Sum(s22); o[11] = Vector256.Sum(s23);
        o[12] = Vector256.Sum(s30); o[13] = Vector256.Sum(s31); o[14] = Vector256.Sum(s32); o[15] = Vector256.Sum(s33);
        for (; p < k; p++)
        {
            float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
            float y0 = b0[p]; o[0] += x0 * y0; o[4] += x1 * y0; o[8] += x2 * y0; o[12] += x3 * y0;
            float y1 = b1[p]; o[1] += x0 * y1; o[5] += x1 * y1; o[9] += x2 * y1; o[13] += x3 * y1;
            float y2 = b2[p]; o[2] += x0 * y2; o[6] += x1 * y2; o[10] += x2 * y2; o[14] += x3 * y2;
            float y3 = b3[p]; o[3] += x0 * y3; o[7] += x1 * y3; o[11] += x2 * y3; o[15] += x3 * y3;
        }
    }

    /// <summary>Asks for the cache lines of count floats from p (a row of a C tile) to be brought into L1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PrefetchRow(float* p, int count)
    {
        if (!Sse.IsSupported) return;
        for (int i = 0; i < count; i += 16) Sse.Prefetch0(p + i);
        Sse.Prefetch0(p + count - 1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<float> MulAdd128(Vector128<float> a, Vector128<float> b, Vector128<float> c) => a * b + c;
}
