using System.Diagnostics;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Training;

/// <summary>Progress of one optimiser step, for callbacks (progress bars, logs).</summary>
public readonly record struct TrainProgress(int Step, int TotalSteps, double Loss, float LearningRate, double GradNorm, double TokensPerSecond, TimeSpan Elapsed, TimeSpan Eta);

/// <summary>
/// BD3-LM training: vectorised NELBO, AdamW with warm-up and clipping, EMA of the weights. Its whole state
/// (weights, moments, EMA, step, RNG, data position, schedule) round-trips through <see cref="TrainingState"/>.
/// </summary>
public sealed class Trainer : IDisposable
{
    public Denoiser Model { get; }
    public TrainOptions Options { get; }
    public int Step { get; private set; }
    public NoiseSchedule Schedule { get; set; }
    public Rng Rng { get; }
    public FloatView Ema { get; }
    public List<(int Step, double Loss)> LossLog { get; } = [];

    readonly IBackend _b;
    readonly OwnedBuffers _buffers;
    readonly FloatView _m, _v;
    readonly Bd3Objective _objective;
    readonly IBatchSource _data;
    readonly Bd3Batch _batch;
    readonly int[] _rows;

    /// <summary>Steps that may run on the device before their loss and norm must be read back.</summary>
    public const int MaxPendingSteps = 256;
    // per pending step: Σ loss and Σ g² written on the device, the learning rate kept on the host
    readonly FloatView _lossSums, _gradSquares;
    readonly float[] _pendingLr = new float[MaxPendingSteps];
    int _pending;

    public Trainer(Denoiser model, TrainOptions options, IBatchSource data)
    {
        options.Validate();
        if (data.SequenceLength != model.Config.ModelLength)
            throw new UserInputException($"data rows have {data.SequenceLength} tokens but the model was built for L={model.Config.ModelLength}");
        Model = model; Options = options; _data = data; _b = model.Backend;
        Schedule = new NoiseSchedule(model.Config.ScheduleMin, model.Config.ScheduleMax);
        Schedule.Validate();
        Rng = new Rng(options.Seed);
        _buffers = new OwnedBuffers(_b);
        _m = _buffers.Float("Adam first moment", model.Params.Count); _v = _buffers.Float("Adam second moment", model.Params.Count);
        Ema = _buffers.Float("EMA weights", model.Params.Count);
        _b.Copy(Ema, model.Weights);
        _objective = new Bd3Objective(model);
        _batch = new Bd3Batch(options.BatchSize, model.Config.ModelLength, model.Config.BlockSize);
        _rows = new int[OwnedBuffers.Elements("batch tokens", options.BatchSize, model.Config.ModelLength)];
        _lossSums = _buffers.Float("loss sums of pending steps", MaxPendingSteps);
        _gradSquares = _buffers.Float("gradient squares of pending steps", MaxPendingSteps);
    }

    /// <summary>Device buffers the trainer holds: moments, EMA and the objective's workspace (for tests of ownership).</summary>
    public int BufferCount => _buffers.Count + _objective.BufferCount;

    /// <summary>Frees the moments, the EMA and the workspace; the model's weights stay with the model.</summary>
    public void Dispose()
    {
        _objective.Dispose();
        _buffers.Dispose();
    }

    /// <summary>One optimiser step; returns its loss (of this batch, before the update), gradient norm and learning rate.</summary>
    public (double Loss, double GradNorm, float Lr) TrainStep()
    {
        Advance();
        var done = ReadBack();
        return (done[^1].Loss, done[^1].GradNorm, done[^1].Lr);
    }

    /// <summary>
    /// Queues one optimiser step without waiting for the device: the loss sum and Σg² stay in device buffers, the
    /// clip factor min(1, clip/‖g‖) is applied by the AdamW kernel. <see cref="ReadBack"/> collects them.
    /// </summary>
    public void Advance()
    {
        if (_pending == MaxPendingSteps) ReadBack();
        _data.Next(_rows, Options.BatchSize);
        _batch.Noise(_rows, Schedule, Model.Config.MaskId, Rng, resample: true);
        ulong dropSeed = Rng.NextUInt64();
        float dropout = Options.Dropout ? Model.Config.Dropout : 0f;
        _b.Fill(Model.Grads, 0f);
        var gradSquares = _gradSquares.Slice(_pending, 1);
        _objective.Run(_batch, backward: true, dropout, dropSeed, lossSum: _lossSums.Slice(_pending, 1));
        _b.SumTo(Model.Grads, gradSquares, squares: true);
        float lr = Options.LearningRateAt(Step);
        Step++;
        _b.AdamWClipped(Model.Weights, Model.Grads, _m, _v, new AdamWStep(lr, Options.Beta1, Options.Beta2, Options.Epsilon, Options.WeightDecay, Step, 1f),
            Options.GradClip, gradSquares);
        _b.Ema(Ema, Model.Weights, Options.EmaDecayAt(Step));
        Model.InvalidateConditioning();
        _pendingLr[_pending++] = lr;
    }

    /// <summary>
    /// Reads the loss and gradient norm of every step queued since the last read-back (one synchronisation), appends
    /// them to <see cref="LossLog"/> and returns them. A non-finite gradient norm (that step left the weights unchanged)
    /// is an error.
    /// </summary>
    public IReadOnlyList<(int Step, double Loss, double GradNorm, float Lr)> ReadBack()
    {
        if (_pending == 0) return [];
        var losses = new float[_pending];
        var squares = new float[_pending];
        _b.Download(_lossSums.Slice(0, _pending), losses);
        _b.Download(_gradSquares.Slice(0, _pending), squares);
        int first = Step - _pending + 1, count = _pending;
        _pending = 0;
        double tokens = (double)Options.BatchSize * Model.Config.ModelLength;
        var done = new List<(int, double, double, float)>(count);
        for (int i = 0; i < count; i++)
        {
            double norm = Math.Sqrt(squares[i]);
            if (!double.IsFinite(norm)) throw new InvalidOperationException($"gradient norm is {norm} at step {first + i}; lower the learning rate");
            double loss = losses[i] / tokens;
            LossLog.Add((first + i, loss));
            done.Add((first + i, loss, norm, _pendingLr[i]));
        }
        return done;
    }

    /// <summary>Runs until Options.Steps, calling back after each step; stops early (state intact) on cancellation.</summary>
    public void Run(Action<TrainProgress>? onStep = null, Action<Trainer>? onCheckpoint = null, Action<Trainer>? onEval = null, CancellationToken cancel = default)
    {
        var clock = Stopwatch.StartNew();
        int startStep = Step;
        while (Step < Options.Steps && !cancel.IsCancellationRequested)
        {
            Advance();
            bool search = Options.ScheduleSearchEvery > 0 && Step % Options.ScheduleSearchEvery == 0;
            bool eval = search || (Options.EvalEvery > 0 && Step % Options.EvalEvery == 0);
            bool checkpoint = Options.CheckpointEvery > 0 && Step % Options.CheckpointEvery == 0;
            if (!(eval || checkpoint || Step % Options.ReadbackEvery == 0 || Step == Options.Steps || cancel.IsCancellationRequested)) continue;
            foreach (var (step, loss, norm, lr) in ReadBack())
            {
                double tps = (double)(step - startStep) * Options.BatchSize * Model.Config.ModelLength / Math.Max(1e-9, clock.Elapsed.TotalSeconds);
                var eta = TimeSpan.FromSeconds((Options.Steps - step) * clock.Elapsed.TotalSeconds / (Step - startStep));
                onStep?.Invoke(new TrainProgress(step, Options.Steps, loss, lr, norm, tps, clock.Elapsed, eta));
            }
            if (eval) onEval?.Invoke(this);
            if (checkpoint) onCheckpoint?.Invoke(this);
        }
    }

    /// <summary>Runs <paramref name="body"/> with the EMA weights loaded into the model, then restores the raw ones.</summary>
    public T WithEmaWeights<T>(Func<T> body)
    {
        var saved = _b.AllocFloat(Model.Params.Count);
        _b.Copy(saved, Model.Weights);
        _b.Copy(Model.Weights, Ema);
        Model.InvalidateConditioning();
        try { return body(); }
        finally
        {
            _b.Copy(Model.Weights, saved);
            Model.InvalidateConditioning();
            saved.Storage.Dispose();
        }
    }

    public TrainingState Capture()
    {
        ReadBack();   // the loss log is part of the state
        var n = Model.Params.Count;
        var s = new TrainingState
        {
            Step = Step, Rng = Rng.State, Data = _data.SaveState(), ScheduleMin = Schedule.Min, ScheduleMax = Schedule.Max,
            Weights = new float[n], M = new float[n], V = new float[n], Ema = new float[n], LossLog = [.. LossLog],
        };
        _b.Download(Model.Weights, s.Weights); _b.Download(_m, s.M); _b.Download(_v, s.V); _b.Download(Ema, s.Ema);
        return s;
    }

    public void Restore(TrainingState s)
    {
        int n = Model.Params.Count;
        if (s.Weights.Length != n || s.M.Length != n || s.V.Length != n || s.Ema.Length != n)
            throw new UserInputException($"training state holds {s.Weights.Length} parameters but the model has {n}");
        _pending = 0;
        Step = s.Step; Rng.State = s.Rng; _data.RestoreState(s.Data);
        Schedule = new NoiseSchedule(s.ScheduleMin, s.ScheduleMax);
        Model.LoadWeights(s.Weights); _b.Upload(_m, s.M); _b.Upload(_v, s.V); _b.Upload(Ema, s.Ema);
        LossLog.Clear(); LossLog.AddRange(s.LossLog);
    }
}

/// <summary>Everything a resumed run needs to continue the same trajectory.</summary>
public sealed class TrainingState
{
    public int Step;
    public ulong[] Rng = [];
    public long[] Data = [];
    public float ScheduleMin, ScheduleMax;
    public float[] Weights = [], M = [], V = [], Ema = [];
    public List<(int Step, double Loss)> LossLog = [];
}
