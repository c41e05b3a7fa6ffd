using System.Globalization;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Data;
using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Text;
using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Engine;

/// <summary>What to train: data, architecture, schedule and optimisation. Validated before any file is written.</summary>
public sealed record TrainingRequest
{
    /// <summary>Corpus: a text file, a folder of *.txt, or JSONL with a "text" field.</summary>
    public required string DataPath { get; init; }
    /// <summary>Output directory: config.json, model.safetensors (EMA weights), training_state.safetensors, train_log.csv.</summary>
    public required string OutputDirectory { get; init; }
    /// <summary>tiny, small, or custom (then HiddenDim/Layers/Heads are used).</summary>
    public string ModelSize { get; init; } = "tiny";
    public int? HiddenDim { get; init; }
    public int? Layers { get; init; }
    public int? Heads { get; init; }
    public int SeqLen { get; init; } = 256;
    public int BlockSize { get; init; } = 4;
    public string Tokenizer { get; init; } = "byte";
    /// <summary>Clipped mask-rate range [β, ω]; (0, 1) is the linear schedule.</summary>
    public float ScheduleMin { get; init; } = 0f;
    public float ScheduleMax { get; init; } = 1f;
    public float Dropout { get; init; } = 0.1f;
    public double ValidFraction { get; init; } = 0.05;
    public string Backend { get; init; } = "auto";
    public bool Resume { get; init; }
    public TrainOptions Options { get; init; } = new();
}

/// <summary>Callbacks of a training run, all optional.</summary>
public sealed class TrainingObserver
{
    public Action<string>? OnMessage { get; init; }
    public Action<TrainProgress>? OnStep { get; init; }
    public Action<int, EvalResult>? OnEval { get; init; }
    public Action<int, ScheduleCell, IReadOnlyList<ScheduleCell>>? OnScheduleSearch { get; init; }
    public Action<int, string>? OnCheckpoint { get; init; }
}

/// <summary>Outcome of <see cref="TrainingRun.Run"/>.</summary>
public sealed record TrainingReport(int Steps, double FinalLoss, EvalResult? Validation, double TokensPerSecond, TimeSpan Elapsed,
    IReadOnlyList<(int Step, double Loss)> LossLog, string OutputDirectory, bool Cancelled);

/// <summary>
/// Trains a BD3-LM end to end: corpus → tokens → rows, model, AdamW/EMA training with periodic eval, schedule
/// search and atomic checkpoints; on cancellation the state reached so far is checkpointed.
/// </summary>
public static class TrainingRun
{
    public static TrainingReport Run(TrainingRequest req, TrainingObserver? observer = null, CancellationToken cancel = default)
    {
        observer ??= new TrainingObserver();
        void Say(string s) => observer.OnMessage?.Invoke(s);
        req.Options.Validate();
        if (req.SeqLen <= 0 || req.BlockSize <= 0) throw new UserInputException($"--seq-len ({req.SeqLen}) and --block-size ({req.BlockSize}) must be positive");
        if (req.SeqLen % req.BlockSize != 0) throw new UserInputException($"sequence length {req.SeqLen} is not divisible by block size {req.BlockSize}");
        new NoiseSchedule(req.ScheduleMin, req.ScheduleMax).Validate();
        if (!File.Exists(req.DataPath) && !Directory.Exists(req.DataPath)) throw new UserInputException($"corpus '{req.DataPath}' does not exist");

        var tokenizer = TokenizerFactory.Load(req.Tokenizer);
        ModelConfig config;
        TrainingState? resumeState = null;
        if (req.Resume)
        {
            if (!TrainingCheckpoint.Exists(req.OutputDirectory))
                throw new UserInputException($"--resume: '{req.OutputDirectory}' holds no {TrainingCheckpoint.StateFile}");
            config = ModelCheckpoint.LoadConfig(req.OutputDirectory);
            if (config.ModelLength != req.SeqLen || config.BlockSize != req.BlockSize)
                throw new UserInputException($"--resume: checkpoint has L={config.ModelLength}, L'={config.BlockSize} but the command asks for L={req.SeqLen}, L'={req.BlockSize}: checkpoint of another shape");
            tokenizer = TokenizerFactory.Load(config.Tokenizer, config.MaskId);
            resumeState = TrainingCheckpoint.Load(req.OutputDirectory);
        }
        else
        {
            config = BuildConfig(req, tokenizer);
        }

        var (backend, reason) = BackendChoice.Create(req.Backend);
        Say($"backend {reason}");
        var data = TokenDataset.FromCorpus(req.DataPath, tokenizer, config.ModelLength, req.ValidFraction,
            cacheDir: TokenCacheDirectory());
        if (data.TrainRows.Count == 0) throw new UserInputException($"corpus '{req.DataPath}' is too small for one sequence of {config.ModelLength} tokens");
        Say($"data: {data.StreamTokens:N0} tokens → {data.TrainRows.Count} train / {data.ValidRows.Count} validation rows of {config.ModelLength}");

        var model = new Denoiser(backend, config);
        model.Initialize((int)(req.Options.Seed & 0x7FFFFFFF));
        Say($"model: {config.Layers} layers × {config.HiddenDim} wide, {config.Heads} heads, {model.Params.Count:N0} parameters, L={config.ModelLength}, L'={config.BlockSize}, vocab {config.VocabSize} ({tokenizer.Name})");
        var sampler = BatchSampler.ForTraining(data, req.Options.BatchSize, req.Options.Seed);
        var trainer = new Trainer(model, req.Options, new SamplerBatchSource(sampler));
        if (resumeState != null)
        {
            trainer.Restore(resumeState);
            Say($"resumed at step {trainer.Step} with schedule {trainer.Schedule}");
        }
        Say($"schedule: {trainer.Schedule}");
        var validRows = data.ValidRows.Take(Math.Max(1, req.Options.EvalBatches * req.Options.BatchSize)).Select(r => data.Row(r).ToArray()).ToList();

        void Checkpoint(Trainer t)
        {
            var state = t.Capture();
            ModelCheckpoint.Save(req.OutputDirectory, config with { ScheduleMin = t.Schedule.Min, ScheduleMax = t.Schedule.Max }, model.Params, state.Ema);
            TrainingCheckpoint.Save(req.OutputDirectory, state);
            WriteLog(req.OutputDirectory, t.LossLog);
            observer.OnCheckpoint?.Invoke(t.Step, req.OutputDirectory);
        }
        void Evaluate(Trainer t)
        {
            // cancelled mid-evaluation: skip it; the training loop then stops and the final checkpoint is written
            try { EvaluateOrSearch(t); }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested) { }
        }
        void EvaluateOrSearch(Trainer t)
        {
            if (validRows.Count == 0) return;
            if (req.Options.ScheduleSearchEvery > 0 && t.Step % req.Options.ScheduleSearchEvery == 0)
            {
                var (best, cells) = t.WithEmaWeights(() => ScheduleSearch.Run(model, validRows, req.Options.BatchSize, cancel: cancel));
                t.Schedule = new NoiseSchedule(best.Min, best.Max);
                observer.OnScheduleSearch?.Invoke(t.Step, best, cells);
                Say($"step {t.Step}: schedule search picked {t.Schedule} (NELBO variance {best.Variance:g4})");
            }
            var r = t.WithEmaWeights(() => new Evaluator(model).Evaluate(validRows, req.Options.BatchSize, cancel: cancel));
            observer.OnEval?.Invoke(t.Step, r);
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        double tps = 0;
        int startStep = trainer.Step;
        trainer.Run(p => { tps = p.TokensPerSecond; observer.OnStep?.Invoke(p); }, Checkpoint, Evaluate, cancel);
        clock.Stop();
        bool cancelled = trainer.Step < req.Options.Steps;
        Checkpoint(trainer);
        EvalResult? final = null;
        if (validRows.Count > 0 && !cancelled)
        {
            int take = req.Options.FinalEvalSequences > 0 ? req.Options.FinalEvalSequences : data.ValidRows.Count;
            var allValid = data.ValidRows.Take(take).Select(r => data.Row(r).ToArray()).ToList();
            final = trainer.WithEmaWeights(() => new Evaluator(model).Evaluate(allValid, req.Options.BatchSize));
        }
        var log = trainer.LossLog;
        return new TrainingReport(trainer.Step - startStep, log.Count > 0 ? log[^1].Loss : double.NaN, final, tps, clock.Elapsed, log, req.OutputDirectory, cancelled);
    }

    /// <summary>Tokenised corpora are cached per user ($XDG_CACHE_HOME or ~/.cache), never inside an output directory.</summary>
    public static string TokenCacheDirectory() =>
        Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "fastblockdiff", "tokens");

    static ModelConfig BuildConfig(TrainingRequest req, ITextTokenizer tok)
    {
        int vocab = tok.ModelVocabSize;
        ModelConfig c = req.ModelSize == "custom"
            ? new ModelConfig
            {
                VocabSize = vocab, MaskId = tok.MaskId, HiddenDim = req.HiddenDim ?? 256, Layers = req.Layers ?? 4, Heads = req.Heads ?? 4,
                CondDim = 128, ModelLength = req.SeqLen, BlockSize = req.BlockSize,
            }
            : ModelConfig.Named(req.ModelSize, vocab, tok.MaskId, req.SeqLen, req.BlockSize) with
            {
                HiddenDim = req.HiddenDim ?? ModelConfig.Named(req.ModelSize, vocab, tok.MaskId).HiddenDim,
                Layers = req.Layers ?? ModelConfig.Named(req.ModelSize, vocab, tok.MaskId).Layers,
                Heads = req.Heads ?? ModelConfig.Named(req.ModelSize, vocab, tok.MaskId).Heads,
            };
        c = c with { Dropout = req.Dropout, Tokenizer = tok.Describe().Spec, ScheduleMin = req.ScheduleMin, ScheduleMax = req.ScheduleMax };
        c.Validate();
        return c;
    }

    static void WriteLog(string dir, IReadOnlyList<(int Step, double Loss)> log) =>
        AtomicFile.WriteAllText(Path.Combine(dir, "train_log.csv"),
            "step,loss\n" + string.Concat(log.Select(l => string.Create(CultureInfo.InvariantCulture, $"{l.Step},{l.Loss:R}\n"))));
}
