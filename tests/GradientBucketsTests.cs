using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Distributed;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// The bucketed, overlapped gradient all-reduce without a launcher: the bucket plan on awkward sizes (the same plan
/// serves MPI and NCCL), the backward pass's "gradients done from offset" hook, the trainer starting each bucket once
/// per step only when its gradients are final, and the communication thread's ordering and failures.
/// </summary>
public sealed class GradientBucketsTests
{
    static ParameterSet Params(int layers = 2) => Denoiser.BuildParameterSet(TinyModels.Config(layers: layers));

    /// <summary>The buckets tile [0, Count) from the top down, and each boundary is a parameter tensor's boundary.</summary>
    static void AssertTiles(ParameterSet p, IReadOnlyList<GradientBucket> buckets)
    {
        var starts = p.Infos.Select(i => i.Offset).ToHashSet();
        int end = p.Count;
        foreach (var b in buckets)
        {
            Assert.Equal(end, b.End);
            Assert.True(b.Length > 0);
            Assert.Contains(b.Offset, starts);
            end = b.Offset;
        }
        Assert.Equal(0, end);
    }

    [Fact]
    public void ZeroAndOversizedBucketsAreOneAllReduceOfTheWholeBuffer()
    {
        var p = Params();
        Assert.Equal([new GradientBucket(0, p.Count)], GradientBuckets.Plan(p, 0));
        Assert.Equal([new GradientBucket(0, p.Count)], GradientBuckets.Plan(p, 1e6)); // a bucket larger than the buffer
    }

    [Fact]
    public void TinyBucketsHoldOneParameterTensorEach()
    {
        var p = Params();
        var buckets = GradientBuckets.Plan(p, 1e-9); // far below one float
        AssertTiles(p, buckets);
        Assert.Equal(p.Infos.Reverse().Select(i => new GradientBucket(i.Offset, i.Length)), buckets);
    }

    [Fact]
    public void BucketsAreTheSmallestRunsOfWholeTensorsThatReachTheSize()
    {
        var p = Params(layers: 3);
        foreach (double mb in new[] { 0.0004, 0.001, 0.0037, 0.01 })
        {
            var buckets = GradientBuckets.Plan(p, mb);
            AssertTiles(p, buckets);
            long cap = (long)Math.Ceiling(mb * 1e6 / 4);
            var tensors = p.Infos.ToDictionary(i => i.Offset);
            for (int i = 0; i < buckets.Count; i++)
            {
                var b = buckets[i];
                // closed at the first tensor that reaches the size: without its lowest tensor it would fall short
                Assert.True(b.Length - tensors[b.Offset].Length < cap, $"{mb} MB: bucket [{b.Offset}, {b.End}) is larger than needed");
                if (i < buckets.Count - 1) Assert.True(b.Length >= cap, $"{mb} MB: bucket [{b.Offset}, {b.End}) closed below {cap} floats");
            }
            Assert.True(buckets.Count > 1 && buckets.Count < p.Infos.Count, $"{mb} MB gave {buckets.Count} buckets of {p.Infos.Count} tensors");
        }
    }

    [Fact]
    public void BucketSizeMustBeAFiniteNumberOfMegabytes()
    {
        foreach (double bad in new[] { -1, double.NaN, double.PositiveInfinity })
        {
            var e = Assert.Throws<UserInputException>(() => GradientBuckets.Plan(Params(), bad));
            Assert.Contains("--allreduce-bucket-mb", e.Message);
            Assert.Throws<UserInputException>(() => new TrainOptions { AllReduceBucketMb = bad }.Validate());
        }
    }

    static Bd3Batch Batch(ModelConfig c, int batch, int seed)
    {
        var b = new Bd3Batch(batch, c.ModelLength, c.BlockSize);
        b.Noise(TinyModels.Tokens(batch * c.ModelLength, c.VocabSize - 1, seed), new NoiseSchedule(0.2f, 0.8f), c.MaskId, new Rng((ulong)seed));
        return b;
    }

    [Fact]
    public void BackwardAnnouncesOnlyGradientsItWillNotWriteAgain()
    {
        var c = TinyModels.Config(layers: 3);
        using var model = TinyModels.Random(c);
        using var objective = new Bd3Objective(model);
        var cpu = model.Backend;
        var announced = new List<(int From, float[] Tail)>();
        cpu.Fill(model.Grads, 0f);
        objective.Run(Batch(c, 2, 5), backward: true, gradientsDoneFrom: from =>
        {
            var all = new float[model.Params.Count];
            cpu.Download(model.Grads, all);
            announced.Add((from, all[from..]));
        });
        var final = new float[model.Params.Count];
        cpu.Download(model.Grads, final);

        // output layer, each block from the last to the first, then everything
        int[] expected = [model.Params["output_layer.norm_final.weight"].Offset,
            .. Enumerable.Range(0, c.Layers).Reverse().Select(l => model.Params[$"blocks.{l}.norm1.weight"].Offset), 0];
        Assert.Equal(expected, announced.Select(a => a.From));
        foreach (var (from, tail) in announced)
            Assert.True(tail.AsSpan().SequenceEqual(final.AsSpan(from)), $"gradients at offsets ≥ {from} changed after the backward pass announced them done");
        Assert.Contains(final, g => g != 0f);

        // the hook changes nothing: the same gradients without it, bit for bit
        cpu.Fill(model.Grads, 0f);
        objective.Run(Batch(c, 2, 5), backward: true);
        var plain = new float[model.Params.Count];
        cpu.Download(model.Grads, plain);
        Assert.Equal(final, plain);
    }

    /// <summary>Size 2, rank 0; its transport records every bucket (and its contents) when started and when the step completes.</summary>
    sealed class RecordingWorld : ICollective
    {
        public readonly List<(int Offset, int Length, float[] AtStart)> Started = [];
        public readonly List<float[]> AtComplete = [];
        public int Completes;
        public FloatView Grads;
        public int Rank => 0;
        public int Size => 2;
        public string Description => "recording";
        public TimeSpan Timeout => TimeSpan.FromSeconds(1);
        public void AllReduce(IBackend backend, FloatView buffer, ReduceOp op) => throw new InvalidOperationException("the unbucketed path ran");
        public void AllReduce(Span<double> values, ReduceOp op) { }
        public void Broadcast(Span<byte> data, int root) { }
        public void Barrier() { }
        public void Abort(string message, int exitCode) { }
        public void Dispose() { }
        public IBucketedAllReduce OpenBuckets(IBackend backend) => new Transport(this, backend);

        sealed class Transport(RecordingWorld w, IBackend b) : IBucketedAllReduce
        {
            public bool Overlaps => true;
            public void Start(FloatView bucket)
            {
                var v = new float[bucket.Length];
                b.Download(bucket, v);
                w.Started.Add((bucket.Offset, bucket.Length, v));
            }
            public void Complete()
            {
                w.Completes++;
                var all = new float[w.Grads.Length];
                b.Download(w.Grads, all);
                w.AtComplete.Add(all);
            }
            public void Dispose() { }
        }
    }

    sealed class CountingBatches(int length, int vocab) : IBatchSource
    {
        int _next;
        public int SequenceLength => length;
        public void Next(Span<int> dst, int batch) { for (int i = 0; i < dst.Length; i++) dst[i] = (_next++ * 7 + i) % vocab; }
        public long[] SaveState() => [_next];
        public void RestoreState(long[] state) => _next = (int)state[0];
    }

    [Fact]
    public void TrainerStartsEveryBucketOncePerStepAfterItsLastGradient()
    {
        var c = TinyModels.Config(layers: 3);
        using var model = TinyModels.Random(c);
        var world = new RecordingWorld { Grads = model.Grads };
        var options = new TrainOptions { BatchSize = 4, GradAccumulation = 3, AllReduceBucketMb = 0.002, WarmupSteps = 1 };
        using var trainer = new Trainer(model, options, new CountingBatches(c.ModelLength, c.VocabSize - 1), world);
        var plan = trainer.Buckets!.Buckets;
        Assert.True(plan.Count >= 4, $"only {plan.Count} buckets");
        for (int step = 0; step < 2; step++) trainer.TrainStep();

        Assert.Equal(2, world.Completes);
        // once per step (not per micro-batch), in plan order
        Assert.Equal(plan.Concat(plan).Select(b => (b.Offset, b.Length)), world.Started.Select(s => (s.Offset, s.Length)));
        // each bucket held its final gradients (those of all three micro-batches) when it was started
        for (int i = 0; i < world.Started.Count; i++)
        {
            var (offset, length, atStart) = world.Started[i];
            var final = world.AtComplete[i / plan.Count].AsSpan(offset, length);
            Assert.True(final.SequenceEqual(atStart), $"bucket [{offset}, {offset + length}) changed after it was started");
        }
        Assert.True(trainer.LastAllReduceWait >= TimeSpan.Zero);
    }

    [Fact]
    public void UnbucketedTrainerAllReducesTheWholeBufferOnce()
    {
        var c = TinyModels.Config();
        using var model = TinyModels.Random(c);
        var world = new CountingWorld();
        using var trainer = new Trainer(model, new TrainOptions { BatchSize = 2, GradAccumulation = 2, AllReduceBucketMb = 0 },
            new CountingBatches(c.ModelLength, c.VocabSize - 1), world);
        Assert.Null(trainer.Buckets);
        trainer.TrainStep();
        Assert.Equal([model.Params.Count], world.Reduced);
    }

    sealed class CountingWorld : ICollective
    {
        public readonly List<int> Reduced = [];
        public int Rank => 1;
        public int Size => 2;
        public string Description => "counting";
        public TimeSpan Timeout => TimeSpan.FromSeconds(1);
        public void AllReduce(IBackend backend, FloatView buffer, ReduceOp op) => Reduced.Add(buffer.Length);
        public void AllReduce(Span<double> values, ReduceOp op) { }
        public void Broadcast(Span<byte> data, int root) { }
        public void Barrier() { }
        public void Abort(string message, int exitCode) { }
        public void Dispose() { }
        public IBucketedAllReduce OpenBuckets(IBackend backend) => throw new InvalidOperationException("the bucketed path opened");
    }

    /// <summary>A world whose all-reduce doubles the buffer (two ranks holding the same values) on the calling thread, or fails at one
    /// bucket: once <paramref name="failWhen"/> is set, where one is given, so that the test decides when the failure happens.</summary>
    sealed class DoublingWorld(int failAt = -1, ManualResetEventSlim? failWhen = null) : ICollective
    {
        public readonly List<(int Offset, int Thread)> Calls = [];
        public int Rank => 0;
        public int Size => 2;
        public string Description => "doubling";
        public TimeSpan Timeout => TimeSpan.FromSeconds(1);
        public void AllReduce(IBackend backend, FloatView buffer, ReduceOp op)
        {
            bool fail;
            lock (Calls)
            {
                Calls.Add((buffer.Offset, Environment.CurrentManagedThreadId));
                fail = Calls.Count - 1 == failAt;
            }
            if (fail)
            {
                failWhen?.Wait();
                throw new CollectiveFailedException("rank 1 did not arrive at collective #2", culprit: 1);
            }
            backend.ScaleShift(buffer, 2f, 0f);
        }
        public void AllReduce(Span<double> values, ReduceOp op) { }
        public void Broadcast(Span<byte> data, int root) { }
        public void Barrier() { }
        public void Abort(string message, int exitCode) { }
        public void Dispose() { }
    }

    [Fact]
    public void CommunicationThreadReducesTheBucketsInOrderOffTheCallersThread()
    {
        using var cpu = new CpuBackend();
        var grads = cpu.AllocFloat(100);
        cpu.Upload(grads, Enumerable.Range(0, 100).Select(i => (float)i).ToArray());
        var world = new DoublingWorld();
        GradientBucket[] plan = [new(90, 10), new(40, 50), new(39, 1), new(0, 39)];
        using (var reduce = new GradientAllReduce(world, cpu, grads, plan))
        {
            Assert.False(reduce.Overlaps); // a world without a transport of its own sums each bucket as it starts
            // the trainer's order: two buckets announced done during backward, the rest at Complete
            reduce.GradientsDoneFrom(40);
            reduce.Complete();
        }
        var got = new float[100];
        cpu.Download(grads, got);
        Assert.Equal(Enumerable.Range(0, 100).Select(i => 2f * i), got);
        Assert.Equal([90, 40, 39, 0], world.Calls.Select(c => c.Offset));
        // the communication thread: same order, not on the caller's thread
        var threadedWorld = new DoublingWorld();
        using (var threaded = new ThreadedBucketedAllReduce(threadedWorld, cpu))
        {
            threaded.Start(grads.Slice(0, 10));
            threaded.Start(grads.Slice(10, 10));
            Assert.True(threaded.Overlaps);
            threaded.Complete();
        }
        Assert.Equal([0, 10], threadedWorld.Calls.Select(c => c.Offset));
        Assert.All(threadedWorld.Calls, c => Assert.NotEqual(Environment.CurrentManagedThreadId, c.Thread));
        grads.Storage.Dispose();
    }

    [Fact]
    public void FailureOfAnInFlightBucketReachesTheCallerNamingTheRank()
    {
        using var cpu = new CpuBackend();
        var grads = cpu.AllocFloat(30);
        // the second bucket fails only after all three are queued: the failure is then in flight, never already known
        // to Start (which rethrows an earlier failure), whatever the thread's timing
        using var inFlight = new ManualResetEventSlim();
        var world = new DoublingWorld(failAt: 1, failWhen: inFlight);
        using var threaded = new ThreadedBucketedAllReduce(world, cpu);
        threaded.Start(grads.Slice(20, 10));
        threaded.Start(grads.Slice(10, 10));
        threaded.Start(grads.Slice(0, 10));
        inFlight.Set();
        var e = Assert.Throws<CollectiveFailedException>(threaded.Complete);
        Assert.Equal(1, e.Culprit);
        Assert.Contains("rank 1", e.Message);
        Assert.Equal(2, world.Calls.Count); // the bucket after the failed one was not attempted
        Assert.Throws<CollectiveFailedException>(() => threaded.Start(grads.Slice(0, 10)));
        grads.Storage.Dispose();
    }
}
