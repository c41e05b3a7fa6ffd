using System.Diagnostics;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Data;
using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Text;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Experiments;

/// <summary>Progress callbacks of an experiment, all optional.</summary>
public sealed class ExperimentObserver
{
    public Action<string>? OnMessage { get; init; }
    /// <summary>(model name, index of the model, number of models, progress of its training).</summary>
    public Action<string, int, int, TrainProgress>? OnStep { get; init; }
    /// <summary>(model name, seed, the model about to be trained with its initial weights).</summary>
    public Action<string, ulong, Denoiser>? OnModelStart { get; init; }
    /// <summary>Writes plots for a (possibly partial) result into the directory; returns the file names written.</summary>
    public Func<ExperimentResult, string, IReadOnlyList<string>>? Plotter { get; init; }
}

/// <summary>
/// The paper-shaped experiment (BD3-LM, arXiv 2503.09573, at small scale): on the same data and token budget it
/// trains AR (L' = 1, every token masked: the NELBO is the AR NLL), BD3-LM for each L' with the clipped
/// schedule found by the variance search after a linear warm-up, and MDLM (L' = L, linear); then the schedule
/// ablation at one L' (linear, a fixed clipped range, the searched one); then samples from every model, scored
/// by the AR model. With pre-training steps it follows the paper's recipe: one MDLM pre-trained per seed, every
/// diffusion model fine-tuned from it, AR from scratch on the same budget. Repeated for each seed; the summary
/// gives every perplexity as mean ± std over seeds and checks the paper's ordering. Writes results.json and
/// results.md (after every model, so a cut-off run leaves its part) and each model's checkpoint under models/.
/// </summary>
public static class ExperimentRunner
{
    enum Mode { Ar, Linear, Clipped, Searched }

    /// <summary>One model to train: <paramref name="Pretrained"/> starts it from the seed's MDLM pre-train.</summary>
    sealed record Spec(string Name, string Kind, int BlockSize, Mode Mode, int Steps, float Min = 0f, float Max = 1f, bool Pretrained = false);

    /// <summary>Name of the shared MDLM pre-train of the paper's recipe (not a reported row).</summary>
    public const string PretrainName = "MDLM pre-train";

    public static ExperimentResult Run(ExperimentConfig cfg, ExperimentObserver? observer = null, CancellationToken cancel = default)
    {
        observer ??= new ExperimentObserver();
        void Say(string s) => observer.OnMessage?.Invoke(s);
        cfg.Validate();
        if (File.Exists(cfg.DataPath)) InputFile.RequireRegular(cfg.DataPath, "corpus");
        var tokenizer = TokenizerFactory.Load(cfg.Tokenizer);
        var largest = BuildConfig(cfg, tokenizer, cfg.SeqLen);
        largest.Validate();
        var need = MemoryEstimate.ForTraining(largest, Math.Max(cfg.BatchSize, cfg.EvalBatchSize));
        need.EnsureFits("use a smaller --hidden-dim, --layers, --seq-len or --batch-size");
        // every model's checkpoint (5 copies of the weights at most) plus plots and tables
        long checkpoints = Plan(cfg, 0).Count * cfg.SeedList.Count * 5L * 4 * need.Parameters + (16 << 20);
        WritableLocation.RequireDirectory(cfg.OutputDirectory, "--out", checkpoints);
        var (backend, reason) = BackendChoice.Create(cfg.Backend);
        var total = Stopwatch.StartNew();
        Directory.CreateDirectory(cfg.OutputDirectory);
        AtomicFile.WriteAllText(Path.Combine(cfg.OutputDirectory, "config.json"), cfg.ToJson());

        Say($"backend {reason}");
        var data = TokenDataset.FromCorpus(cfg.DataPath, tokenizer, cfg.SeqLen, ExperimentConfig.ValidFraction, cacheDir: TrainingRun.TokenCacheDirectory());
        if (data.TrainRows.Count == 0 || data.ValidRows.Count == 0)
            throw new UserInputException($"corpus '{cfg.DataPath}' is too small: {data.TrainRows.Count} train / {data.ValidRows.Count} validation rows of {cfg.SeqLen} tokens");
        List<int[]> Valid(int n) => [.. data.ValidRows.Take(n > 0 ? n : data.ValidRows.Count).Select(r => data.Row(r).ToArray())];
        var evalRows = Valid(cfg.EvalSequences);
        var searchRows = Valid(cfg.ScheduleSearchSequences);
        var estimatorRows = Valid(cfg.AblationSequences);
        int steps = cfg.StepsPerModel;
        string dataSummary = $"{data.StreamTokens:N0} tokens, {data.TrainRows.Count:N0} train / {data.ValidRows.Count:N0} validation rows of {cfg.SeqLen}";
        Say($"data: {dataSummary}; {cfg.PretrainSteps + steps} steps × {cfg.BatchSize} × {cfg.SeqLen} = {(long)(cfg.PretrainSteps + steps) * cfg.BatchSize * cfg.SeqLen:N0} training tokens per model" +
            (cfg.PretrainSteps > 0 ? $" ({cfg.PretrainSteps} of them in the shared MDLM pre-train)" : "") + $"; seeds {string.Join(", ", cfg.SeedList)}");

        var result = new ExperimentResult
        {
            Config = cfg, Machine = MachineDescription(), Backend = reason, Commit = GitCommit(), StartedUtc = DateTime.UtcNow, DataSummary = dataSummary,
        };

        var seeds = cfg.SeedList;
        int planned = 0, done = 0;
        for (int k = 0; k < seeds.Count; k++) planned += Plan(cfg, k).Count;
        Say($"models: {string.Join(", ", Plan(cfg, 0).Select(s => s.Name))}" + (seeds.Count > 1 ? $" × {seeds.Count} seeds" : ""));
        for (int k = 0; k < seeds.Count && !cancel.IsCancellationRequested; k++)
        {
            ulong seed = seeds[k];
            var specs = Plan(cfg, k);
            Denoiser? arModel = null;
            float[]? pretrained = null;
            var trained = new Dictionary<string, (Denoiser Model, ModelResult Result)>();
            foreach (var spec in specs)
            {
                if (cancel.IsCancellationRequested) break;
                int i = done;
                string tag = seeds.Count > 1 ? $"[{i + 1}/{planned}, seed {seed}]" : $"[{i + 1}/{planned}]";
                Say($"{tag} {spec.Name}: L'={spec.BlockSize}, {Describe(spec)}");
                var (model, mr) = TrainOne(cfg, spec, seed, seeds.Count > 1, spec.Pretrained ? pretrained : null, backend, tokenizer, data, evalRows, searchRows, estimatorRows,
                    m => observer.OnModelStart?.Invoke(spec.Name, seed, m), p => observer.OnStep?.Invoke(spec.Name, i, planned, p), Say, cancel);
                if (mr == null) break;
                done++;
                result.Models.Add(mr);
                trained[spec.Name] = (model, mr);
                if (spec.Mode == Mode.Ar) arModel = model;
                if (spec.Name == PretrainName) pretrained = model.DownloadWeights();
                Say($"{tag} {spec.Name}: {mr.Objective} {mr.Nelbo:F4} nats → PPL {mr.Perplexity:F3}, {mr.BitsPerToken:F4} bits/token; " +
                    $"training estimator mean {mr.TrainEstimatorMean:F4}, variance {mr.TrainEstimatorVariance:F4}; trained in {mr.TrainSeconds:F0} s");
                if (cfg.Samples > 0 && spec.Name != PretrainName && !cancel.IsCancellationRequested)
                {
                    var g = Generate(cfg, spec.Name, seed, model, tokenizer, arModel);
                    result.Generation.Add(g);
                    Say($"{tag} {spec.Name}: {g.Samples} samples, mean length {g.MeanLength:F1}, {g.Nfe} NFEs, {g.TokensPerSecond:F1} tokens/s" +
                        (g.GenerativePerplexity is { } gp ? $", gen. PPL {gp:F2}" : ""));
                }
                if (k == 0) Ablation(cfg, trained, result);
                result.Summarize();
                Write(cfg, result, total, observer, complete: false);
            }
        }
        result.Summarize();
        Write(cfg, result, total, observer, complete: !cancel.IsCancellationRequested && done == planned);
        Say($"done in {total.Elapsed.TotalMinutes:F1} min: {Path.Combine(cfg.OutputDirectory, "results.md")}");
        return result;
    }

    static string Describe(Spec s) => (s.Mode switch
    {
        Mode.Ar => "AR: every block at t = 1",
        Mode.Linear => "linear schedule",
        Mode.Clipped => $"clipped U[{s.Min:0.##}, {s.Max:0.##}]",
        _ => "linear warm-up, then the searched clipped schedule",
    }) + $", {s.Steps} steps" + (s.Pretrained ? $" fine-tuned from the {PretrainName}" : " from scratch");

    /// <summary>The models of seed number <paramref name="seedIndex"/>: the ablation runs with the first seed only.</summary>
    static List<Spec> Plan(ExperimentConfig cfg, int seedIndex)
    {
        var specs = new List<Spec>();
        int steps = cfg.StepsPerModel, pre = cfg.PretrainSteps;
        bool recipe = pre > 0;
        if (cfg.IncludeAr) specs.Add(new Spec("AR", "ar", 1, Mode.Ar, pre + steps));
        if (recipe) specs.Add(new Spec(PretrainName, "pretrain", cfg.SeqLen, Mode.Linear, pre));
        foreach (var b in cfg.BlockSizes.Distinct().Order())
        {
            if (b == cfg.SeqLen && cfg.IncludeMdlm) continue;   // that is the MDLM row
            specs.Add(new Spec($"BD3-LM L'={b}", "bd3", b, Mode.Searched, steps, Pretrained: recipe));
        }
        if (cfg.IncludeMdlm) specs.Add(new Spec("MDLM", "mdlm", cfg.SeqLen, Mode.Linear, steps, Pretrained: recipe));
        if (cfg.AblationBlockSize > 0 && seedIndex == 0)
        {
            int a = cfg.AblationBlockSize;
            specs.Add(new Spec($"ablation L'={a} linear", "bd3", a, Mode.Linear, steps, Pretrained: recipe));
            specs.Add(new Spec($"ablation L'={a} clipped", "bd3", a, Mode.Clipped, steps, cfg.AblationClipped[0], cfg.AblationClipped[1], Pretrained: recipe));
            if (!specs.Any(s => s.Kind == "bd3" && s.BlockSize == a && s.Mode == Mode.Searched))
                specs.Add(new Spec($"ablation L'={a} searched", "bd3", a, Mode.Searched, steps, Pretrained: recipe));
        }
        return specs;
    }

    static (Denoiser Model, ModelResult? Result) TrainOne(ExperimentConfig cfg, Spec spec, ulong seed, bool seedInName, float[]? initialWeights, IBackend backend,
        ITextTokenizer tok, TokenDataset data, List<int[]> evalRows, List<int[]> searchRows, List<int[]> estimatorRows, Action<Denoiser> onStart,
        Action<TrainProgress> onStep, Action<string> say, CancellationToken cancel)
    {
        int steps = spec.Steps;
        var schedule = spec.Mode switch
        {
            Mode.Ar => NoiseSchedule.Autoregressive,
            Mode.Clipped => new NoiseSchedule(spec.Min, spec.Max),
            _ => NoiseSchedule.Linear,
        };
        var config = BuildConfig(cfg, tok, spec.BlockSize) with
        {
            ScheduleMin = schedule.Min, ScheduleMax = schedule.Max,
            Noise = spec.Mode == Mode.Ar ? NoiseKind.Linear : NoiseSchedule.Parse(cfg.NoiseSchedule, "noise_schedule"),
        };
        config.Validate();
        var model = new Denoiser(backend, config);
        model.Initialize((int)(seed & 0x7FFFFFFF));
        if (spec.Pretrained)
            model.LoadWeights(initialWeights ?? throw new InvalidOperationException($"{spec.Name} needs the {PretrainName}, which has not run"));
        onStart(model);
        var options = new TrainOptions
        {
            Steps = steps, BatchSize = cfg.BatchSize, LearningRate = cfg.LearningRate, WarmupSteps = Math.Min(cfg.WarmupSteps, Math.Max(1, steps / 2)),
            LrSchedule = cfg.LrSchedule, MinLearningRate = Math.Min(3e-5f, cfg.LearningRate * 0.1f), Seed = seed, Dropout = cfg.Dropout > 0,
        };
        // every model of a seed sees the same rows in the same order (a fine-tune continues where the pre-train stopped)
        var sampler = BatchSampler.ForTraining(data, cfg.BatchSize, seed);
        var source = new SamplerBatchSource(sampler);
        if (spec.Pretrained) { var skip = new int[cfg.BatchSize * cfg.SeqLen]; for (int s = 0; s < cfg.PretrainSteps; s++) source.Next(skip, cfg.BatchSize); }
        var trainer = new Trainer(model, options, source);
        int searchAt = spec.Mode == Mode.Searched ? Math.Max(1, (int)Math.Round(cfg.ScheduleSearchAt * steps)) : -1;
        List<ScheduleCellResult>? cells = null;
        var clock = Stopwatch.StartNew();
        long tokens = 0;
        double loss = double.NaN;
        while (trainer.Step < steps)
        {
            if (cancel.IsCancellationRequested) return (model, null);
            if (trainer.Step == searchAt)
            {
                var grid = cfg.SearchGrid();
                var (best, all) = trainer.WithEmaWeights(() => ScheduleSearch.Run(model, searchRows, cfg.EvalBatchSize, grid));
                trainer.Schedule = new NoiseSchedule(best.Min, best.Max);
                cells = [.. all.Select(c => new ScheduleCellResult(c.Min, c.Max, c.Mean, c.Variance))];
                say($"  step {trainer.Step}: schedule search over {all.Count} cells picked {trainer.Schedule} (NELBO variance {best.Variance:F4})");
            }
            (loss, _, _) = trainer.TrainStep();
            tokens += (long)cfg.BatchSize * cfg.SeqLen;
            double elapsed = clock.Elapsed.TotalSeconds;
            var eta = TimeSpan.FromSeconds((steps - trainer.Step) * elapsed / trainer.Step);
            onStep(new TrainProgress(trainer.Step, steps, loss, options.LearningRateAt(trainer.Step - 1), 0, tokens / Math.Max(1e-9, elapsed), clock.Elapsed, eta));
        }
        clock.Stop();
        // evaluate and keep the EMA weights
        backend.Copy(model.Weights, trainer.Ema);
        model.InvalidateConditioning();
        var evalClock = Stopwatch.StartNew();
        var evaluator = new Evaluator(model);
        EvalResult main, uniform, estimator;
        if (spec.Mode == Mode.Ar)
        {
            main = evaluator.Evaluate(evalRows, cfg.EvalBatchSize, NoiseSchedule.Autoregressive);
            uniform = evaluator.Evaluate(evalRows, cfg.EvalBatchSize);
            estimator = evaluator.Evaluate(estimatorRows, cfg.EvalBatchSize, NoiseSchedule.Autoregressive, seed: 4321);
        }
        else
        {
            main = uniform = evaluator.Evaluate(evalRows, cfg.EvalBatchSize);
            estimator = evaluator.Evaluate(estimatorRows, cfg.EvalBatchSize, trainer.Schedule, seed: 4321, resample: true);
        }
        evalClock.Stop();
        string dir = Path.Combine(cfg.OutputDirectory, "models", Slug(spec.Name) + (seedInName ? $"-seed-{seed}" : ""));
        var finalConfig = config with { ScheduleMin = trainer.Schedule.Min, ScheduleMax = trainer.Schedule.Max };
        ModelCheckpoint.Save(dir, finalConfig, model.Params, model.DownloadWeights());
        return (model, new ModelResult
        {
            Name = spec.Name, Kind = spec.Kind, BlockSize = spec.BlockSize, Seed = seed, InitializedFrom = spec.Pretrained ? PretrainName : null,
            Schedule = trainer.Schedule.ToString(),
            ScheduleMin = trainer.Schedule.Min, ScheduleMax = trainer.Schedule.Max,
            Objective = spec.Mode == Mode.Ar ? "AR NLL (t = 1)" : "NELBO (t ~ U[0,1])",
            Nelbo = main.Nelbo, Perplexity = main.Perplexity, BitsPerToken = main.BitsPerToken, NelboUniform = uniform.Nelbo,
            TrainEstimatorMean = estimator.Nelbo, TrainEstimatorVariance = estimator.Variance,
            Steps = steps, TrainTokens = tokens, TrainSeconds = clock.Elapsed.TotalSeconds, EvalSeconds = evalClock.Elapsed.TotalSeconds,
            FinalTrainLoss = trainer.LossLog.Count > 0 ? trainer.LossLog.Skip(Math.Max(0, trainer.LossLog.Count - 20)).Average(l => l.Loss) : double.NaN,
            Parameters = model.Params.Count, EvalSequences = main.Sequences,
            ScheduleSearch = cells, ScheduleSearchStep = cells != null ? searchAt : null, CheckpointDirectory = dir,
        });
    }

    static ModelConfig BuildConfig(ExperimentConfig cfg, ITextTokenizer tok, int blockSize)
    {
        int vocab = tok.ModelVocabSize;
        ModelConfig c = cfg.ModelSize == "custom"
            ? new ModelConfig
            {
                VocabSize = vocab, MaskId = tok.MaskId, HiddenDim = cfg.HiddenDim ?? 128, Layers = cfg.Layers ?? 2, Heads = cfg.Heads ?? 4,
                CondDim = 128, ModelLength = cfg.SeqLen, BlockSize = blockSize,
            }
            : ModelConfig.Named(cfg.ModelSize, vocab, tok.MaskId, cfg.SeqLen, blockSize);
        return c with { Dropout = cfg.Dropout, Tokenizer = tok.Describe().Spec };
    }

    static GenerationResult Generate(ExperimentConfig cfg, string name, ulong seed, Denoiser model, ITextTokenizer tok, Denoiser? arModel)
    {
        var options = new SamplingOptions
        {
            BatchSize = cfg.Samples, MaxTokens = cfg.SampleMaxTokens, StepsPerBlock = cfg.SampleStepsPerBlock, TopP = cfg.SampleTopP,
            Seed = seed, StopOnEos = true, EntropyThreshold = cfg.SampleEntropyThreshold, EntropyWindow = cfg.SampleEntropyWindow,
        };
        var r = new BlockSampler(model, tok.BosId, tok.EosId).Generate([], options);
        var lengths = r.Tokens.Select(t => (double)t.Length).ToArray();
        double mean = lengths.Average();
        double std = lengths.Length > 1 ? Math.Sqrt(lengths.Sum(l => (l - mean) * (l - mean)) / (lengths.Length - 1)) : 0;
        GenerativePerplexity? genPpl = null;
        if (arModel != null)
        {
            // as bd3lms: each sample's perplexity with EOS targets left out, averaged over samples
            var scores = new ArScorer(arModel, tok.BosId, tok.PadId ?? tok.EosId, cfg.EvalBatchSize).ScoreEach(r.Tokens, excludeTarget: tok.EosId);
            if (GenerativePerplexity.FromScores(scores) is { Samples: > 0 } gp) genPpl = gp;
        }
        return new GenerationResult
        {
            Model = name, Seed = seed, Samples = r.Tokens.Length, MeanLength = mean, StdLength = std, MinLength = (int)lengths.Min(), MaxLength = (int)lengths.Max(),
            StopReasons = r.Reasons.GroupBy(x => x.ToString()).ToDictionary(g => g.Key, g => g.Count()),
            Nfe = r.Nfe, NfePerToken = r.GeneratedTokens > 0 ? (double)r.Nfe / r.GeneratedTokens : double.NaN,
            GeneratedTokens = r.GeneratedTokens, TokensPerSecond = r.TokensPerSecond, Seconds = r.Elapsed.TotalSeconds,
            GenerativePerplexity = genPpl?.Mean, GenerativePerplexityPooled = genPpl?.Pooled, Example = tok.Decode(r.Tokens[0]),
        };
    }

    /// <summary>Fills the ablation table from the models trained so far at the ablation block size.</summary>
    static void Ablation(ExperimentConfig cfg, Dictionary<string, (Denoiser Model, ModelResult Result)> trained, ExperimentResult result)
    {
        if (cfg.AblationBlockSize <= 0) return;
        int a = cfg.AblationBlockSize;
        result.Ablation.Clear();
        void Add(string label, string name)
        {
            if (!trained.TryGetValue(name, out var t)) return;
            var m = t.Result;
            result.Ablation.Add(new AblationRow(label, m.Name, m.ScheduleMin, m.ScheduleMax, m.TrainEstimatorMean, m.TrainEstimatorVariance, m.Perplexity, cfg.AblationSequences));
        }
        Add("linear U[0, 1]", $"ablation L'={a} linear");
        Add($"clipped U[{cfg.AblationClipped[0]:0.##}, {cfg.AblationClipped[1]:0.##}]", $"ablation L'={a} clipped");
        Add("searched (β, ω)", trained.ContainsKey($"BD3-LM L'={a}") ? $"BD3-LM L'={a}" : $"ablation L'={a} searched");
    }

    static void Write(ExperimentConfig cfg, ExperimentResult result, Stopwatch total, ExperimentObserver observer, bool complete)
    {
        result.Complete = complete;
        result.FinishedUtc = DateTime.UtcNow;
        result.TotalSeconds = total.Elapsed.TotalSeconds;
        if (observer.Plotter != null)
        {
            var files = observer.Plotter(result, cfg.OutputDirectory);
            foreach (var f in files) if (!result.Plots.Contains(f)) result.Plots.Add(f);
        }
        AtomicFile.WriteAllText(Path.Combine(cfg.OutputDirectory, "results.json"), result.ToJson());
        AtomicFile.WriteAllText(Path.Combine(cfg.OutputDirectory, "results.md"), result.ToMarkdown());
    }

    static string Slug(string name) =>
        new string([.. name.ToLowerInvariant().Select(ch => char.IsLetterOrDigit(ch) ? ch : '-')]).Replace("--", "-").Trim('-');

    static string MachineDescription()
    {
        string cpu = "unknown CPU";
        try
        {
            var line = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal)) : null;
            if (line != null) cpu = line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        return $"{cpu}, {Environment.ProcessorCount} cores available, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}";
    }

    static string GitCommit()
    {
        try
        {
            var psi = new ProcessStartInfo("git", "rev-parse --short HEAD") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            using var p = Process.Start(psi);
            if (p == null) return "unknown";
            string s = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit(5000);
            return p.ExitCode == 0 && s.Length > 0 ? s : "unknown";
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException) { return "unknown"; }
    }
}
