using System.Diagnostics;
using System.Text.Json;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Bench;

/// <summary>
/// `dotnet run -c Release --project bench -- gemm-quick [--sizes 256,512,1024] [--kernel auto|avx512|avx2|portable]
/// [--transB] [--no-json]`: square fp32 GEMM, ours against OpenBLAS, median of several timed runs after warm-up,
/// printed as GFLOP/s and written to bench/results/&lt;date&gt;-cpu-gemm.json.
/// </summary>
public static class GemmQuick
{
    public static int Run(string[] args)
    {
        int[] sizes = [256, 512, 1024];
        var kernel = GemmKernel.Auto;
        bool json = true, transB = false;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--sizes": sizes = args[++i].Split(',').Select(int.Parse).ToArray(); break;
                case "--kernel": kernel = Enum.Parse<GemmKernel>(args[++i], ignoreCase: true); break;
                case "--transB": transB = true; break;
                case "--no-json": json = false; break;
                default: Console.Error.WriteLine($"unknown option {args[i]}"); return 2;
            }
        }
        if (kernel == GemmKernel.Auto) kernel = CpuGemm.Best;
        string device = Device();
        Console.WriteLine($"device: {device}");
        Console.WriteLine($"ours: CpuGemm kernel {kernel}, {Environment.ProcessorCount} threads; transB={transB}");
        Console.WriteLine(OpenBlas.Available ? $"OpenBLAS: {OpenBlas.LibraryName} ({OpenBlas.Config})" : $"OpenBLAS: unavailable: {OpenBlas.Error}");
        Console.WriteLine($"{"size",6} {"ours GF/s",10} {"OpenBLAS GF/s",14} {"ratio",6}");

        var results = new List<Dictionary<string, object?>>();
        var rng = new Random(1);
        foreach (int s in sizes)
        {
            var a = new float[s * s]; var b = new float[s * s]; var c = new float[s * s];
            for (int i = 0; i < a.Length; i++) { a[i] = rng.NextSingle() - 0.5f; b[i] = rng.NextSingle() - 0.5f; }
            double flops = 2.0 * s * s * s;
            double ours = Median(() => CpuGemm.Sgemm(false, transB, s, s, s, 1f, a, s, b, s, 0f, c, s, kernel: kernel), flops);
            double? blas = OpenBlas.Available ? Median(() => OpenBlas.Sgemm(false, transB, s, s, s, 1f, a, s, b, s, 0f, c, s), flops) : null;
            double oursGf = flops / ours / 1e9;
            double? blasGf = blas is { } t ? flops / t / 1e9 : null;
            double? ratio = blasGf is { } bg ? oursGf / bg : null;
            Console.WriteLine($"{s,6} {oursGf,10:F1} {(blasGf is { } x ? x.ToString("F1") : "n/a"),14} {(ratio is { } r ? r.ToString("F2") : "n/a"),6}");
            results.Add(new()
            {
                ["m"] = s, ["n"] = s, ["k"] = s, ["transA"] = false, ["transB"] = transB,
                ["ours_ms"] = Math.Round(ours * 1e3, 4), ["ours_gflops"] = Math.Round(oursGf, 2),
                ["openblas_ms"] = blas is { } bt ? Math.Round(bt * 1e3, 4) : null,
                ["openblas_gflops"] = blasGf is { } bg2 ? Math.Round(bg2, 2) : null,
                ["ratio_ours_over_openblas"] = ratio is { } rr ? Math.Round(rr, 3) : null,
            });
        }

        if (json)
        {
            var doc = new Dictionary<string, object?>
            {
                ["device"] = device,
                ["commit"] = Git("rev-parse HEAD"),
                ["command"] = "dotnet run -c Release --project bench -- gemm-quick" + (args.Length > 0 ? " " + string.Join(' ', args) : ""),
                ["date_utc"] = DateTime.UtcNow.ToString("O"),
                ["runtime"] = System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription,
                ["kernel"] = kernel.ToString(),
                ["threads"] = Environment.ProcessorCount,
                ["openblas"] = OpenBlas.Available ? $"{OpenBlas.LibraryName}: {OpenBlas.Config}" : $"unavailable: {OpenBlas.Error}",
                ["timing"] = "median wall time of >= 7 runs (and >= 0.3 s) after 3 warm-up runs; dtype fp32, alpha=1, beta=0",
                ["results"] = results,
            };
            string dir = Path.Combine(RepoRoot(), "bench", "results");
            Directory.CreateDirectory(dir);
            string file = Path.Combine(dir, $"{DateTime.UtcNow:yyyy-MM-dd}-cpu-gemm.json");
            File.WriteAllText(file, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }) + "\n");
            Console.WriteLine($"wrote {file}");
        }
        return 0;
    }

    /// <summary>Median seconds of one call: 3 warm-up calls, then at least 7 timed calls and 0.3 s.</summary>
    static double Median(Action f, double flops)
    {
        for (int i = 0; i < 3; i++) f();
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (times.Count < 7 || (total.Elapsed.TotalSeconds < 0.3 && times.Count < 1000))
        {
            long t0 = Stopwatch.GetTimestamp();
            f();
            times.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }

    public static string Device()
    {
        string model = "unknown CPU";
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"));
            if (line != null) model = line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return $"{model}, {Environment.ProcessorCount} cores";
    }

    static string RepoRoot()
    {
        for (var d = new DirectoryInfo(Environment.CurrentDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "FastBlockDiff.sln"))) return d.FullName;
        return Git("rev-parse --show-toplevel") ?? Environment.CurrentDirectory;
    }

    static string? Git(string arguments)
    {
        try
        {
            var psi = new ProcessStartInfo("git", arguments) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            using var p = Process.Start(psi)!;
            string s = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return p.ExitCode == 0 ? s : null;
        }
        catch (System.ComponentModel.Win32Exception) { return null; }
    }
}
