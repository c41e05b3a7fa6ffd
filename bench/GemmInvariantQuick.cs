using System.Diagnostics;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Bench;

/// <summary>
/// `bench gemm-invariant-quick [--shapes MxNxK,...] [--trans NT] [--seconds 1]`: the CPU GEMM's default
/// mode against its batch-invariant mode (what serving turns on), the two calls alternating one by one on the same
/// operands so that both see the same background load; median and best GFLOP/s of each and their ratio. --trans
/// gives op(A) and op(B): N or T each (NT, A·Bᵀ, is the layout of the linear layers).
/// </summary>
public static class GemmInvariantQuick
{
    public static int Run(string[] args)
    {
        var o = new QuickOptions(args);
        (int M, int N, int K)[] shapes = o.Get("shapes") is { } list
            ? list.Split(',').Select(t => t.Split('x').Select(int.Parse).ToArray()).Select(v => (v[0], v[1], v[2])).ToArray()
            : [(1, 768, 256), (4, 768, 256), (16, 768, 256), (64, 768, 256), (2048, 768, 256)];
        string trans = o.Str("trans", "NT");
        bool transA = trans[0] == 'T', transB = trans[1] == 'T';
        double seconds = double.Parse(o.Str("seconds", "1"), System.Globalization.CultureInfo.InvariantCulture);
        Console.WriteLine($"CpuGemm kernel {CpuGemm.Best}, {Environment.ProcessorCount} threads, transA={transA} transB={transB}, " +
            $"load {BenchEnv.LoadAverage()}; calls alternate default / invariant, {seconds} s of each after warm-up");
        Console.WriteLine($"{"m x n x k",16} {"default GF/s",13} {"invariant GF/s",15} {"invariant/default",18}   (median; best)");
        var rng = new Random(1);
        foreach (var (m, n, k) in shapes)
        {
            var a = new float[m * k]; var b = new float[k * n]; var c = new float[m * n];
            for (int i = 0; i < a.Length; i++) a[i] = rng.NextSingle() - 0.5f;
            for (int i = 0; i < b.Length; i++) b[i] = rng.NextSingle() - 0.5f;
            int lda = transA ? m : k, ldb = transB ? k : n;
            var times = new[] { new List<double>(), new List<double>() };
            for (int phase = 0; phase < 2; phase++)
            {
                var clock = Stopwatch.StartNew();
                for (int i = 0; i < 6 || clock.Elapsed.TotalSeconds < (phase == 0 ? 0.3 : 2 * seconds); i++)
                    for (int mode = 0; mode < 2; mode++)
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        CpuGemm.Sgemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c, n, batchInvariant: mode == 1);
                        if (phase == 1) times[mode].Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
                    }
            }
            double flops = 2.0 * m * n * k;
            double Median(List<double> t) => t.Order().ElementAt(t.Count / 2);
            double d = flops / Median(times[0]) / 1e9, v = flops / Median(times[1]) / 1e9;
            double db = flops / times[0].Min() / 1e9, vb = flops / times[1].Min() / 1e9;
            Console.WriteLine($"{$"{m}x{n}x{k}",16} {$"{d:F1}; {db:F1}",13} {$"{v:F1}; {vb:F1}",15} {$"{v / d:F2}; {vb / db:F2}",18}");
        }
        Console.WriteLine($"load at the end {BenchEnv.LoadAverage()}");
        return 0;
    }
}
