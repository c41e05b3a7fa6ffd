using System.Diagnostics;
using FastBlockDiff.Engine.Distributed;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Training;

/// <summary>Progress of one optimiser step, for callbacks (progress bars, logs).</summary>
public readonly record struct TrainProgress(int Step, int TotalSteps, double Loss, float LearningRate, double GradNorm, double TokensPerSecond, TimeSpan Elapsed, TimeSpan Eta);

/// <summary>
/// BD3-LM training: vectorised NELBO, AdamW with warm-up and clipping, EMA of the weights. Its whole state
/// (weights, moments, EMA, step, RNG, data position, schedule) round-trips through <see cref="TrainingState"/>.
/// Data-parallel over a <see cref="ICollective"/> of N ranks: every rank draws and noises the same global batch (same
/// data position, same RNG), trains on its own contiguous 1/N of the rows, and the gradients are summed across ranks
/// (each rank's share already scaled to the global mean), so every rank takes the identical optimiser step. With
/// <see cref="TrainOptions.AllReduceBucketMb"/> &gt; 0 the sum runs bucket by bucket, each bucket started during the
/// backward pass of the last micro-batch as soon as its gradients are final (<see cref="GradientAllReduce"/>).
/// The step stays on the device (<see cref="DeviceStep"/>): the loss and Σg² are summed there, the clip factor is taken
/// there by the AdamW kernel, and <see cref="ReadBack"/> reads them every <see cref="ReadBackEvery"/> steps (and before
/// evaluations, checkpoints and the end), which is also where a divergence is detected: within that many steps.
/// </summary>
public sealed class Trainer : IDisposable
{
    public Denoiser Model { get; }
    public TrainOptions Options { get; }
    public int Step { get; private set; }
    /// <summary>The training schedule; its kind is the model's (config noise_type): setting a clipped range keeps it.</summary>
    public NoiseSchedule Schedule { get => _schedule; set => _schedule = value with { Kind = Model.Config.Noise }; }
    NoiseSchedule _schedule;
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
    readonly ICollective _world;
    readonly Bd3Batch? _shard;
    readonly GradientAllReduce? _buckets;
    // the steps taken since the last read-back, and their records on the device: per step the loss sum of each
    // micro-batch, then the gradient's Σg², each a double in two float slots (DoubleSlots)
    readonly List<(int Step, float Lr, double? HostLoss)> _pending = [];
    readonly FloatView _records;
    readonly float[] _recordsHost;

    /// <summary>Steps between two read-backs of loss and gradient norm (the host waits for the device only then).</summary>
    public int ReadBackEvery { get; }

    public ICollective World => _world;
    /// <summary>The bucketed gradient all-reduce (null with one rank or <see cref="TrainOptions.AllReduceBucketMb"/> 0).</summary>
    public GradientAllReduce? Buckets => _buckets;
    /// <summary>How long the last step waited, after its backward pass, for the gradient all-reduce (the part not hidden behind the pass).</summary>
    public TimeSpan LastAllReduceWait { get; private set; }

    public Trainer(Denoiser model, TrainOptions options, IBatchSource data, ICollective? world = null)
    {
        options.Validate();
        _world = world ?? SingleProcess.Instance;
        if (options.BatchSize % _world.Size != 0)
            throw new UserInputException($"--batch-size {options.BatchSize} (the global batch) is not divisible by the {_world.Size} ranks; use a multiple of {_world.Size}");
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
        if (_world.Size > 1) _shard = new Bd3Batch(options.BatchSize / _world.Size, model.Config.ModelLength, model.Config.BlockSize);
        if (_world.Size > 1 && options.AllReduceBucketMb > 0)
            _buckets = new GradientAllReduce(_world, _b, model.Grads, GradientBuckets.Plan(model.Params, options.AllReduceBucketMb));
        ReadBackEvery = options.ReadBackEvery > 0 ? options.ReadBackEvery : _b.ReadBackWaits ? 16 : 1;
        _records = _buffers.Float("step records (loss sums and gradient norms)", DoubleSlots.Floats(checked(ReadBackEvery * RecordsPerStep)));
        _recordsHost = new float[_records.Length];
    }

    int RecordsPerStep => Options.GradAccumulation + 1;
    FloatView Record(int step, int index) => _records.Slice(DoubleSlots.Floats(step * RecordsPerStep + index), 2);

    /// <summary>Device buffers the trainer holds: moments, EMA and the objective's workspace (for tests of ownership).</summary>
    public int BufferCount => _buffers.Count + _objective.BufferCount;

    /// <summary>Frees the moments, the EMA and the workspace; the model's weights stay with the model.</summary>
    public void Dispose()
    {
        _buckets?.Dispose();
        _objective.Dispose();
        _buffers.Dispose();
    }

    /// <summary>One optimiser step, read back at once; returns its loss (of this batch, before the update), gradient norm and learning rate.</summary>
    public (double Loss, double GradNorm, float Lr) TrainStep()
    {
        DeviceStep();
        var r = ReadBack()[^1];
        return (r.Loss, r.GradNorm, r.LearningRate);
    }

    /// <summary>
    /// One optimiser step with no host wait on a device backend: the batch goes up through asynchronous uploads, the loss
    /// and the gradient's Σg² stay on the device, and the AdamW kernel takes the clip factor from there (a non-finite norm
    /// leaves the weights as they were). Call <see cref="ReadBack"/> to see the loss and norm; a full record buffer
    /// (<see cref="ReadBackEvery"/> steps) is read back first.
    /// </summary>
    public void DeviceStep()
    {
        if (_pending.Count == ReadBackEvery) ReadBack();
        float dropout = Options.Dropout ? Model.Config.Dropout : 0f;
        int accum = Options.GradAccumulation, at = _pending.Count;
        _b.Fill(Model.Grads, 0f);
        double loss = 0;
        for (int k = 0; k < accum; k++)
        {
            // each micro-batch adds its gradient scaled by 1/accum (and by 1/N on each of N ranks): the mean over all
            // accum·BatchSize rows of the global batch
            _data.Next(_rows, Options.BatchSize);
            _batch.Noise(_rows, Schedule, Model.Config.MaskId, Rng, resample: true);
            ulong dropSeed = Rng.NextUInt64();
            if (_shard is null) _objective.Run(_batch, backward: true, dropout, dropSeed, 1f / accum, lossSum: Record(at, k));
            else loss += RunShard(dropout, dropSeed, 1f / accum, lastMicroBatch: k == accum - 1) / accum;
        }
        double? hostLoss = _shard is null ? null : SumAcrossRanks(loss);
        var sumSquares = Record(at, accum);
        _b.SumTo(Model.Grads, sumSquares, squares: true);
        float lr = Options.LearningRateAt(Step);
        Step++;
        _b.AdamWEmaClipped(Model.Weights, Model.Grads, _m, _v, Ema, new AdamWStep(lr, Options.Beta1, Options.Beta2, Options.Epsilon, Options.WeightDecay, Step, 1f),
            Options.EmaDecayAt(Step), Options.GradClip, sumSquares);
        Model.InvalidateConditioning();
        _pending.Add((Step, lr, hostLoss));
    }

    /// <summary>
    /// Reads the loss and gradient norm of the steps taken since the last read-back (one wait for the device), adds them
    /// to <see cref="LossLog"/> and returns them in order. A non-finite value throws <see cref="TrainingDivergedException"/>
    /// naming its step: a divergence is detected within <see cref="ReadBackEvery"/> steps (the steps after it ran, and
    /// the weights are past the last good checkpoint, which the trainer never overwrites with them).
    /// </summary>
    public List<(int Step, double Loss, double GradNorm, float LearningRate)> ReadBack()
    {
        var done = new List<(int, double, double, float)>(_pending.Count);
        if (_pending.Count == 0) return done;
        var host = _recordsHost.AsSpan(0, DoubleSlots.Floats(_pending.Count * RecordsPerStep));
        _b.Download(_records.Slice(0, host.Length), host);
        int accum = Options.GradAccumulation, rows = _batch.Batch * _batch.Length;
        try
        {
            for (int i = 0; i < _pending.Count; i++)
            {
                var (step, lr, hostLoss) = _pending[i];
                double loss = 0;
                if (hostLoss is double l) loss = l;
                else for (int k = 0; k < accum; k++) loss += DoubleSlots.Read(host, i * RecordsPerStep + k) / rows / accum;
                double norm = Math.Sqrt(DoubleSlots.Read(host, i * RecordsPerStep + accum));
                if (!double.IsFinite(loss) || !double.IsFinite(norm))
                    throw new TrainingDivergedException(step, $"training diverged at step {step}: loss {loss}, gradient norm {norm} (learning rate {lr:g3}); " +
                        "lower --lr, raise --warmup or keep --grad-clip on, and resume from the last checkpoint");
                LossLog.Add((step, loss));
                done.Add((step, loss, norm, lr));
            }
        }
        finally { _pending.Clear(); }
        return done;
    }

    /// <summary>This rank's rows of the current global (micro-)batch, forward and backward; returns this rank's loss.</summary>
    double RunShard(float dropout, ulong dropSeed, float gradScale, bool lastMicroBatch)
    {
        _shard!.CopyRows(_batch, _world.Rank * _shard.Batch);
        // dropout masks are a hash of (seed, element index): each rank hashes its own seed so that shards differ
        ulong seed = Kernels.Dropout.Mix(dropSeed, (ulong)_world.Rank);
        // gradients are final only in the last micro-batch's backward: that one starts the buckets
        var done = lastMicroBatch && _buckets is { } b ? b.GradientsDoneFrom : (Action<int>?)null;
        return _objective.Run(_shard, backward: true, dropout, seed, gradScale: gradScale / _world.Size, gradientsDoneFrom: done);
    }

    /// <summary>Sums the ranks' gradients (each already scaled to the global mean) and averages their losses.</summary>
    double SumAcrossRanks(double localLoss)
    {
        long started = Stopwatch.GetTimestamp();
        if (_buckets is { } buckets) buckets.Complete();
        else _world.AllReduce(_b, Model.Grads, ReduceOp.Sum);
        LastAllReduceWait = Stopwatch.GetElapsedTime(started);
        Span<double> loss = [localLoss];
        _world.AllReduce(loss, ReduceOp.Average);
        return loss[0];
    }

    /// <summary>True when any rank was asked to stop (every rank must leave the loop at the same step).</summary>
    bool StopRequested(CancellationToken cancel)
    {
        if (_world.Size == 1) return cancel.IsCancellationRequested;
        Span<double> flag = [cancel.IsCancellationRequested ? 1 : 0];
        _world.AllReduce(flag, ReduceOp.Sum);
        return flag[0] > 0;
    }

    /// <summary>
    /// Runs until Options.Steps, calling back after each step once it is read back (every <see cref="ReadBackEvery"/>
    /// steps, and before an evaluation or checkpoint); stops early (state intact) on cancellation.
    /// </summary>
    public void Run(Action<TrainProgress>? onStep = null, Action<Trainer>? onCheckpoint = null, Action<Trainer>? onEval = null, CancellationToken cancel = default)
    {
        var clock = Stopwatch.StartNew();
        int startStep = Step;
        long tokens = 0;
        static bool Due(int step, int every) => every > 0 && step % every == 0;
        while (Step < Options.Steps)
        {
            List<(int Step, double Loss, double GradNorm, float LearningRate)> done;
            try
            {
                if (StopRequested(cancel)) break;
                DeviceStep();
                bool readNow = _pending.Count >= ReadBackEvery || Step == Options.Steps
                    || Due(Step, Options.ScheduleSearchEvery) || Due(Step, Options.EvalEvery) || Due(Step, Options.CheckpointEvery);
                if (!readNow) continue;
                done = ReadBack();
            }
            catch (CollectiveFailedException e) { throw new CollectiveFailedException($"step {Step + 1}: {e.Message}", e.Culprit); }
            foreach (var (step, loss, norm, lr) in done)
            {
                tokens += (long)Options.BatchSize * Options.GradAccumulation * Model.Config.ModelLength;
                double tps = tokens / Math.Max(1e-9, clock.Elapsed.TotalSeconds);
                var eta = TimeSpan.FromSeconds((Options.Steps - step) * clock.Elapsed.TotalSeconds / (step - startStep));
                onStep?.Invoke(new TrainProgress(step, Options.Steps, loss, lr, norm, tps, clock.Elapsed, eta));
            }
            if (Due(Step, Options.ScheduleSearchEvery)) onEval?.Invoke(this);
            else if (Due(Step, Options.EvalEvery)) onEval?.Invoke(this);
            if (Due(Step, Options.CheckpointEvery)) onCheckpoint?.Invoke(this);
        }
        ReadBack();   // what a cancellation left unread
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
        ReadBack();   // the loss log complete, and never the state of a diverged run
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
        _pending.Clear();
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
