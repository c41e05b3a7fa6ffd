using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Bench;

// BenchmarkDotNet suites of the engine's ops and end-to-end paths. Run e.g.
//   dotnet run -c Release --project bench -- --filter '*AttentionBenchmarks*'
// Parameter sets are small enough for a CPU; widen them with environment variables (comma lists):
//   FBD_BENCH_BACKENDS=cpu,cuda,ilgpu  (every name BackendChoice.Create accepts; one that cannot start fails its setup
//                                       with the reason, the others still run)
//   FBD_BENCH_L, FBD_BENCH_LP, FBD_BENCH_BATCH, FBD_BENCH_HEADS, FBD_BENCH_HEADDIM, FBD_BENCH_CACHE, FBD_BENCH_PRECISION
// Precision: the CPU backend computes fp32 only; a GPU backend that offers bf16 takes its name from FBD_BENCH_PRECISION.

/// <summary>Parameter sources shared by the suites (environment overrides, CPU-sized defaults).</summary>
public static class BenchParams
{
    public static IEnumerable<int> Ints(string env, params int[] defaults)
    {
        var s = Environment.GetEnvironmentVariable(env);
        return string.IsNullOrWhiteSpace(s) ? defaults
            : s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
    }

    public static IEnumerable<string> Strings(string env, params string[] defaults)
    {
        var s = Environment.GetEnvironmentVariable(env);
        return string.IsNullOrWhiteSpace(s) ? defaults : s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    }

    public static IEnumerable<string> Backends() => Strings("FBD_BENCH_BACKENDS", "cpu");
    public static IEnumerable<string> Precisions() => Strings("FBD_BENCH_PRECISION", "fp32");

    public static IBackend Create(string name, string precision)
    {
        // throws with the reason when the backend cannot start or has no such precision (bf16 is CUDA only)
        return BackendChoice.Create(name, precision).Backend;
    }

    public static FloatView Random(IBackend b, int n, int seed)
    {
        var rng = new Random(seed);
        var host = new float[n];
        for (int i = 0; i < n; i++) host[i] = rng.NextSingle() * 2 - 1;
        var v = b.AllocFloat(n);
        b.Upload(v, host);
        return v;
    }
}

/// <summary>Short jobs (1 launch, 3 warm-up, 5 measured iterations) and the throughput columns.</summary>
public sealed class EngineBenchConfig : ManualConfig
{
    public EngineBenchConfig()
    {
        AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(3).WithIterationCount(5).WithId("short"));
        AddColumn(new ThroughputColumn(tokens: false));
        AddColumn(new ThroughputColumn(tokens: true));
        WithOrderer(new BenchmarkDotNet.Order.DefaultOrderer(BenchmarkDotNet.Order.SummaryOrderPolicy.Declared));
    }
}

/// <summary>
/// TFLOP/s (attention: useful FLOPs on allowed pairs, see <see cref="BenchEnv.FlopsConvention"/>) or tokens/s
/// (training: Batch·L per step; sampling: Batch·Tokens per generation), from the case's parameters and the mean time.
/// </summary>
public sealed class ThroughputColumn(bool tokens) : IColumn
{
    public string Id => tokens ? "TokensPerS" : "TFLOPs";
    public string ColumnName => tokens ? "tokens/s" : "TFLOP/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => tokens ? 1 : 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => tokens ? "tokens processed (training) or generated (sampling) per second of mean time"
        : "useful floating-point operations (allowed query-key pairs only) per second of mean time, 1e12";
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase c, SummaryStyle style)
    {
        if (summary[c]?.ResultStatistics is not { } stats) return "NA";
        double seconds = stats.Mean * 1e-9;
        int P(string name) => c.Parameters.Items.FirstOrDefault(p => p.Name == name)?.Value is int v ? v : 0;
        string method = c.Descriptor.WorkloadMethod.Name;
        if (tokens)
        {
            if (c.Descriptor.Type == typeof(TrainStepBenchmarks)) return (P("Batch") * P("L") / seconds).ToString("N0");
            if (c.Descriptor.Type == typeof(SamplingBenchmarks)) return (P("Batch") * P("Tokens") / seconds).ToString("N1");
            return "-";
        }
        double flops;
        if (c.Descriptor.Type == typeof(AttentionBenchmarks))
        {
            bool causal = method.StartsWith("Causal", StringComparison.Ordinal);
            var s = causal ? new AttentionShape(P("Batch"), P("Heads"), P("HeadDim"), P("L"), MaskKind.Causal, 1)
                : new AttentionShape(P("Batch"), P("Heads"), P("HeadDim"), 2 * P("L"), MaskKind.Bd3, P("Lp"));
            flops = method.Contains("Backward") ? AttentionCounts.BackwardFlops(s) : AttentionCounts.ForwardFlops(s);
        }
        else if (c.Descriptor.Type == typeof(DecodeBenchmarks))
            flops = 4.0 * P("HeadDim") * P("Lp") * (double)(P("CacheLen") + P("Lp")) * P("Batch") * P("Heads");
        else return "-";
        return (flops / seconds / 1e12).ToString("F4");
    }
}

/// <summary>
/// Training-shape attention: BD3 over 2L tokens (ours with tile skipping, and the dense masked peer on the CPU backend),
/// and token-causal over L tokens.
/// </summary>
[Config(typeof(EngineBenchConfig))]
public class AttentionBenchmarks
{
    public static IEnumerable<string> Backends() => BenchParams.Backends();
    public static IEnumerable<string> Precisions() => BenchParams.Precisions();
    public static IEnumerable<int> Ls() => BenchParams.Ints("FBD_BENCH_L", 256, 1024);
    public static IEnumerable<int> Lps() => BenchParams.Ints("FBD_BENCH_LP", 4, 16);
    public static IEnumerable<int> Batches() => BenchParams.Ints("FBD_BENCH_BATCH", 1);
    public static IEnumerable<int> HeadCounts() => BenchParams.Ints("FBD_BENCH_HEADS", 4);
    public static IEnumerable<int> HeadDims() => BenchParams.Ints("FBD_BENCH_HEADDIM", 64);

    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";
    [ParamsSource(nameof(Precisions))] public string Precision { get; set; } = "fp32";
    [ParamsSource(nameof(Ls))] public int L { get; set; }
    [ParamsSource(nameof(Lps))] public int Lp { get; set; }
    [ParamsSource(nameof(Batches))] public int Batch { get; set; }
    [ParamsSource(nameof(HeadCounts))] public int Heads { get; set; }
    [ParamsSource(nameof(HeadDims))] public int HeadDim { get; set; }

    IBackend _b = null!;
    AttentionShape _bd3, _causal;
    FloatView _qkv, _out, _lse, _dOut, _dQkv, _cQkv, _cOut, _cLse, _cdOut, _cdQkv;
    DenseMaskedAttention? _dense;

    [GlobalSetup]
    public void Setup()
    {
        _b = BenchParams.Create(Backend, Precision);
        _bd3 = new AttentionShape(Batch, Heads, HeadDim, 2 * L, MaskKind.Bd3, Lp);
        _causal = new AttentionShape(Batch, Heads, HeadDim, L, MaskKind.Causal, 1);
        int D = Heads * HeadDim, r = Batch * 2 * L, rc = Batch * L;
        _qkv = BenchParams.Random(_b, r * 3 * D, 1); _dOut = BenchParams.Random(_b, r * D, 2);
        _out = _b.AllocFloat(r * D); _lse = _b.AllocFloat(r * Heads); _dQkv = _b.AllocFloat(r * 3 * D);
        _cQkv = BenchParams.Random(_b, rc * 3 * D, 3); _cdOut = BenchParams.Random(_b, rc * D, 4);
        _cOut = _b.AllocFloat(rc * D); _cLse = _b.AllocFloat(rc * Heads); _cdQkv = _b.AllocFloat(rc * 3 * D);
        _b.AttentionForward(_bd3, _qkv, _out, _lse);
        _b.AttentionForward(_causal, _cQkv, _cOut, _cLse);
        _b.Synchronize();
        if (_b is CpuBackend) _dense = new DenseMaskedAttention(_b, _bd3);
    }

    [GlobalCleanup] public void Cleanup() { _dense?.Dispose(); _b.Dispose(); }

    [Benchmark(Description = "BD3 fwd (tile skipping)")]
    public void Bd3Forward() { _b.AttentionForward(_bd3, _qkv, _out, _lse); _b.Synchronize(); }

    [Benchmark(Description = "BD3 bwd (tile skipping)")]
    public void Bd3Backward() { _b.AttentionBackward(_bd3, _qkv, _out, _lse, _dOut, _dQkv); _b.Synchronize(); }

    [Benchmark(Description = "BD3 fwd, dense masked peer")]
    public void Bd3DenseForward()
    {
        if (_dense is null) throw new NotSupportedException("the dense masked peer runs on the cpu backend only");
        _dense.Forward(_qkv, _out, _lse);
    }

    [Benchmark(Description = "BD3 bwd, dense masked peer")]
    public void Bd3DenseBackward()
    {
        if (_dense is null) throw new NotSupportedException("the dense masked peer runs on the cpu backend only");
        _dense.Backward(_qkv, _out, _lse, _dOut, _dQkv);
    }

    [Benchmark(Description = "causal fwd (L tokens)")]
    public void CausalForward() { _b.AttentionForward(_causal, _cQkv, _cOut, _cLse); _b.Synchronize(); }

    [Benchmark(Description = "causal bwd (L tokens)")]
    public void CausalBackward() { _b.AttentionBackward(_causal, _cQkv, _cOut, _cLse, _cdOut, _cdQkv); _b.Synchronize(); }
}

/// <summary>Block decode: L' queries against a KV cache of CacheLen rows plus their own block.</summary>
[Config(typeof(EngineBenchConfig))]
public class DecodeBenchmarks
{
    public static IEnumerable<string> Backends() => BenchParams.Backends();
    public static IEnumerable<string> Precisions() => BenchParams.Precisions();
    public static IEnumerable<int> Caches() => BenchParams.Ints("FBD_BENCH_CACHE", 256, 1024, 4096);
    public static IEnumerable<int> Lps() => BenchParams.Ints("FBD_BENCH_LP", 4, 16);
    public static IEnumerable<int> Batches() => BenchParams.Ints("FBD_BENCH_BATCH", 1);
    public static IEnumerable<int> HeadCounts() => BenchParams.Ints("FBD_BENCH_HEADS", 4);
    public static IEnumerable<int> HeadDims() => BenchParams.Ints("FBD_BENCH_HEADDIM", 64);

    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";
    [ParamsSource(nameof(Precisions))] public string Precision { get; set; } = "fp32";
    [ParamsSource(nameof(Caches))] public int CacheLen { get; set; }
    [ParamsSource(nameof(Lps))] public int Lp { get; set; }
    [ParamsSource(nameof(Batches))] public int Batch { get; set; }
    [ParamsSource(nameof(HeadCounts))] public int Heads { get; set; }
    [ParamsSource(nameof(HeadDims))] public int HeadDim { get; set; }

    IBackend _b = null!;
    DecodeShape _s;
    FloatView _qkv, _k, _v, _out;

    [GlobalSetup]
    public void Setup()
    {
        _b = BenchParams.Create(Backend, Precision);
        _s = new DecodeShape(Batch, Heads, HeadDim, Lp, CacheLen, CacheLen);
        int D = Heads * HeadDim;
        _qkv = BenchParams.Random(_b, Batch * Lp * 3 * D, 1);
        _k = BenchParams.Random(_b, Batch * CacheLen * D, 2); _v = BenchParams.Random(_b, Batch * CacheLen * D, 3);
        _out = _b.AllocFloat(Batch * Lp * D);
    }

    [GlobalCleanup] public void Cleanup() => _b.Dispose();

    [Benchmark(Description = "block decode vs cache")]
    public void Decode() { _b.DecodeAttention(_s, _qkv, _k, _v, _out); _b.Synchronize(); }
}

/// <summary>Fused SUBS log-softmax + weighted cross-entropy (loss and gradient) over [Rows, Vocab] logits.</summary>
[Config(typeof(EngineBenchConfig))]
public class NelboLossBenchmarks
{
    public static IEnumerable<string> Backends() => BenchParams.Backends();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";
    [Params(1024)] public int Rows { get; set; }
    [Params(260, 50258)] public int Vocab { get; set; }

    IBackend _b = null!;
    FloatView _logits, _work, _weights, _loss;
    IntView _targets;

    [GlobalSetup]
    public void Setup()
    {
        _b = BenchParams.Create(Backend, "fp32");
        _logits = BenchParams.Random(_b, Rows * Vocab, 1); _work = _b.AllocFloat(Rows * Vocab);
        var rng = new Random(2);
        _targets = _b.AllocInt(Rows); _b.Upload(_targets, Enumerable.Range(0, Rows).Select(_ => rng.Next(Vocab - 1)).ToArray());
        _weights = _b.AllocFloat(Rows); _b.Upload(_weights, Enumerable.Range(0, Rows).Select(i => i % 2 == 0 ? 0f : 2f).ToArray());
        _loss = _b.AllocFloat(Rows);
    }

    [GlobalCleanup] public void Cleanup() => _b.Dispose();

    [Benchmark(Baseline = true, Description = "copy logits (the op overwrites them)")]
    public void CopyOnly() { _b.Copy(_work, _logits); _b.Synchronize(); }

    [Benchmark(Description = "copy + SUBS CE with gradient")]
    public void CrossEntropyWithGrad()
    {
        _b.Copy(_work, _logits);
        _b.SubsCrossEntropy(_work, _targets, _weights, _loss, Rows, Vocab, Vocab - 1, 1f / Rows, writeGrad: true);
        _b.Synchronize();
    }
}

/// <summary>Fused AdamW over flat fp32 buffers.</summary>
[Config(typeof(EngineBenchConfig))]
public class AdamWBenchmarks
{
    public static IEnumerable<string> Backends() => BenchParams.Backends();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";
    [Params(1 << 20, 16 << 20)] public int Parameters { get; set; }

    IBackend _b = null!;
    FloatView _p, _g, _m, _v;
    int _step;

    [GlobalSetup]
    public void Setup()
    {
        _b = BenchParams.Create(Backend, "fp32");
        _p = BenchParams.Random(_b, Parameters, 1); _g = BenchParams.Random(_b, Parameters, 2);
        _m = _b.AllocFloat(Parameters); _v = _b.AllocFloat(Parameters);
    }

    [GlobalCleanup] public void Cleanup() => _b.Dispose();

    [Benchmark(Description = "AdamW step")]
    public void Step() { _b.AdamW(_p, _g, _m, _v, new AdamWStep(1e-5f, 0.9f, 0.999f, 1e-8f, 0.01f, ++_step, 1f)); _b.Synchronize(); }
}

/// <summary>A whole training step (Trainer.TrainStep) of a named model size; tokens/s = Batch·L / mean.</summary>
[Config(typeof(EngineBenchConfig))]
public class TrainStepBenchmarks
{
    public static IEnumerable<string> Backends() => BenchParams.Backends();
    public static IEnumerable<string> Models() => BenchParams.Strings("FBD_BENCH_MODEL", "tiny");
    public static IEnumerable<int> Ls() => BenchParams.Ints("FBD_BENCH_L", 256);
    public static IEnumerable<int> Lps() => BenchParams.Ints("FBD_BENCH_LP", 4, 16);
    public static IEnumerable<int> Batches() => BenchParams.Ints("FBD_BENCH_BATCH", 4);

    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";
    [ParamsSource(nameof(Models))] public string Model { get; set; } = "tiny";
    [ParamsSource(nameof(Ls))] public int L { get; set; }
    [ParamsSource(nameof(Lps))] public int Lp { get; set; }
    [ParamsSource(nameof(Batches))] public int Batch { get; set; }

    IBackend _b = null!;
    Trainer _t = null!;

    [GlobalSetup]
    public void Setup()
    {
        _b = BenchParams.Create(Backend, "fp32");
        var cfg = BenchModels.Build(Model, Model == "small" ? 50258 : 260, L, Lp);
        var model = new Denoiser(_b, cfg);
        model.Initialize(1, zeroInit: false);
        _t = new Trainer(model, new TrainOptions { BatchSize = Batch, Steps = int.MaxValue, WarmupSteps = 1, LearningRate = 1e-5f },
            new RandomBatchSource(L, cfg.VocabSize - 1, 3));
    }

    [GlobalCleanup] public void Cleanup() => _b.Dispose();

    [Benchmark(Description = "train step")]
    public void Step() { _t.TrainStep(); _b.Synchronize(); }
}

/// <summary>
/// Block sampling of a random tiny-width model (2 layers, width 64, byte vocabulary), with and without the KV cache.
/// tokens/s = Batch·Tokens / mean; the NFE count of the (deterministic) generation is printed by the setup.
/// </summary>
[Config(typeof(EngineBenchConfig))]
public class SamplingBenchmarks
{
    public static IEnumerable<string> Backends() => BenchParams.Backends();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";
    [Params(1024)] public int L { get; set; }
    [Params(16)] public int Lp { get; set; }
    [Params(1)] public int Batch { get; set; }
    [Params(256)] public int Tokens { get; set; }
    [Params(true, false)] public bool KvCache { get; set; }

    IBackend _b = null!;
    BlockSampler _s = null!;
    SamplingOptions _o = null!;

    [GlobalSetup]
    public void Setup()
    {
        _b = BenchParams.Create(Backend, "fp32");
        var cfg = BenchModels.Build("custom", 260, L, Lp);
        var model = new Denoiser(_b, cfg);
        model.Initialize(5, zeroInit: false);
        _s = new BlockSampler(model, 256, 257);
        _o = new SamplingOptions { MaxTokens = Tokens, StepsPerBlock = Lp, UseKvCache = KvCache, BatchSize = Batch, Seed = 11, StopOnEos = false, EntropyThreshold = 0f };
        var r = _s.Generate([], _o);
        Console.WriteLine($"// sampling {(KvCache ? "with" : "without")} KV cache: NFE = {r.Nfe}, cache passes = {r.CachePasses}, generated = {r.GeneratedTokens}");
    }

    [GlobalCleanup] public void Cleanup() => _b.Dispose();

    [Benchmark(Description = "generate")]
    public int Generate() => _s.Generate([], _o).Nfe;
}
