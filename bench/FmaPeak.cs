using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastBlockDiff.Bench;

/// <summary>
/// The machine's fp32 fused-multiply-add peak as it is now: every thread runs 12 independent FMA chains on
/// registers (no memory traffic) with the widest vectors the CPU runs natively, and the flops of all threads are
/// divided by the wall time. A bench reports its figures also as a share of this, measured in the same run.
/// </summary>
public static class FmaPeak
{
    /// <summary>
    /// GFLOP/s of <paramref name="threads"/> threads (0: all processors) running FMA chains for about <paramref name="seconds"/>;
    /// with <paramref name="threadCpuTime"/> one thread on the caller, timed by its CPU time (<see cref="ThreadCpuClock"/>).
    /// </summary>
    public static double Measure(int threads = 0, double seconds = 0.2, bool threadCpuTime = false)
    {
        if (threads <= 0) threads = Environment.ProcessorCount;
        int lanes = Width();
        // Calibrate on one thread: iterations for the requested time (each iteration is 12 FMAs of `lanes` lanes).
        long iters = 1 << 16;
        Chains(iters, lanes);
        var sw = Stopwatch.StartNew();
        Chains(iters, lanes);
        double perIter = sw.Elapsed.TotalSeconds / iters;
        iters = Math.Max(1 << 16, (long)(seconds / Math.Max(perIter, 1e-12)));
        long n = iters;
        if (threadCpuTime)
        {
            double t0 = ThreadCpuClock.Now();
            Chains(n, lanes);
            return (double)iters * 12 * lanes * 2 / (ThreadCpuClock.Now() - t0) / 1e9;
        }
        sw.Restart();
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ => Chains(n, lanes));
        double elapsed = sw.Elapsed.TotalSeconds;
        return threads * (double)iters * 12 * lanes * 2 / elapsed / 1e9;
    }

    /// <summary>Lanes of the vectors <see cref="Chains"/> uses on this CPU.</summary>
    public static int Width() =>
        Avx512F.IsSupported && Vector512.IsHardwareAccelerated ? 16 : Fma.IsSupported ? 8 : 4;

    /// <summary>12 independent FMA chains of <paramref name="lanes"/>-lane vectors (16, 8 or 4), <paramref name="iters"/> times each; the sum keeps them alive.</summary>
    public static float Chains(long iters, int lanes) => lanes switch
    {
        16 => Chains512(iters),
        8 => Chains256(iters),
        _ => Chains128(iters),
    };

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Chains512(long iters)
    {
        var m = Vector512.Create(0.999999f); var d = Vector512.Create(1e-7f);
        var c0 = Vector512.Create(1f); var c1 = c0 + d; var c2 = c1 + d; var c3 = c2 + d; var c4 = c3 + d; var c5 = c4 + d;
        var c6 = c5 + d; var c7 = c6 + d; var c8 = c7 + d; var c9 = c8 + d; var c10 = c9 + d; var c11 = c10 + d;
        for (long i = 0; i < iters; i++)
        {
            c0 = Avx512F.FusedMultiplyAdd(c0, m, d); c1 = Avx512F.FusedMultiplyAdd(c1, m, d); c2 = Avx512F.FusedMultiplyAdd(c2, m, d);
            c3 = Avx512F.FusedMultiplyAdd(c3, m, d); c4 = Avx512F.FusedMultiplyAdd(c4, m, d); c5 = Avx512F.FusedMultiplyAdd(c5, m, d);
            c6 = Avx512F.FusedMultiplyAdd(c6, m, d); c7 = Avx512F.FusedMultiplyAdd(c7, m, d); c8 = Avx512F.FusedMultiplyAdd(c8, m, d);
            c9 = Avx512F.FusedMultiplyAdd(c9, m, d); c10 = Avx512F.FusedMultiplyAdd(c10, m, d); c11 = Avx512F.FusedMultiplyAdd(c11, m, d);
        }
        return Vector512.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Chains256(long iters)
    {
        var m = Vector256.Create(0.999999f); var d = Vector256.Create(1e-7f);
        var c0 = Vector256.Create(1f); var c1 = c0 + d; var c2 = c1 + d; var c3 = c2 + d; var c4 = c3 + d; var c5 = c4 + d;
        var c6 = c5 + d; var c7 = c6 + d; var c8 = c7 + d; var c9 = c8 + d; var c10 = c9 + d; var c11 = c10 + d;
        for (long i = 0; i < iters; i++)
        {
            c0 = Fma.MultiplyAdd(c0, m, d); c1 = Fma.MultiplyAdd(c1, m, d); c2 = Fma.MultiplyAdd(c2, m, d);
            c3 = Fma.MultiplyAdd(c3, m, d); c4 = Fma.MultiplyAdd(c4, m, d); c5 = Fma.MultiplyAdd(c5, m, d);
            c6 = Fma.MultiplyAdd(c6, m, d); c7 = Fma.MultiplyAdd(c7, m, d); c8 = Fma.MultiplyAdd(c8, m, d);
            c9 = Fma.MultiplyAdd(c9, m, d); c10 = Fma.MultiplyAdd(c10, m, d); c11 = Fma.MultiplyAdd(c11, m, d);
        }
        return Vector256.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }

    /// <summary>Without FMA: multiply-add counted as two flops all the same (a portable fallback, not a peak).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Chains128(long iters)
    {
        var m = Vector128.Create(0.999999f); var d = Vector128.Create(1e-7f);
        var c0 = Vector128.Create(1f); var c1 = c0 + d; var c2 = c1 + d; var c3 = c2 + d; var c4 = c3 + d; var c5 = c4 + d;
        var c6 = c5 + d; var c7 = c6 + d; var c8 = c7 + d; var c9 = c8 + d; var c10 = c9 + d; var c11 = c10 + d;
        for (long i = 0; i < iters; i++)
        {
            c0 = c0 * m + d; c1 = c1 * m + d; c2 = c2 * m + d; c3 = c3 * m + d; c4 = c4 * m + d; c5 = c5 * m + d;
            c6 = c6 * m + d; c7 = c7 * m + d; c8 = c8 * m + d; c9 = c9 * m + d; c10 = c10 * m + d; c11 = c11 * m + d;
        }
        return Vector128.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }
}
