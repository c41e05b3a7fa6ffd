using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Bench;

/// <summary>
/// Square fp32 GEMM (C = A·B, and A·Bᵀ as the engine's linear layers use it), ours against OpenBLAS cblas_sgemm.
/// `dotnet run -c Release --project bench -- --filter '*GemmBenchmarks*'`. Sizes default to 256, 512, 1024;
/// set FBD_GEMM_SIZES=256,512,1024,2048,4096 (or "all") for the large ones.
/// When OpenBLAS is missing its benchmarks fail in setup with a message naming the library to install.
/// </summary>
[Config(typeof(GemmConfig))]
[MemoryDiagnoser]
public class GemmBenchmarks
{
    public static IEnumerable<int> AllSizes => [256, 512, 1024, 2048, 4096];

    public static IEnumerable<int> Sizes()
    {
        var env = Environment.GetEnvironmentVariable("FBD_GEMM_SIZES");
        if (string.IsNullOrWhiteSpace(env)) return [256, 512, 1024];
        if (env.Trim() == "all") return AllSizes;
        return env.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse);
    }

    [ParamsSource(nameof(Sizes))]
    public int Size { get; set; }

    float[] a = [], b = [], c = [];

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        a = new float[Size * Size]; b = new float[Size * Size]; c = new float[Size * Size];
        for (int i = 0; i < a.Length; i++) { a[i] = rng.NextSingle() - 0.5f; b[i] = rng.NextSingle() - 0.5f; }
    }

    [GlobalSetup(Targets = [nameof(OpenBlasNN), nameof(OpenBlasNT)])]
    public void SetupOpenBlas()
    {
        if (!OpenBlas.Available)
        {
            Console.WriteLine($"// OpenBLAS benchmark skipped: {OpenBlas.Error}");
            throw new NotSupportedException($"OpenBLAS benchmark unavailable: {OpenBlas.Error}");
        }
        Setup();
    }

    [Benchmark(Description = "ours A·B")]
    public void OursNN() => CpuGemm.Sgemm(false, false, Size, Size, Size, 1f, a, Size, b, Size, 0f, c, Size);

    [Benchmark(Description = "OpenBLAS A·B", Baseline = true)]
    public void OpenBlasNN() => OpenBlas.Sgemm(false, false, Size, Size, Size, 1f, a, Size, b, Size, 0f, c, Size);

    [Benchmark(Description = "ours A·Bᵀ")]
    public void OursNT() => CpuGemm.Sgemm(false, true, Size, Size, Size, 1f, a, Size, b, Size, 0f, c, Size);

    [Benchmark(Description = "OpenBLAS A·Bᵀ")]
    public void OpenBlasNT() => OpenBlas.Sgemm(false, true, Size, Size, Size, 1f, a, Size, b, Size, 0f, c, Size);
}

/// <summary>
/// The shapes the engine runs (A·Bᵀ as in its linear layers: tokens × out × in), ours against OpenBLAS:
/// training (2048 tokens), a vocabulary head, block decoding (16 or 64 rows) and one token.
/// </summary>
[Config(typeof(GemmConfig))]
[MemoryDiagnoser]
public class GemmShapeBenchmarks
{
    [Params("2048x768x256", "2048x256x768", "256x260x256", "64x768x256", "16x768x256", "1x768x256")]
    public string Shape { get; set; } = "";

    int m, n, k;
    float[] a = [], b = [], c = [];

    [GlobalSetup]
    public void Setup()
    {
        var d = Shape.Split('x').Select(int.Parse).ToArray();
        (m, n, k) = (d[0], d[1], d[2]);
        var rng = new Random(1);
        a = new float[m * k]; b = new float[n * k]; c = new float[m * n];
        for (int i = 0; i < a.Length; i++) a[i] = rng.NextSingle() - 0.5f;
        for (int i = 0; i < b.Length; i++) b[i] = rng.NextSingle() - 0.5f;
    }

    [GlobalSetup(Target = nameof(OpenBlasNT))]
    public void SetupOpenBlas()
    {
        if (!OpenBlas.Available)
        {
            Console.WriteLine($"// OpenBLAS benchmark skipped: {OpenBlas.Error}");
            throw new NotSupportedException($"OpenBLAS benchmark unavailable: {OpenBlas.Error}");
        }
        Setup();
    }

    [Benchmark(Description = "ours A·Bᵀ")]
    public void OursNT() => CpuGemm.Sgemm(false, true, m, n, k, 1f, a, k, b, k, 0f, c, n);

    [Benchmark(Description = "OpenBLAS A·Bᵀ", Baseline = true)]
    public void OpenBlasNT() => OpenBlas.Sgemm(false, true, m, n, k, 1f, a, k, b, k, 0f, c, n);
}

sealed class GemmConfig : ManualConfig
{
    public GemmConfig()
    {
        AddColumn(new GflopsColumn());
        WithOrderer(new BenchmarkDotNet.Order.DefaultOrderer(BenchmarkDotNet.Order.SummaryOrderPolicy.Declared));
    }
}

/// <summary>2·n³ / mean time, for square benchmarks with a Size parameter.</summary>
sealed class GflopsColumn : IColumn
{
    public string Id => "GFLOPs";
    public string ColumnName => "GFLOP/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "2·m·n·k floating-point operations divided by the mean time";
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var report = summary[benchmarkCase];
        if (report?.ResultStatistics is not { } stats) return "NA";
        double flops;
        if (benchmarkCase.Parameters.Items.FirstOrDefault(p => p.Name == "Size")?.Value is int n) flops = 2.0 * n * n * n;
        else if (benchmarkCase.Parameters.Items.FirstOrDefault(p => p.Name == "Shape")?.Value is string shape)
            flops = 2.0 * shape.Split('x').Select(double.Parse).Aggregate(1.0, (x, y) => x * y);
        else return "NA";
        return (flops / stats.Mean).ToString("F1"); // flops per ns = GFLOP/s
    }
}
