using System.Runtime.InteropServices;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Interop;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>The host-sync counters are process-wide: these tests run alone.</summary>
[CollectionDefinition("HostSyncs", DisableParallelization = true)]
public sealed class HostSyncCollection;

/// <summary>
/// The device-resident training step (issue 9, item 2): loss and Σg² stay on the device, the clip factor is taken by the
/// AdamW kernel, and the trainer reads them back every ReadBackEvery steps. On the CPU the protocol gives the same
/// trajectory bit for bit whatever the interval; on CUDA (the fake driver of tests/cuda-emu/fake, or a GPU) the steps
/// between two read-backs make no synchronising driver call, and the trajectory equals the CPU's.
/// </summary>
[Collection("HostSyncs")]
public class DeviceResidentStepTests
{
    static readonly Engine.Model.ModelConfig Tiny = TinyModels.Config(length: 8, blockSize: 2, vocab: 13, dim: 16, heads: 2, layers: 2) with { Dropout = 0.1f };

    static TrainOptions Options(int steps, int readBackEvery, int accum = 1) =>
        new() { Steps = steps, BatchSize = 2, GradAccumulation = accum, WarmupSteps = 2, LearningRate = 1e-2f, Seed = 5, GradClip = 0.5f, ReadBackEvery = readBackEvery };

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void ReadingBackEveryFewStepsLeavesTheCpuTrajectoryBitForBit(int accum)
    {
        // every step read back at once (today's protocol) against every 4 steps, and against the first step as the
        // host computes it by hand: norm = √(Σg²) from SumSquares, clip = GradClip/norm, then AdamW with the EMA
        var runs = new List<(List<(int Step, double Loss)> Log, float[] W, float[] Ema, List<double> Norms)>();
        foreach (int every in new[] { 1, 4 })
        {
            var m = TinyModels.Random(Tiny, seed: 11);
            using var tr = new Trainer(m, Options(7, every, accum), new EngineParity.FixedRows(8, 12));
            var norms = new List<double>();
            tr.Run(p => norms.Add(p.GradNorm));
            Assert.Equal(7, tr.LossLog.Count);
            var ema = new float[m.Params.Count];
            m.Backend.Download(tr.Ema, ema);
            runs.Add((tr.LossLog, m.DownloadWeights(), ema, norms));
        }
        Assert.Equal(runs[0].Log, runs[1].Log);
        Assert.Equal(runs[0].Norms, runs[1].Norms);
        Assert.Equal(runs[0].W, runs[1].W);
        Assert.Equal(runs[0].Ema, runs[1].Ema);
        Assert.True(runs[0].Norms[0] > 0.5, "the test should clip");

        // step 1 by hand, the way the trainer computed it before the step moved to the device
        var model = TinyModels.Random(Tiny, seed: 11);
        var be = model.Backend;
        var opts = Options(1, 1, accum);
        var objective = new Bd3Objective(model);
        var rows = new int[opts.BatchSize * 8];
        var batch = new Bd3Batch(opts.BatchSize, 8, 2);
        var data = new EngineParity.FixedRows(8, 12);
        var rng = new Rng(opts.Seed);
        var schedule = new NoiseSchedule(model.Config.ScheduleMin, model.Config.ScheduleMax);
        be.Fill(model.Grads, 0f);
        double loss = 0;
        for (int k = 0; k < accum; k++)
        {
            data.Next(rows, opts.BatchSize);
            batch.Noise(rows, schedule, model.Config.MaskId, rng, resample: true);
            loss += objective.Run(batch, backward: true, model.Config.Dropout, rng.NextUInt64(), 1f / accum) / accum;
        }
        double norm = Math.Sqrt(be.SumSquares(model.Grads));
        float clip = norm > opts.GradClip ? (float)(opts.GradClip / norm) : 1f;
        var mm = be.AllocFloat(model.Params.Count); var vv = be.AllocFloat(model.Params.Count); var ee = be.AllocFloat(model.Params.Count);
        be.Copy(ee, model.Weights);
        be.AdamWEma(model.Weights, model.Grads, mm, vv, ee, new AdamWStep(opts.LearningRateAt(0), opts.Beta1, opts.Beta2, opts.Epsilon, opts.WeightDecay, 1, clip), opts.EmaDecayAt(1));

        var m1 = TinyModels.Random(Tiny, seed: 11);
        using var t1 = new Trainer(m1, opts with { ReadBackEvery = 3 }, new EngineParity.FixedRows(8, 12));
        t1.DeviceStep();
        var r = Assert.Single(t1.ReadBack());
        Assert.Equal(loss, r.Loss);
        Assert.Equal(norm, r.GradNorm);
        Assert.Equal(model.DownloadWeights(), m1.DownloadWeights());
    }

    [Fact]
    public void ADivergenceIsDetectedWithinTheReadBackInterval()
    {
        var m = TinyModels.Random(Tiny, seed: 11);
        var opts = Options(40, 5) with { LearningRate = 1e30f, WarmupSteps = 0, GradClip = 0 };
        using var tr = new Trainer(m, opts, new EngineParity.FixedRows(8, 12));
        var e = Assert.Throws<TrainingDivergedException>(() => tr.Run());
        Assert.Matches(@"diverged at step \d+", e.Message);
        Assert.InRange(e.Step, tr.Step - 4, tr.Step);
        Assert.Equal(e.Step - 1, tr.LossLog.Count);   // the good steps before it are logged, nothing after
        Assert.All(tr.LossLog, l => Assert.True(double.IsFinite(l.Loss)));
    }

    [Fact]
    public void ReadBackIntervalIsValidated()
    {
        var e = Assert.Throws<Engine.UserInputException>(() => new TrainOptions { ReadBackEvery = -1 }.Validate());
        Assert.Contains("read-back", e.Message);
    }

    /// <summary>The fake driver's own count of synchronising calls, or null on a real driver.</summary>
    static unsafe long? FakeDriverSyncs()
    {
        var path = CudaLibraries.Probe(CudaLibrary.Driver).Path;
        if (path == null || !NativeLibrary.TryLoad(path, out var lib)) return null;
        return NativeLibrary.TryGetExport(lib, "fake_host_syncs", out var f) ? ((delegate* unmanaged<long>)f)() : null;
    }

    [Fact]
    public void CudaStepsBetweenReadBacksDoNotSynchroniseAndMatchTheCpu()
    {
        using var g = CudaEngineTests.Gpu();
        Assert.True(((IBackend)g).ReadBackWaits);
        var cpuModel = TinyModels.Random(Tiny, seed: 11, backend: new CpuBackend());
        var gpuModel = TinyModels.Random(Tiny, seed: 11, backend: g);
        using var cpu = new Trainer(cpuModel, Options(4, 1), new EngineParity.FixedRows(8, 12));
        using var gpu = new Trainer(gpuModel, Options(4, 0), new EngineParity.FixedRows(8, 12));
        Assert.Equal(16, gpu.ReadBackEvery);   // auto on a device backend

        gpu.DeviceStep();   // the first step allocates the workspace and scratch, loads the kernels
        var first = gpu.ReadBack();
        long syncs = Cu.HostSyncs, uploads = g.AsyncUploads;
        long? fake = FakeDriverSyncs();
        for (int i = 0; i < 3; i++) gpu.DeviceStep();
        Assert.Equal(syncs, Cu.HostSyncs);
        if (fake is long f) Assert.Equal(f, FakeDriverSyncs());
        Assert.True(g.AsyncUploads >= uploads + 3 * 4, "the batches went up through the pinned ring");
        Assert.Equal(0, g.StagingWaits);
        var rest = gpu.ReadBack();
        Assert.True(Cu.HostSyncs > syncs, "the read-back waits for the device");
        Assert.Equal(3, rest.Count);

        var expected = Enumerable.Range(0, 4).Select(_ => cpu.TrainStep()).ToList();
        var got = first.Concat(rest).ToList();
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(i + 1, got[i].Step);
            Assert.True(Math.Abs(expected[i].Loss - got[i].Loss) <= 1e-4 * Math.Abs(expected[i].Loss), $"step {i + 1} loss {expected[i].Loss} vs {got[i].Loss}");
            Assert.True(Math.Abs(expected[i].GradNorm - got[i].GradNorm) <= 1e-4 * expected[i].GradNorm, $"step {i + 1} norm {expected[i].GradNorm} vs {got[i].GradNorm}");
        }
        CudaBackendTests.Close("weights after four device-resident steps", cpuModel.DownloadWeights(), gpuModel.DownloadWeights(), 1e-4);
        var (ce, ge) = (new float[cpuModel.Params.Count], new float[cpuModel.Params.Count]);
        cpuModel.Backend.Download(cpu.Ema, ce); g.Download(gpu.Ema, ge);
        CudaBackendTests.Close("EMA after four device-resident steps", ce, ge, 1e-4);
    }

    /// <summary>
    /// The sampling step on the device: a first-hitting or DDPM block is uploaded once, each step writes the tokens it
    /// samples into the device block, and the block is read back once, at its end. Generations of the same blocks that
    /// differ only in their number of denoising steps (and model calls) make the same number of synchronising calls, so a
    /// denoising step makes none; the tokens and NFEs equal the CPU sampler's for the same seed.
    /// </summary>
    [Fact]
    public void CudaSamplingStepsInsideABlockDoNotSynchroniseAndMatchTheCpu()
    {
        using var g = CudaEngineTests.Gpu();
        var config = TinyModels.Config(length: 16, blockSize: 4, vocab: 13);
        using var sampler = new BlockSampler(TinyModels.Random(config, 3, g), 9, 10);
        using var cpuSampler = new BlockSampler(TinyModels.Random(config, 3, new CpuBackend()), 9, 10);
        static SamplingOptions Options(SamplerKind kind, int steps) => new()
        {
            MaxTokens = 4, Seed = 42, Kind = kind, StepsPerBlock = steps, StopOnEos = false, EntropyThreshold = 0, BatchSize = 1, TopP = 0.9f,
        };
        // small: the fake driver runs a thread per CUDA thread. BOS ⊕ the prompt fill one block; one more is sampled.
        sampler.Generate([1, 2, 3], Options(SamplerKind.Ddpm, 1));   // loads the kernels, makes the workspaces
        bool compareCpu = !NucleusRuleTests.CpuKeepsCrossingToken();
        var runs = new List<(long Syncs, long? Fake, int Nfe)>();
        foreach (var (kind, steps) in new[] { (SamplerKind.FirstHitting, 0), (SamplerKind.Ddpm, 1), (SamplerKind.Ddpm, 3) })
        {
            long before = Cu.HostSyncs;
            long? fakeBefore = FakeDriverSyncs();
            var r = sampler.Generate([1, 2, 3], Options(kind, steps));
            runs.Add((Cu.HostSyncs - before, FakeDriverSyncs() - fakeBefore, r.Nfe));
            Assert.Single(r.Tokens);
            Assert.Equal(4, r.Tokens[0].Length);
            Assert.All(r.Tokens, t => Assert.All(t, x => Assert.InRange(x, 0, config.VocabSize - 1)));   // every position read back
            if (!compareCpu) continue;
            var expected = cpuSampler.Generate([1, 2, 3], Options(kind, steps));
            Assert.Equal(expected.Tokens, r.Tokens);
            Assert.Equal(expected.Nfe, r.Nfe);
        }
        Assert.True(runs[0].Nfe == 4 && runs[1].Nfe == 1, $"first-hitting calls the model at each of the block's 4 steps, one-step DDPM once: {string.Join(", ", runs)}");
        Assert.All(runs, x => Assert.Equal(runs[0].Syncs, x.Syncs));
        Assert.All(runs, x => Assert.Equal(runs[0].Fake, x.Fake));
        if (!compareCpu) Assert.Skip(NucleusRuleTests.CpuPending + " (the syncs were checked; the CPU comparison was not)");
    }
}
