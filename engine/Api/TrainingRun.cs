using System.Globalization;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Data;
using FastBlockDiff.Engine.Distributed;
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
    /// <summary>The noise schedule (the reference's noise.type); stored in config.json as noise_type.</summary>
    public NoiseKind Noise { get; init; } = NoiseKind.Linear;
    public float Dropout { get; init; } = 0.1f;
    public double ValidFraction { get; init; } = 0.05;
    /// <summary>Documents packed across rows with EOS between them (the reference's default), or one [BOS] … [EOS] per row.</summary>
    public Data.RowPacking Packing { get; init; } = Data.RowPacking.Wrap;
    public string Backend { get; init; } = "auto";
    /// <summary>auto (bf16 on CUDA, fp32 elsewhere), bf16 or fp32; null: <see cref="BackendChoice.Precision"/>.</summary>
    public string? Precision { get; init; }
    public bool Resume { get; init; }
    /// <summary>Replace a checkpoint already in <see cref="OutputDirectory"/> (without it, or <see cref="Resume"/>, such a directory is refused).</summary>
    public bool Overwrite { get; init; }
    /// <summary>Resume from a training state holding NaN/Inf (refused by default: such a run cannot recover).</summary>
    public bool AllowNonFinite { get; init; }
    /// <summary>Gradient all-reduce of a data-parallel run: auto (NCCL on CUDA when present, else MPI), mpi or nccl.</summary>
    public string Collective { get; init; } = "auto";
    /// <summary>Start from the weights of this checkpoint (ours or a published bd3lms one) with a fresh optimiser, e.g. to
    /// fine-tune at a smaller L' what was pretrained at L' = L. The architecture must match; L' and the schedule may differ.</summary>
    public string? InitFrom { get; init; }
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
    /// <param name="world">the ranks of a data-parallel run (<see cref="DataParallel.Join"/>); rank 0 alone reports and writes.</param>
    public static TrainingReport Run(TrainingRequest req, TrainingObserver? observer = null, CancellationToken cancel = default, ICollective? world = null)
    {
        world ??= SingleProcess.Instance;
        observer = world.Rank == 0 ? observer ?? new TrainingObserver() : new TrainingObserver();
        void Say(string s) => observer.OnMessage?.Invoke(s);
        req.Options.Validate();
        ValidateShape(req);
        new NoiseSchedule(req.ScheduleMin, req.ScheduleMax).Validate();
        if (!File.Exists(req.DataPath) && !Directory.Exists(req.DataPath)) throw new UserInputException($"corpus '{req.DataPath}' does not exist");
        if (File.Exists(req.DataPath)) InputFile.RequireRegular(req.DataPath, "corpus");
        if (!req.Resume && !req.Overwrite && HoldsCheckpoint(req.OutputDirectory))
            throw new UserInputException($"--out '{req.OutputDirectory}' already holds a checkpoint: add --resume to continue it, --overwrite to replace it, or choose another --out");

        var tokenizer = TokenizerFactory.Load(req.Tokenizer);
        ModelConfig config;
        TrainingState? resumeState = null;
        CheckpointSet.Recover(req.OutputDirectory);
        if (req.Resume)
        {
            if (!TrainingCheckpoint.Exists(req.OutputDirectory))
                throw new UserInputException($"--resume: '{req.OutputDirectory}' holds no {TrainingCheckpoint.StateFile}");
            config = ModelCheckpoint.LoadConfig(req.OutputDirectory);
            if (config.ModelLength != req.SeqLen || config.BlockSize != req.BlockSize)
                throw new UserInputException($"--resume: checkpoint has L={config.ModelLength}, L'={config.BlockSize} but the command asks for L={req.SeqLen}, L'={req.BlockSize}: checkpoint of another shape");
            MemoryEstimate.ForTraining(config, req.Options.BatchSize).EnsureFits(TrainingHint);
            tokenizer = TokenizerFactory.Load(ModelCheckpoint.TokenizerSpec(req.OutputDirectory, config.Tokenizer), config.MaskId);
            if (world.Rank == 0) resumeState = TrainingCheckpoint.Load(req.OutputDirectory, req.AllowNonFinite); // the others receive it below
        }
        else
        {
            config = BuildConfig(req, tokenizer);
        }
        long parameters = MemoryEstimate.ParameterCount(config);
        WritableLocation.RequireDirectory(req.OutputDirectory, "--out", CheckpointBytes(parameters));
        WritableLocation.RequireDirectory(TokenCacheDirectory(), "token cache directory (set XDG_CACHE_HOME to move it)", CorpusBytes(req.DataPath));

        var (backend, reason) = BackendChoice.Create(req.Backend, req.Precision);
        using var ownedBackend = backend;   // the run owns the backend: freed (with every device buffer) on return or throw
        Say($"backend {reason}");
        using var gradients = DataParallel.ForBackend(world, backend, req.Collective);
        var collective = gradients ?? world;
        if (world.Size > 1) Say($"data parallel: {collective.Description}; global batch {req.Options.BatchSize} = {world.Size} × {req.Options.BatchSize / Math.Max(1, world.Size)}");
        var data = TokenDataset.FromCorpus(req.DataPath, tokenizer, config.ModelLength, req.ValidFraction,
            cacheDir: TokenCacheDirectory(), packing: req.Packing);
        if (data.TrainRows.Count == 0) throw new UserInputException($"corpus '{req.DataPath}' is too small for one sequence of {config.ModelLength} tokens");
        Say($"data: {data.StreamTokens:N0} tokens → {data.TrainRows.Count} train / {data.ValidRows.Count} validation rows of {config.ModelLength}");

        var model = new Denoiser(backend, config);
        model.Initialize((int)(req.Options.Seed & 0x7FFFFFFF));
        if (req.InitFrom != null)
        {
            if (req.Resume) throw new UserInputException("--init-from starts a new run from a checkpoint's weights; it cannot be combined with --resume");
            var from = ModelCheckpoint.LoadConfig(req.InitFrom);
            if ((from.VocabSize, from.HiddenDim, from.CondDim, from.Layers, from.Heads) != (config.VocabSize, config.HiddenDim, config.CondDim, config.Layers, config.Heads))
                throw new UserInputException($"--init-from '{req.InitFrom}': its model ({from.Layers} layers × {from.HiddenDim}, {from.Heads} heads, cond {from.CondDim}, vocab {from.VocabSize}) is not the one requested ({config.Layers} × {config.HiddenDim}, {config.Heads} heads, cond {config.CondDim}, vocab {config.VocabSize})");
            model.LoadWeights(ModelCheckpoint.LoadWeights(req.InitFrom, from, model.Params));
            Say($"weights from {req.InitFrom} (trained at L'={from.BlockSize}); fresh optimiser");
        }
        Say($"model: {config.Layers} layers × {config.HiddenDim} wide, {config.Heads} heads, {model.Params.Count:N0} parameters, L={config.ModelLength}, L'={config.BlockSize}, vocab {config.VocabSize} ({tokenizer.Name})");
        var sampler = BatchSampler.ForTraining(data, req.Options.BatchSize, req.Options.Seed);
        using var trainer = new Trainer(model, req.Options, new SamplerBatchSource(sampler), collective);
        if (trainer.Buckets is { } buckets)
            Say($"gradient all-reduce: {buckets.Buckets.Count} buckets (--allreduce-bucket-mb {req.Options.AllReduceBucketMb.ToString(System.Globalization.CultureInfo.InvariantCulture)}), {(buckets.Overlaps ? "overlapped with the backward pass" : "each summed as the backward pass finishes it")}");
        using var evaluator = new Evaluator(model);   // one workspace for every evaluation of the run
        if (resumeState != null)
        {
            trainer.Restore(resumeState);
            Say($"resumed at step {trainer.Step} with schedule {trainer.Schedule}");
        }
        TrainingStateBroadcast.FromRoot(collective, trainer);
        Say($"schedule: {trainer.Schedule}");
        var validRows = data.ValidRows.Take(Math.Max(1, req.Options.EvalBatches * req.Options.BatchSize)).Select(r => data.Row(r).ToArray()).ToList();

        int? lastSaved = resumeState?.Step;
        void Checkpoint(Trainer t)
        {
            if (world.Rank != 0) return;
            var state = t.Capture();
            CheckpointSet.Publish(req.OutputDirectory, t.Step,
            [
                TrainingCheckpoint.File(state),
                .. ModelCheckpoint.Files(config with { ScheduleMin = t.Schedule.Min, ScheduleMax = t.Schedule.Max }, model.Params, state.Ema),
                LogFile(t.LossLog),
            ]);
            ModelCheckpoint.StoreTokenizer(req.OutputDirectory, config.Tokenizer);
            lastSaved = t.Step;
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
            if (world.Rank != 0) { TrainingStateBroadcast.ScheduleFromRoot(collective, t); return; }
            if (req.Options.ScheduleSearchEvery > 0 && t.Step % req.Options.ScheduleSearchEvery == 0)
            {
                var (best, cells) = t.WithEmaWeights(() => ScheduleSearch.Run(model, validRows, req.Options.BatchSize, cancel: cancel));
                t.Schedule = new NoiseSchedule(best.Min, best.Max);
                observer.OnScheduleSearch?.Invoke(t.Step, best, cells);
                Say($"step {t.Step}: schedule search picked {t.Schedule} (NELBO variance {best.Variance:g4})");
            }
            TrainingStateBroadcast.ScheduleFromRoot(collective, t);
            var r = t.WithEmaWeights(() => evaluator.Evaluate(validRows, req.Options.BatchSize, cancel: cancel));
            observer.OnEval?.Invoke(t.Step, r);
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        double tps = 0;
        int startStep = trainer.Step;
        try { trainer.Run(p => { tps = p.TokensPerSecond; observer.OnStep?.Invoke(p); }, Checkpoint, Evaluate, cancel); }
        catch (TrainingDivergedException e)
        {
            throw new UserInputException(e.Message + (lastSaved is int s
                ? $"; '{req.OutputDirectory}' keeps the checkpoint of step {s}" : "; no checkpoint was saved (use --checkpoint-every)"), e);
        }
        clock.Stop();
        bool cancelled = trainer.Step < req.Options.Steps;
        Checkpoint(trainer);
        EvalResult? final = null;
        if (validRows.Count > 0 && !cancelled && world.Rank == 0)
        {
            int take = req.Options.FinalEvalSequences > 0 ? req.Options.FinalEvalSequences : data.ValidRows.Count;
            var allValid = data.ValidRows.Take(take).Select(r => data.Row(r).ToArray()).ToList();
            final = trainer.WithEmaWeights(() => evaluator.Evaluate(allValid, req.Options.BatchSize));
        }
        var log = trainer.LossLog;
        return new TrainingReport(trainer.Step - startStep, log.Count > 0 ? log[^1].Loss : double.NaN, final, tps, clock.Elapsed, log, req.OutputDirectory, cancelled);
    }

    /// <summary>Tokenised corpora are cached per user ($XDG_CACHE_HOME or ~/.cache), never inside an output directory.</summary>
    public static string TokenCacheDirectory() =>
        Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "fastblockdiff", "tokens");

    const string TrainingHint = "use a smaller --hidden-dim, --layers, --seq-len, --batch-size or vocabulary";

    static void ValidateShape(TrainingRequest req)
    {
        static void Require(bool ok, string message) { if (!ok) throw new UserInputException(message); }
        Require(req.SeqLen >= 3, $"--seq-len must be at least 3 (BOS, one token, EOS), got {req.SeqLen}");
        Require(req.BlockSize > 0 && req.BlockSize <= req.SeqLen, $"--block-size must be in [1, --seq-len = {req.SeqLen}], got {req.BlockSize}");
        Require(req.SeqLen % req.BlockSize == 0, $"sequence length {req.SeqLen} is not divisible by block size {req.BlockSize}");
        Require(req.ModelSize is "custom" || ModelConfig.SizeNames.Contains(req.ModelSize), $"--model '{req.ModelSize}': use tiny, small or custom");
        Require(req.HiddenDim is null or > 0, $"--hidden-dim must be positive, got {req.HiddenDim}");
        Require(req.Layers is null or > 0, $"--layers must be positive, got {req.Layers}");
        Require(req.Heads is null or > 0, $"--heads must be positive, got {req.Heads}");
        Require(req.Dropout is >= 0f and < 1f, $"--dropout must be in [0, 1), got {req.Dropout}");
        Require(req.ValidFraction is >= 0 and < 1, $"validation fraction must be in [0, 1), got {req.ValidFraction}");
    }

    /// <summary>A directory holding any file of a checkpoint (model or training state).</summary>
    static bool HoldsCheckpoint(string dir) =>
        Directory.Exists(dir) && new[] { ModelCheckpoint.ConfigFile, ModelCheckpoint.WeightsFile, TrainingCheckpoint.StateFile }
            .Any(f => File.Exists(Path.Combine(dir, f)));

    /// <summary>model.safetensors (EMA weights) and training_state.safetensors (weights, two moments, EMA), with headroom for headers and logs.</summary>
    static long CheckpointBytes(long parameters) => 5 * 4 * parameters + (1 << 20);

    /// <summary>The token cache holds at most one 4-byte id per corpus byte (and an EOS per document).</summary>
    static long CorpusBytes(string path)
    {
        try
        {
            long bytes = Directory.Exists(path)
                ? new DirectoryInfo(path).EnumerateFiles("*.txt", SearchOption.AllDirectories).Sum(f => f.Length)
                : new FileInfo(path).Length;
            return 4 * bytes + 4096;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return 0; }
    }

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
        c = c with { Dropout = req.Dropout, Tokenizer = tok.Describe().Spec, ScheduleMin = req.ScheduleMin, ScheduleMax = req.ScheduleMax, Noise = req.Noise };
        c.Validate();
        MemoryEstimate.ForTraining(c, req.Options.BatchSize).EnsureFits(TrainingHint);
        return c;
    }

    static CheckpointFile LogFile(IReadOnlyList<(int Step, double Loss)> log)
    {
        var bytes = new System.Text.UTF8Encoding(false).GetBytes(
            "step,loss\n" + string.Concat(log.Select(l => string.Create(CultureInfo.InvariantCulture, $"{l.Step},{l.Loss:R}\n"))));
        return new CheckpointFile("train_log.csv", s => s.Write(bytes));
    }
}
