using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// NaN and ±Inf: refused at load with the tensor's name unless allowed, never written by a save, and a diverging
/// run stops cleanly keeping its last good checkpoint.
/// </summary>
public sealed class NonFiniteCheckpointTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("fbd-nonfinite-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Writes a model checkpoint whose weights are poisoned by <paramref name="poison"/> (bypassing the save check).</summary>
    string PoisonedCheckpoint(float poison)
    {
        var c = TinyModels.Config(vocab: 260); // the byte tokenizer's ids and MASK
        var m = TinyModels.Random(c);
        var w = m.DownloadWeights();
        var p = m.Params["blocks.1.attn_qkv.weight"];
        w[p.Offset + 5] = poison;
        ModelCheckpoint.Save(_dir, c, m.Params, m.DownloadWeights());
        // write the poisoned weights as a foreign tool would: plain safetensors, no manifest
        File.Delete(Path.Combine(_dir, CheckpointSet.ManifestFile));
        Engine.Formats.SafetensorsFile.Write(Path.Combine(_dir, ModelCheckpoint.WeightsFile),
            m.Params.Infos.Select(i => (ModelCheckpoint.Prefix + i.Name, i.Shape, (ReadOnlyMemory<float>)w.AsMemory(i.Offset, i.Length))));
        return _dir;
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    [InlineData(float.NegativeInfinity)]
    public void NonFiniteWeightsAreRefusedByTensorNameUnlessAllowed(float poison)
    {
        string dir = PoisonedCheckpoint(poison);
        var e = Assert.Throws<UserInputException>(() => ModelCheckpoint.Load(dir, new CpuBackend()));
        Assert.Contains("backbone.blocks.1.attn_qkv.weight", e.Message);
        Assert.Contains("--allow-nonfinite", e.Message);
        e = Assert.Throws<UserInputException>(() => BlockDiffusionModel.Load(dir, backend: "cpu"));
        Assert.Contains("backbone.blocks.1.attn_qkv.weight", e.Message);

        using var model = BlockDiffusionModel.Load(dir, backend: "cpu", allowNonFinite: true);
        var w = model.Denoiser.DownloadWeights();
        Assert.Equal(1, w.Count(x => !float.IsFinite(x)));
    }

    [Fact]
    public void SampleRefusesNonFiniteWeightsUnlessAllowNonFinite()
    {
        string dir = PoisonedCheckpoint(float.NaN);
        string cache = Path.Combine(_dir, "cache");
        var refused = CliProcess.Run(cache, "sample", "--checkpoint", dir, "--max-tokens", "4", "--backend", "cpu");
        Assert.Equal(2, refused.Code);
        Assert.Contains("backbone.blocks.1.attn_qkv.weight", refused.Err);
        Assert.DoesNotContain("   at ", refused.Err);
        var allowed = CliProcess.Run(cache, "sample", "--checkpoint", dir, "--max-tokens", "4", "--backend", "cpu", "--allow-nonfinite");
        Assert.True(allowed.Code == 0, allowed.Err);
    }

    [Fact]
    public void SavesRefuseNonFiniteValuesAndLeaveThePreviousFilesAlone()
    {
        var c = TinyModels.Config();
        var m = TinyModels.Random(c);
        var good = m.DownloadWeights();
        ModelCheckpoint.Save(_dir, c, m.Params, good);
        var before = Directory.GetFiles(_dir).ToDictionary(f => f, File.ReadAllBytes);

        var bad = (float[])good.Clone();
        bad[^1] = float.NaN;
        var e = Assert.Throws<UserInputException>(() => ModelCheckpoint.Save(_dir, c, m.Params, bad));
        Assert.Contains("nothing was written", e.Message);

        var state = new TrainingState { Step = 1, Rng = [1, 2, 3, 4], Data = [0, 0, 1], Weights = good, M = new float[good.Length], V = new float[good.Length], Ema = bad, LossLog = [(1, 2.0)] };
        e = Assert.Throws<UserInputException>(() => TrainingCheckpoint.File(state));
        Assert.Contains("EMA", e.Message);
        state.Ema = good; state.LossLog = [(1, double.NaN)];
        e = Assert.Throws<UserInputException>(() => TrainingCheckpoint.File(state));
        Assert.Contains("loss of step 1", e.Message);

        Assert.Equal(before.Keys.Order(), Directory.GetFiles(_dir).Order());
        foreach (var (f, bytes) in before) Assert.Equal(bytes, File.ReadAllBytes(f));
    }

    [Fact]
    public void DivergingRunStopsNamingTheStepAndKeepsTheLastGoodCheckpoint()
    {
        string corpus = CheckpointTests.WriteCorpus(_dir);
        string run = Path.Combine(_dir, "run");
        TrainingRun.Run(CheckpointTests.TinyRequest(corpus, run, 2));
        var saved = Directory.GetFiles(run).ToDictionary(f => f, File.ReadAllBytes);

        // resume with an absurd learning rate: the loss or gradient norm leaves the floats within a few steps
        var req = CheckpointTests.TinyRequest(corpus, run, 40) with { Resume = true };
        req = req with { Options = req.Options with { LearningRate = 1e30f, WarmupSteps = 0, GradClip = 0, CheckpointEvery = 0 } };
        var e = Assert.Throws<UserInputException>(() => TrainingRun.Run(req));
        Assert.Matches(@"diverged at step \d+", e.Message);
        Assert.Contains("--lr", e.Message);
        Assert.Contains("keeps the checkpoint of step 2", e.Message);
        foreach (var (f, bytes) in saved) Assert.Equal(bytes, File.ReadAllBytes(f));
        Assert.Equal(2, TrainingCheckpoint.Load(run).Step);
    }

    [Fact]
    public void NanEmaDecayNeverReachesAFile()
    {
        string corpus = CheckpointTests.WriteCorpus(_dir);
        string run = Path.Combine(_dir, "run");
        TrainingRun.Run(CheckpointTests.TinyRequest(corpus, run, 2));
        var saved = Directory.GetFiles(run).ToDictionary(f => f, File.ReadAllBytes);

        var req = CheckpointTests.TinyRequest(corpus, run, 4) with { Resume = true };
        req = req with { Options = req.Options with { EmaDecay = float.NaN, CheckpointEvery = 1 } };
        var e = Assert.Throws<UserInputException>(() => TrainingRun.Run(req));
        Assert.Contains("ema", e.Message, StringComparison.OrdinalIgnoreCase);
        foreach (var (f, bytes) in saved) Assert.Equal(bytes, File.ReadAllBytes(f));
        var state = TrainingCheckpoint.Load(run);
        Assert.All(state.Ema, x => Assert.True(float.IsFinite(x)));
    }
}
