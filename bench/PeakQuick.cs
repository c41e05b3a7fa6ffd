using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastBlockDiff.Bench;

/// <summary>
/// `bench peak [--threads 1,2] [--seconds 0.3] [--runs 5] [--out FILE]`: the machine's fp32 FMA peak, the line every
/// other CPU figure is also reported against. Twelve independent FMA chains (acc = acc·a + b) live in Vector256 or
/// Vector512 registers with no memory traffic: enough chains to cover the FMA latency on both pipes, so the loop is
/// bound by FMA issue alone. One FMA of a W-bit vector counts 2·W/32 FLOPs. Each thread count runs --runs times
/// (median); the threads start together and the time is the slowest thread's.
/// </summary>
public static class PeakQuick
{
    const int Chains = 12;

    public static int Run(string[] args)
    {
        var o = new QuickOptions(args, new() { ["threads"] = $"1,{Environment.ProcessorCount}", ["seconds"] = "0.3", ["runs"] = "5" });
        double seconds = double.Parse(o.Str("seconds", "0.3"), System.Globalization.CultureInfo.InvariantCulture);
        var doc = BenchDoc.ForThisRun("peak", args, $"median of --runs timed loops of about {seconds} s each after one warm-up loop; with several threads, the slowest thread's time");
        doc.FlopsConvention = "one fused multiply-add of a W-bit fp32 vector = 2·W/32 FLOPs";
        var widths = new List<(int Bits, Func<long, float> Loop)>();
        if (Fma.IsSupported) widths.Add((256, iters => FmaPeak.Chains(iters, 8)));
        if (Avx512F.IsSupported) widths.Add((512, iters => FmaPeak.Chains(iters, 16)));
        if (widths.Count == 0) { Console.WriteLine("peak: no FMA instructions on this CPU; nothing measured"); o.WriteDoc(doc, "peak"); return 0; }
        Console.WriteLine($"{"vector",8} {"threads",8} {"GFLOP/s",10} {"per thread",11}");
        foreach (var (bits, loop) in widths)
        foreach (int threads in o.Ints("threads").Distinct())
        {
            // calibrate the iteration count to about `seconds` on one thread
            long iters = 1 << 16;
            while (true)
            {
                long t0 = Stopwatch.GetTimestamp();
                loop(iters);
                if (Stopwatch.GetElapsedTime(t0).TotalSeconds > seconds / 4 || iters > 1L << 40) break;
                iters *= 2;
            }
            iters = (long)(iters * 4);
            var times = new List<double>();
            for (int r = 0; r <= o.MinRuns; r++)
            {
                double t = TimeThreads(loop, iters, threads);
                if (r > 0) times.Add(t);   // the first loop is the warm-up
            }
            double sec = QuickTimer.Median(times);
            double flops = (double)threads * iters * Chains * 2 * (bits / 32);
            double gflops = flops / sec / 1e9;
            doc.Results.Add(new BenchResult
            {
                Suite = "fma_peak", Impl = "fastblockdiff-cpu", Backend = "cpu",
                Shape = new() { ["vector_bits"] = bits, ["threads"] = threads, ["dtype"] = "fp32" },
                Ms = Math.Round(sec * 1e3, 4), Tflops = Math.Round(gflops / 1e3, 6), Runs = times.Count,
                Note = $"{Chains} independent FMA chains in Vector{bits} registers, {iters:N0} iterations per thread, no memory traffic",
            });
            Console.WriteLine($"{"V" + bits,8} {threads,8} {gflops,10:F1} {gflops / threads,11:F1}");
        }
        o.WriteDoc(doc, "peak");
        return 0;
    }

    static double TimeThreads(Func<long, float> loop, long iters, int threads)
    {
        using var start = new Barrier(threads + 1);
        var done = new double[threads];
        var workers = Enumerable.Range(0, threads).Select(i => new Thread(() =>
        {
            start.SignalAndWait();
            long t0 = Stopwatch.GetTimestamp();
            float sink = loop(iters);
            done[i] = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            if (float.IsNaN(sink)) Console.Write("");   // keeps the result alive
        }) { IsBackground = true }).ToList();
        foreach (var w in workers) w.Start();
        start.SignalAndWait();
        foreach (var w in workers) w.Join();
        return done.Max();
    }
}
