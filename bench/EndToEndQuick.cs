using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Bench;

/// <summary>Random token rows (uniform over the non-special ids), deterministic, for timing only.</summary>
public sealed class RandomBatchSource(int seqLen, int vocab, ulong seed) : IBatchSource
{
    readonly Rng _rng = new(seed);
    public int SequenceLength => seqLen;
    public void Next(Span<int> dst, int batch) { for (int i = 0; i < batch * seqLen; i++) dst[i] = _rng.NextInt(vocab); }
    public long[] SaveState() => [];
    public void RestoreState(long[] state) { }
}

/// <summary>Model configurations the end-to-end quick modes and benchmarks build.</summary>
public static class BenchModels
{
    /// <summary>
    /// "tiny" / "small" (DESIGN.md 5) or "custom" with --width/--layers/--heads. Vocabulary: --vocab (MASK included,
    /// MASK = vocab-1), default 260 (byte-level) for tiny/custom and 50258 (GPT-2 + MASK) for small.
    /// </summary>
    public static ModelConfig Build(string size, int vocab, int length, int blockSize, int width = 64, int layers = 2, int heads = 2)
    {
        if (size == "custom")
            return new ModelConfig
            {
                VocabSize = vocab, MaskId = vocab - 1, HiddenDim = width, CondDim = 128, Layers = layers, Heads = heads,
                ModelLength = length, BlockSize = blockSize,
            };
        return ModelConfig.Named(size, vocab, vocab - 1, length, blockSize);
    }

    public static ModelConfig FromOptions(QuickOptions o, string defaultSize, int length, int blockSize)
    {
        string size = o.Str("model", defaultSize);
        int vocab = o.Int("vocab", size == "small" ? 50258 : 260);
        return Build(size, vocab, length, blockSize, o.Int("width", 64), o.Int("layers", 2), o.Int("heads", 2));
    }

    public static Dictionary<string, System.Text.Json.Nodes.JsonNode?> Shape(ModelConfig c, int batch, string dtype, params (string, object)[] extra)
    {
        var x = new List<(string, object)> { ("V", c.VocabSize), ("width", c.HiddenDim), ("layers", c.Layers) };
        x.AddRange(extra);
        return BenchResult.MakeShape(batch, c.Heads, c.ModelLength, c.BlockSize, c.HeadDim, dtype, [.. x]);
    }
}

/// <summary>
/// `bench train-quick [--backend cpu] [--model tiny|small|custom] [--vocab V] [--L 256] [--Lp 4,16] [--batch 4]
/// [--budget S] [--out FILE]`: the fused SUBS cross-entropy (NELBO) forward+gradient, AdamW over all parameters,
/// and a whole training step (vectorised 2L forward, backward, gradient norm, AdamW, EMA) as tokens/s = batch·L / step.
/// </summary>
public static class TrainQuick
{
    public static int Run(string[] args)
    {
        var o = new QuickOptions(args, new() { ["L"] = "256", ["Lp"] = "4,16", ["batch"] = "4" });
        var doc = BenchDoc.ForThisRun("train-quick", args, "median wall time of >= 5 calls (more while under the budget) after warm-up");
        foreach (var b in o.StartedBackends())
        {
            string ours = "fastblockdiff-" + b.Name;
            int batch = o.Ints("batch")[0];
            foreach (int L in o.Ints("L"))
            foreach (int lp in o.Ints("Lp"))
            {
                var cfg = BenchModels.FromOptions(o, "tiny", L, lp);
                var model = new Denoiser(b, cfg);
                model.Initialize(1, zeroInit: false);
                Console.WriteLine($"backend {b.Name}; model {cfg.Layers}x{cfg.HiddenDim} ({cfg.Heads} heads), V={cfg.VocabSize}, {model.Params.Count:N0} parameters; L={L} L'={lp} batch={batch}");

                // fused NELBO cross-entropy over the noisy half's rows
                int rows = batch * L, V = cfg.VocabSize;
                var rng = new Random(7);
                var logitsHost = new float[rows * V];
                for (int i = 0; i < logitsHost.Length; i++) logitsHost[i] = rng.NextSingle() * 4 - 2;
                var targetsHost = new int[rows]; var weightsHost = new float[rows];
                for (int i = 0; i < rows; i++) { targetsHost[i] = rng.Next(V - 1); weightsHost[i] = rng.Next(2) == 0 ? 0f : 1f / (0.05f + rng.NextSingle()); }
                var logits = b.AllocFloat(rows * V); var targets = b.AllocInt(rows); var weights = b.AllocFloat(rows); var loss = b.AllocFloat(rows);
                b.Upload(targets, targetsHost); b.Upload(weights, weightsHost);
                var work = b.AllocFloat(rows * V);
                b.Upload(logits, logitsHost);
                // the op overwrites its input with the gradient: time copy+op and copy alone, report the difference
                var tce = QuickTimer.Time([
                    () => { b.Copy(work, logits); b.SubsCrossEntropy(work, targets, weights, loss, rows, V, cfg.MaskId, 1f / rows, true); b.Synchronize(); },
                    () => { b.Copy(work, logits); b.Synchronize(); },
                ], minRuns: o.MinRuns, budgetSeconds: o.Budget / 2);
                double ce = Math.Max(1e-9, QuickTimer.Median(tce[0]) - QuickTimer.Median(tce[1]));
                doc.Results.Add(new BenchResult
                {
                    Suite = "nelbo_ce", Impl = ours, Backend = b.Name, Shape = BenchModels.Shape(cfg, batch, o.Dtype, ("rows", rows)),
                    Ms = Math.Round(ce * 1e3, 4), TokensPerS = Math.Round(rows / ce, 1), Runs = tce[0].Count,
                    Note = "SUBS log-softmax + weighted CE, loss and gradient in one pass over [rows, V]; a copy of the logits timed alone is subtracted",
                });
                Console.WriteLine($"  nelbo_ce  rows={rows} V={V}: {ce * 1e3:F3} ms ({rows / ce:N0} rows/s)");
                foreach (var v in new[] { logits, work, loss, weights }) v.Storage.Dispose();

                // AdamW over all parameters
                int n = model.Params.Count;
                var m = b.AllocFloat(n); var vv = b.AllocFloat(n); var g = b.AllocFloat(n);
                b.Fill(g, 1e-3f);
                int step = 0;
                var ta = QuickTimer.Time([() => { b.AdamW(model.Weights, g, m, vv, new AdamWStep(1e-5f, 0.9f, 0.999f, 1e-8f, 0f, ++step, 1f)); b.Synchronize(); }],
                    minRuns: o.MinRuns, budgetSeconds: o.Budget / 2);
                double adam = QuickTimer.Median(ta[0]);
                doc.Results.Add(new BenchResult
                {
                    Suite = "adamw", Impl = ours, Backend = b.Name, Shape = BenchModels.Shape(cfg, batch, o.Dtype, ("params", n)),
                    Ms = Math.Round(adam * 1e3, 4), Runs = ta[0].Count, Note = $"fused AdamW over {n} fp32 parameters ({16.0 * n / adam / 1e9:F1} GB/s counting 4 reads + 3 writes… as 16 B/param)",
                });
                Console.WriteLine($"  adamw     {n:N0} params: {adam * 1e3:F3} ms");
                foreach (var x in new[] { m, vv, g }) x.Storage.Dispose();

                // a whole training step
                model.Initialize(1, zeroInit: false);
                var trainer = new Trainer(model, new TrainOptions { BatchSize = batch, Steps = int.MaxValue, WarmupSteps = 1, LearningRate = 1e-5f },
                    new RandomBatchSource(L, cfg.VocabSize - 1, 3));
                // the device-resident step (no host wait inside; loss and norm read back every ReadBackEvery steps), timed to the device's end
                var tt = QuickTimer.Time([() => { trainer.DeviceStep(); b.Synchronize(); }], minRuns: o.MinRuns, maxRuns: 20, budgetSeconds: o.Budget * 2, warmup: 1, warmupSeconds: 0);
                double st = QuickTimer.Median(tt[0]);
                doc.Results.Add(new BenchResult
                {
                    Suite = "train_step", Impl = ours, Backend = b.Name, Shape = BenchModels.Shape(cfg, batch, o.Dtype),
                    Ms = Math.Round(st * 1e3, 3), TokensPerS = Math.Round(batch * L / st, 1), Runs = tt[0].Count,
                    Note = "Trainer.DeviceStep: noise, async batch upload, 2L forward with dropout 0.1, head on the noisy half, NELBO, backward, grad norm + clip factor on the device, AdamW + EMA in one pass; no host wait inside the step",
                });
                Console.WriteLine($"  train_step: {st * 1e3:F1} ms = {batch * L / st:N0} tokens/s");
                if (o.Flag("split")) StepSplit(b, cfg, batch, o.Int("split-steps", 3), doc, ours, o.Dtype);
            }
        }
        o.WriteDoc(doc, "train");
        return 0;
    }

    /// <summary>
    /// `--split`: the same training step on a fresh model whose backend times every op (<see cref="OpTimingBackend"/>),
    /// averaged over --split-steps steps after one warm-up step; prints each op's time per step and share of the step.
    /// </summary>
    static void StepSplit(IBackend backend, ModelConfig cfg, int batch, int steps, BenchDoc doc, string ours, string dtype)
    {
        var timed = new OpTimingBackend(backend);
        var model = new Denoiser(timed, cfg);
        model.Initialize(1, zeroInit: false);
        using var trainer = new Trainer(model, new TrainOptions { BatchSize = batch, Steps = int.MaxValue, WarmupSteps = 1, LearningRate = 1e-5f },
            new RandomBatchSource(cfg.ModelLength, cfg.VocabSize - 1, 3));
        trainer.DeviceStep(); backend.Synchronize();
        timed.Reset();
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        for (int i = 0; i < steps; i++) { trainer.DeviceStep(); backend.Synchronize(); }
        double step = System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalSeconds / steps, ops = 0;
        Console.WriteLine($"  split of a step ({step * 1e3:F1} ms, {steps} steps, op-timed backend):");
        foreach (var (op, seconds, calls) in timed.Totals)
        {
            double ms = seconds / steps * 1e3;
            ops += seconds / steps;
            Console.WriteLine($"    {op,-32} {ms,9:F2} ms {100 * seconds / steps / step,5:F1}%  ({calls / steps} calls)");
            doc.Results.Add(new BenchResult
            {
                Suite = "train_step_split", Impl = ours, Backend = backend.Name, Shape = BenchModels.Shape(cfg, batch, dtype, ("op", op)),
                Ms = Math.Round(ms, 3), Runs = steps, Note = $"{100 * seconds / steps / step:F1}% of a {step * 1e3:F1} ms step, {calls / steps} calls per step",
            });
        }
        Console.WriteLine($"    {"(outside the ops)",-32} {(step - ops) * 1e3,9:F2} ms {100 * (step - ops) / step,5:F1}%");
    }
}

/// <summary>
/// `bench sample-quick [--backend cpu] [--model custom|tiny|small] [--width 64 --layers 2 --heads 2] [--vocab V]
/// [--L 1024] [--Lp 16] [--batch 1] [--tokens L] [--steps Lp] [--sampler ddpm|first-hitting|confidence] [--repeat 3]
/// [--no-uncached] [--split] [--out FILE]`: block sampling of a random-weight model (DDPM by default, T steps per
/// block, no EOS or entropy stop), with the KV cache and without it (every step re-runs the whole window), as generated
/// tokens/s and NFEs. The KV-cached runs also report where the time went, the model (network and output head) against
/// the sampler (always on the CPU; on a GPU with --split, which synchronises at every boundary).
/// </summary>
public static class SampleQuick
{
    public static int Run(string[] args)
    {
        var o = new QuickOptions(args, new() { ["L"] = "1024", ["Lp"] = "16", ["batch"] = "1" });
        var doc = BenchDoc.ForThisRun("sample-quick", args, "median wall time of --repeat whole generations (first one a warm-up that is not counted)");
        foreach (var b in o.StartedBackends())
        {
            string ours = "fastblockdiff-" + b.Name;
            foreach (int L in o.Ints("L"))
            foreach (int lp in o.Ints("Lp"))
            foreach (int batch in o.Ints("batch"))
            {
                var cfg = BenchModels.FromOptions(o, "custom", L, lp);
                var model = new Denoiser(b, cfg);
                model.Initialize(5, zeroInit: false);
                int tokens = o.Int("tokens", L), steps = o.Int("steps", lp), repeat = o.Int("repeat", 3);
                var kind = SamplerKindOption(o.Str("sampler", "ddpm"));
                var sampler = cfg.VocabSize == 50258 ? new BlockSampler(model, 50256, 50256) : new BlockSampler(model, cfg.VocabSize - 4, cfg.VocabSize - 3);
                Console.WriteLine($"backend {b.Name}; model {cfg.Layers}x{cfg.HiddenDim} ({cfg.Heads} heads), V={cfg.VocabSize}, {model.Params.Count:N0} parameters; L={L} L'={lp} T={steps} batch={batch} tokens={tokens} sampler={kind}");
                double? cachedTps = null;
                foreach (bool cached in o.Flag("no-uncached") ? new[] { true } : [true, false])
                {
                    var opts = new SamplingOptions
                    {
                        MaxTokens = tokens, StepsPerBlock = steps, UseKvCache = cached, BatchSize = batch, Seed = 11,
                        StopOnEos = false, EntropyThreshold = 0f, Kind = kind,
                        MeasureSplit = cached && (b is FastBlockDiff.Kernels.Cpu.CpuBackend || o.Flag("split")),
                    };
                    var runs = new List<SampleResult>();
                    int count = cached ? repeat : Math.Max(1, o.Int("repeat-uncached", 1));
                    sampler.Generate([], opts with { MaxTokens = Math.Min(tokens, 4 * lp) }); // warm-up: JIT and workspaces
                    for (int r = 0; r < count; r++) runs.Add(sampler.Generate([], opts));
                    double sec = QuickTimer.Median(runs.Select(x => x.Elapsed.TotalSeconds));
                    var mid = runs.OrderBy(x => x.Elapsed).ElementAt(runs.Count / 2);
                    double tps = mid.GeneratedTokens / sec;
                    string impl = cached ? ours : "uncached-" + ours;
                    string note = cached ? "KV cache: each NFE runs L' tokens against the cached prefix; committing a block is one more pass (cache_passes)"
                        : "no KV cache: each NFE re-runs the whole window (≤ L tokens, block-causal)";
                    if (!cached && cachedTps is { } c) note += $"; cached/uncached = {c / tps:F1}x";
                    if (cached)
                    {
                        // the sampler's own share: a step samples only the rows it reveals, about one row per generated token
                        double op = SamplerSeconds(b, batch * lp, cfg.VocabSize, cfg.MaskId, opts.TopP) / (batch * lp);
                        double share = mid.GeneratedTokens * op / sec;
                        note += $"; sampler op {op * 1e3:F3} ms per row (top-p {opts.TopP}), ≈ {100 * share:F1}% of the generation";
                        Console.WriteLine($"  sampler  : {op * 1e3:F3} ms per row × V={cfg.VocabSize}, ≈ {100 * share:F1}% of sampling time (one row per generated token)");
                    }
                    Dictionary<string, double>? split = null;
                    if (opts.MeasureSplit)
                    {
                        // medians over the runs: model (network + head) and sampler seconds of each whole generation
                        double modelMs = 1e3 * QuickTimer.Median(runs.Select(x => x.ModelSeconds));
                        double samplerMs = 1e3 * QuickTimer.Median(runs.Select(x => x.SamplerSeconds));
                        double samplerShare = QuickTimer.Median(runs.Select(x => x.SamplerSeconds / Math.Max(1e-12, x.ModelSeconds + x.SamplerSeconds)));
                        split = new() { ["model_ms"] = Math.Round(modelMs, 2), ["sampler_ms"] = Math.Round(samplerMs, 2), ["sampler_share"] = Math.Round(samplerShare, 4) };
                        Console.WriteLine($"  split    : model {modelMs:F1} ms, sampler {samplerMs:F1} ms per generation: sampler {100 * samplerShare:F1}% of sampling time");
                    }
                    // the sampler is part of the shape only where it is not the default (DDPM), so earlier peers still pair
                    var shape = kind == SamplerKind.Ddpm ? BenchModels.Shape(cfg, batch, o.Dtype, ("tokens", tokens), ("steps", steps))
                        : BenchModels.Shape(cfg, batch, o.Dtype, ("tokens", tokens), ("steps", steps), ("sampler", SamplerKindName(kind)));
                    doc.Results.Add(new BenchResult
                    {
                        Suite = "sample", Impl = impl, Backend = b.Name, Shape = shape,
                        Ms = Math.Round(sec * 1e3, 2), TokensPerS = Math.Round(tps, 2), Nfe = mid.Nfe, Runs = runs.Count,
                        Note = note + $"; cache_passes={mid.CachePasses}; generated={mid.GeneratedTokens}", Split = split,
                    });
                    Console.WriteLine($"  {(cached ? "KV-cached" : "uncached"),-9}: {sec:F2} s, {tps:F1} tokens/s, NFE {mid.Nfe}, cache passes {mid.CachePasses}" +
                        (!cached && cachedTps is { } c2 ? $"  → cached is {c2 / tps:F1}x faster" : ""));
                    if (cached) cachedTps = tps;
                }
            }
        }
        o.WriteDoc(doc, "sample");
        return 0;
    }

    static SamplerKind SamplerKindOption(string name) => name switch
    {
        "ddpm" => SamplerKind.Ddpm,
        "first-hitting" => SamplerKind.FirstHitting,
        "confidence" => SamplerKind.Confidence,
        _ => throw new ArgumentException($"--sampler must be ddpm, first-hitting or confidence, got '{name}'"),
    };

    static string SamplerKindName(SamplerKind kind) => kind switch
    {
        SamplerKind.FirstHitting => "first-hitting",
        SamplerKind.Confidence => "confidence",
        _ => "ddpm",
    };

    /// <summary>Median seconds of one SampleCategorical over rows × vocab random logits (std 3: a few hundred tokens in the nucleus).</summary>
    static double SamplerSeconds(IBackend b, int rows, int vocab, int maskId, float topP)
    {
        var rnd = new Random(3);
        var host = new float[(long)rows * vocab];
        for (int i = 0; i < host.Length; i++) host[i] = 3f * (rnd.NextSingle() + rnd.NextSingle() + rnd.NextSingle() - 1.5f);
        var logits = b.AllocFloat(host.Length); var u = b.AllocFloat(rows); var tokens = b.AllocInt(rows); var probs = b.AllocFloat(rows);
        using (logits.Storage) using (u.Storage) using (tokens.Storage) using (probs.Storage)
        {
            b.Upload(logits, host);
            b.Upload(u, Enumerable.Range(0, rows).Select(_ => rnd.NextSingle()).ToArray());
            var t = QuickTimer.Time([() => { b.SampleCategorical(logits, rows, vocab, maskId, 1f, topP, u, tokens, probs); b.Synchronize(); }], minRuns: 5, budgetSeconds: 1);
            return QuickTimer.Median(t[0]);
        }
    }
}
