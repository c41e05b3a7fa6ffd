using System.Diagnostics;
using System.Text.Json;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Bench;

/// <summary>
/// `dotnet run -c Release --project bench -- gemm-quick [--sizes 256,512,1024] [--kernel auto|avx512|avx2|portable]
/// [--shapes MxNxK,...] [--transA] [--transB] [--threads N] [--small-off] [--invariant] [--no-json]`: fp32 GEMM, ours against
/// OpenBLAS (calls alternating), median of several timed runs after warm-up,
/// printed as GFLOP/s and written to bench/results/&lt;date&gt;-cpu-gemm.json.
/// </summary>
public static class GemmQuick
{
    public static int Run(string[] args)
    {
        (int M, int N, int K)[] shapes = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024)];
        var kernel = GemmKernel.Auto;
        bool json = true, transA = false, transB = false, allowSmall = true, invariant = false;
        int threads = 0;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--sizes": shapes = args[++i].Split(',').Select(int.Parse).Select(x => (x, x, x)).ToArray(); break;
                case "--shapes": // MxNxK,MxNxK,...
                    shapes = args[++i].Split(',').Select(t => t.Split('x').Select(int.Parse).ToArray()).Select(v => (v[0], v[1], v[2])).ToArray();
                    break;
                case "--transA": transA = true; break;
                case "--threads": threads = int.Parse(args[++i]); break;
                case "--small-off": allowSmall = false; break;
                case "--invariant": invariant = true; break;   // the batch-invariant GEMM (what serving uses)
                case "--kernel": kernel = Enum.Parse<GemmKernel>(args[++i], ignoreCase: true); break;
                case "--transB": transB = true; break;
                case "--no-json": json = false; break;
                default: Console.Error.WriteLine($"unknown option {args[i]}"); return 2;
            }
        }
        if (kernel == GemmKernel.Auto) kernel = CpuGemm.Best;
        string device = BenchEnv.Device();
        string loadStart = BenchEnv.LoadAverage();
        Console.WriteLine($"device: {device}");
        Console.WriteLine($"ours: CpuGemm kernel {kernel}, {Environment.ProcessorCount} threads; transA={transA} transB={transB}{(invariant ? ", batch-invariant" : "")}");
        Console.WriteLine(OpenBlas.Available ? $"OpenBLAS: {OpenBlas.LibraryName} ({OpenBlas.Config})" : $"OpenBLAS: unavailable: {OpenBlas.Error}");
        Console.WriteLine($"{"m x n x k",16} {"ours GF/s",10} {"OpenBLAS GF/s",14} {"ratio",6}");

        var results = new List<Dictionary<string, object?>>();
        var rng = new Random(1);
        foreach (var (m, n, k) in shapes)
        {
            var a = new float[m * k]; var b = new float[k * n]; var c = new float[m * n];
            int lda = transA ? m : k, ldb = transB ? k : n;
            for (int i = 0; i < a.Length; i++) a[i] = rng.NextSingle() - 0.5f;
            for (int i = 0; i < b.Length; i++) b[i] = rng.NextSingle() - 0.5f;
            double flops = 2.0 * m * n * k;
            Action oursCall = () => CpuGemm.Sgemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c, n, kernel: kernel, maxThreads: threads, allowSmallPath: allowSmall, batchInvariant: invariant);
            Action? blasCall = OpenBlas.Available ? () => OpenBlas.Sgemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c, n) : null;
            var (oursTimes, blasTimes) = Time(oursCall, blasCall);
            double ours = Median(oursTimes);
            double? blas = blasTimes is { } bts ? Median(bts) : null;
            double oursGf = flops / ours / 1e9;
            double? blasGf = blas is { } t ? flops / t / 1e9 : null;
            double? ratio = blasGf is { } bg ? oursGf / bg : null;
            Console.WriteLine($"{$"{m}x{n}x{k}",16} {oursGf,10:F1} {(blasGf is { } x ? x.ToString("F1") : "n/a"),14} {(ratio is { } r ? r.ToString("F2") : "n/a"),6}");
            results.Add(new()
            {
                ["m"] = m, ["n"] = n, ["k"] = k, ["transA"] = transA, ["transB"] = transB,
                ["ours_ms"] = Math.Round(ours * 1e3, 4), ["ours_gflops"] = Math.Round(oursGf, 2),
                ["ours_best_gflops"] = Math.Round(flops / oursTimes.Min() / 1e9, 2), ["runs"] = oursTimes.Count,
                ["openblas_ms"] = blas is { } bt ? Math.Round(bt * 1e3, 4) : null,
                ["openblas_gflops"] = blasGf is { } bg2 ? Math.Round(bg2, 2) : null,
                ["openblas_best_gflops"] = blasTimes is { Count: > 0 } bt2 ? Math.Round(flops / bt2.Min() / 1e9, 2) : null,
                ["ratio_ours_over_openblas"] = ratio is { } rr ? Math.Round(rr, 3) : null,
            });
        }

        if (json)
        {
            var doc = new Dictionary<string, object?>
            {
                ["device"] = device,
                ["commit"] = BenchEnv.Git("rev-parse HEAD"),
                ["command"] = "dotnet run -c Release --project bench -- gemm-quick" + (args.Length > 0 ? " " + string.Join(' ', args) : ""),
                ["date_utc"] = DateTime.UtcNow.ToString("O"),
                ["runtime"] = System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription,
                ["kernel"] = kernel.ToString(),
                ["batch_invariant"] = invariant,
                ["threads"] = Environment.ProcessorCount,
                ["openblas"] = OpenBlas.Available ? $"{OpenBlas.LibraryName}: {OpenBlas.Config}" : $"unavailable: {OpenBlas.Error}",
                ["timing"] = "median (and best) wall time of >= 7 runs (and >= 0.3 s each), ours and OpenBLAS alternating, after >= 0.5 s of warm-up each; fp32, alpha=1, beta=0, row-major",
                ["loadavg_start"] = loadStart,
                ["loadavg_end"] = BenchEnv.LoadAverage(),
                ["note"] = "shared 2-core machine: other jobs may run at the same time; the load averages say how busy it was",
                ["results"] = results,
            };
            string dir = Path.Combine(BenchEnv.RepoRoot(), "bench", "results");
            Directory.CreateDirectory(dir);
            string file = Path.Combine(dir, $"{DateTime.UtcNow:yyyy-MM-dd}-cpu-gemm.json");
            File.WriteAllText(file, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }) + "\n");
            Console.WriteLine($"wrote {file}");
        }
        return 0;
    }

    /// <summary>
    /// Seconds per call of f (and g): warm-up of at least 3 calls and 0.5 s each, then at least 7 timed calls and
    /// 0.3 s, alternating f and g so that both see the same background load.
    /// </summary>
    static (List<double> F, List<double>? G) Time(Action f, Action? g)
    {
        // Warm-up: tiered JIT must have promoted everything on the path.
        foreach (var h in g == null ? [f] : new[] { f, g })
        {
            var warm = Stopwatch.StartNew();
            for (int i = 0; i < 3 || warm.Elapsed.TotalSeconds < 0.5; i++) h();
        }
        var tf = new List<double>(); var tg = g == null ? null : new List<double>();
        var total = Stopwatch.StartNew();
        while (tf.Count < 7 || (total.Elapsed.TotalSeconds < 0.3 * (g == null ? 1 : 2) && tf.Count < 1000))
        {
            long t0 = Stopwatch.GetTimestamp();
            f();
            tf.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
            if (g == null) continue;
            t0 = Stopwatch.GetTimestamp();
            g();
            tg!.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
        }
        return (tf, tg);
    }

    static double Median(List<double> times)
    {
        var t = times.Order().ToList();
        return t[t.Count / 2];
    }
}
