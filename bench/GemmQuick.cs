using System.Diagnostics;
using System.Text.Json;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Bench;

/// <summary>
/// `dotnet run -c Release --project bench -- gemm-quick [--sizes 256,512,1024] [--kernel auto|avx512|avx2|portable]
/// [--shapes MxNxK,...] [--transA] [--transB] [--model-shapes tiny,gpt2-6x512] [--batch N] [--threads N] [--small-off]
/// [--openblas-core best|env|NAME] [--cpu-time] [--invariant] [--no-json]`: fp32 GEMM, ours against OpenBLAS (calls alternating), median of several timed runs after
/// warm-up, printed as GFLOP/s and as a share of the machine's FMA peak measured in the same run, written to
/// bench/results/&lt;date&gt;-cpu-gemm.json. `--model-shapes` replaces the shapes with every GEMM the models run in a
/// training step (forward X·Wᵀ, dW = dYᵀ·X, dX = dY·W of each linear layer and the vocabulary head, with their
/// transposes and beta) plus 1024³. OpenBLAS runs its fastest kernels for this CPU unless `--openblas-core` says otherwise
/// (see <see cref="OpenBlas"/>), on as many threads as ours. `--cpu-time` times one thread by its CPU time instead of the
/// wall clock (<see cref="ThreadCpuClock"/>): on a machine other jobs keep busy, a steadier comparison of the kernels.
/// </summary>
public static class GemmQuick
{
    /// <summary>One product: op(A) M×K, op(B) K×N; Label names where the model runs it.</summary>
    public readonly record struct GemmShape(string Label, int M, int N, int K, bool TransA, bool TransB, float Beta);

    public static int Run(string[] args)
    {
        (int M, int N, int K)[] shapes = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024)];
        var kernel = GemmKernel.Auto;
        bool json = true, transA = false, transB = false, allowSmall = true, invariant = false, cpuTime = false;
        int threads = 0, batch = 0;
        string? presets = null;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--sizes": shapes = args[++i].Split(',').Select(int.Parse).Select(x => (x, x, x)).ToArray(); break;
                case "--shapes": // MxNxK,MxNxK,...
                    shapes = args[++i].Split(',').Select(t => t.Split('x').Select(int.Parse).ToArray()).Select(v => (v[0], v[1], v[2])).ToArray();
                    break;
                case "--model-shapes": presets = args[++i]; break;
                case "--batch": batch = int.Parse(args[++i]); break;
                case "--openblas-core": Environment.SetEnvironmentVariable("FBD_OPENBLAS_CORETYPE", args[++i]); break;
                case "--transA": transA = true; break;
                case "--threads": threads = int.Parse(args[++i]); break;
                case "--small-off": allowSmall = false; break;
                case "--invariant": invariant = true; break;   // the batch-invariant GEMM (what serving uses)
                case "--kernel": kernel = Enum.Parse<GemmKernel>(args[++i], ignoreCase: true); break;
                case "--transB": transB = true; break;
                case "--no-json": json = false; break;
                case "--cpu-time": cpuTime = true; break;   // thread CPU time, one thread: steadier on a busy machine
                default: Console.Error.WriteLine($"unknown option {args[i]}"); return 2;
            }
        }
        List<GemmShape> table;
        if (presets != null)
        {
            table = [];
            foreach (var name in presets.Split(','))
            {
                var preset = ModelShapes(name, batch);
                if (preset == null) { Console.Error.WriteLine($"unknown model shapes '{name}' (tiny, gpt2-6x512)"); return 2; }
                table.AddRange(preset.Where(s => !table.Any(t => t with { Label = "" } == s with { Label = "" })));
            }
            table.Add(new("square", 1024, 1024, 1024, false, false, 0f));
        }
        else table = shapes.Select(s => new GemmShape("", s.M, s.N, s.K, transA, transB, 0f)).ToList();

        if (cpuTime)
        {
            if (!ThreadCpuClock.Available) { Console.Error.WriteLine("--cpu-time needs Linux's CLOCK_THREAD_CPUTIME_ID"); return 2; }
            if (threads > 1) { Console.Error.WriteLine("--cpu-time times one thread: use it with --threads 1 (or alone)"); return 2; }
            threads = 1;
        }
        if (kernel == GemmKernel.Auto) kernel = CpuGemm.Best;
        int peakThreads = threads > 0 ? Math.Min(threads, Environment.ProcessorCount) : Environment.ProcessorCount;
        string device = BenchEnv.Device();
        string loadStart = BenchEnv.LoadAverage();
        Console.WriteLine($"device: {device}; load average {loadStart}");
        Console.WriteLine($"ours: CpuGemm kernel {kernel}, {peakThreads} threads{(presets == null ? $"; transA={transA} transB={transB}" : "")}{(invariant ? ", batch-invariant" : "")}");
        if (OpenBlas.Available) OpenBlas.SetThreads(peakThreads);
        Console.WriteLine(OpenBlas.Available
            ? $"OpenBLAS: {OpenBlas.LibraryName} ({OpenBlas.Config}), {peakThreads} threads; core type: {OpenBlas.Core ?? "unknown"}" +
              (OpenBlas.RequestedCore is { } rc ? $" (asked for {rc}; the environment's OPENBLAS_CORETYPE: {OpenBlas.AmbientCore ?? "unset"}, `--openblas-core env` keeps it)" : "")
            : $"OpenBLAS: unavailable: {OpenBlas.Error}");
        var peaks = new List<double>();
        for (int i = 0; i < 3; i++) peaks.Add(FmaPeak.Measure(peakThreads, 0.2, cpuTime));
        Console.WriteLine($"FMA peak ({peakThreads} threads, {FmaPeak.Width()} lanes, independent chains): {Median(peaks):F1} GFLOP/s (re-measured after every shape; the shares use the median)");
        Console.WriteLine($"{"",-24} {"m x n x k",20} {"op",3} {"ours GF/s",10} {"OpenBLAS GF/s",14} {"ratio",6} {"ours %pk",9} {"BLAS %pk",9}");

        var results = new List<Dictionary<string, object?>>();
        var rows = new List<(GemmShape S, double Ours, double? Blas)>();
        var rng = new Random(1);
        foreach (var shape in table)
        {
            var (_, m, n, k, ta, tb, beta) = shape;
            var a = new float[(long)m * k]; var b = new float[(long)k * n]; var c = new float[(long)m * n];
            int lda = ta ? m : k, ldb = tb ? k : n;
            for (int i = 0; i < a.Length; i++) a[i] = rng.NextSingle() - 0.5f;
            for (int i = 0; i < b.Length; i++) b[i] = rng.NextSingle() - 0.5f;
            double flops = 2.0 * m * n * k;
            Action oursCall = () => CpuGemm.Sgemm(ta, tb, m, n, k, 1f, a, lda, b, ldb, beta, c, n, kernel: kernel, maxThreads: threads, allowSmallPath: allowSmall, batchInvariant: invariant);
            Action? blasCall = OpenBlas.Available ? () => OpenBlas.Sgemm(ta, tb, m, n, k, 1f, a, lda, b, ldb, beta, c, n) : null;
            var (oursTimes, blasTimes) = Time(oursCall, blasCall, cpuTime);
            peaks.Add(FmaPeak.Measure(peakThreads, 0.1, cpuTime));
            double ours = Median(oursTimes);
            double? blas = blasTimes is { } bts ? Median(bts) : null;
            rows.Add((shape, ours, blas));
            double oursGf = flops / ours / 1e9;
            double? blasGf = blas is { } t ? flops / t / 1e9 : null;
            double? ratio = blasGf is { } bg ? oursGf / bg : null;
            double peak = Median(peaks);
            string op = $"{(ta ? 'T' : 'N')}{(tb ? 'T' : 'N')}";
            Console.WriteLine($"{shape.Label,-24} {$"{m}x{n}x{k}",20} {op,3} {oursGf,10:F1} {(blasGf is { } x ? x.ToString("F1") : "n/a"),14} {(ratio is { } r ? r.ToString("F2") : "n/a"),6} " +
                $"{100 * oursGf / peak,8:F1}% {(blasGf is { } y ? (100 * y / peak).ToString("F1") + "%" : "n/a"),9}");
            results.Add(new()
            {
                ["label"] = shape.Label, ["m"] = m, ["n"] = n, ["k"] = k, ["transA"] = ta, ["transB"] = tb, ["beta"] = beta,
                ["ours_ms"] = Math.Round(ours * 1e3, 4), ["ours_gflops"] = Math.Round(oursGf, 2),
                ["ours_best_gflops"] = Math.Round(flops / oursTimes.Min() / 1e9, 2), ["runs"] = oursTimes.Count,
                ["openblas_ms"] = blas is { } bt ? Math.Round(bt * 1e3, 4) : null,
                ["openblas_gflops"] = blasGf is { } bg2 ? Math.Round(bg2, 2) : null,
                ["openblas_best_gflops"] = blasTimes is { Count: > 0 } bt2 ? Math.Round(flops / bt2.Min() / 1e9, 2) : null,
                ["ratio_ours_over_openblas"] = ratio is { } rr ? Math.Round(rr, 3) : null,
            });
        }
        double fmaPeak = Median(peaks);
        foreach (var r in results)
        {
            r["ours_share_of_peak"] = Math.Round((double)r["ours_gflops"]! / fmaPeak, 4);
            if (r["openblas_gflops"] is double bg) r["openblas_share_of_peak"] = Math.Round(bg / fmaPeak, 4);
        }
        if (rows.Count > 1 && rows.All(x => x.Blas != null))
        {
            // the ratio of the summed times: what the whole table (a training step's GEMMs, for a preset) gains
            double so = rows.Sum(x => x.Ours), sb = rows.Sum(x => x.Blas!.Value);
            Console.WriteLine($"all shapes: ours {so * 1e3:F1} ms, OpenBLAS {sb * 1e3:F1} ms, OpenBLAS time / ours {sb / so:F2}; " +
                $"lowest ratio {rows.Min(x => x.Blas!.Value / x.Ours):F2}; FMA peak {fmaPeak:F1} GFLOP/s; load average {BenchEnv.LoadAverage()}");
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
                ["threads"] = peakThreads,
                ["openblas"] = OpenBlas.Available ? $"{OpenBlas.LibraryName}: {OpenBlas.Config}" : $"unavailable: {OpenBlas.Error}",
                ["openblas_core"] = OpenBlas.Core,
                ["openblas_core_requested"] = OpenBlas.RequestedCore,
                ["fma_peak_gflops"] = Math.Round(fmaPeak, 1),
                ["clock"] = cpuTime ? "thread CPU time (one thread)" : "wall",
                ["timing"] = "median (and best) wall time of >= 7 runs (and >= 0.3 s each), ours and OpenBLAS alternating, after >= 0.5 s of warm-up each; fp32, alpha=1, beta as listed (0 unless a preset says otherwise), row-major; FMA peak: median of measurements before the table and after every shape",
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
    /// The GEMMs of one training step of a model (DESIGN.md 5; engine/Model/Denoiser.cs's Linear and LinearBackward):
    /// per linear layer [in → out] over `rows` = batch·2L tokens, forward y = x·Wᵀ (N T), dW += dyᵀ·x (T N, beta 1) and
    /// dx = dy·W (N N); the vocabulary head sees batch·L rows (the noised half). Null for an unknown name.
    /// </summary>
    public static List<GemmShape>? ModelShapes(string name, int batch)
    {
        (int D, int Mlp, int L, int V, int B)? model = name switch
        {
            "tiny" => (256, 1024, 256, 260, 8),
            "gpt2-6x512" => (512, 2048, 512, 50258, 4),
            _ => null,
        };
        if (model is not { } mdl) return null;
        var (d, mlp, len, vocab, b) = mdl;
        if (batch > 0) b = batch;
        int rows = b * 2 * len, headRows = b * len;
        var list = new List<GemmShape>();
        foreach (var (layer, inDim, outDim, r) in new[] { ("qkv", d, 3 * d, rows), ("attn_out", d, d, rows), ("mlp.0", d, mlp, rows), ("mlp.2", mlp, d, rows), ("head", d, vocab, headRows) })
        {
            list.Add(new($"{name} {layer} fwd", r, outDim, inDim, false, true, 0f));
            list.Add(new($"{name} {layer} dW", outDim, inDim, r, true, false, 1f));
            list.Add(new($"{name} {layer} dX", r, inDim, outDim, false, false, 0f));
        }
        return list;
    }

    /// <summary>
    /// Seconds per call of f (and g): warm-up of at least 3 calls and 0.5 s each, then at least 7 timed calls and
    /// 0.3 s, alternating f and g so that both see the same background load.
    /// </summary>
    static (List<double> F, List<double>? G) Time(Action f, Action? g, bool cpuTime)
    {
        Func<double> now = cpuTime ? ThreadCpuClock.Now : () => Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency;
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
            double t0 = now();
            f();
            tf.Add(now() - t0);
            if (g == null) continue;
            t0 = now();
            g();
            tg!.Add(now() - t0);
        }
        return (tf, tg);
    }

    static double Median(List<double> times)
    {
        var t = times.Order().ToList();
        return t[t.Count / 2];
    }
}
