using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>`train --init-from DIR`: the paper's recipe of pretraining at L' = L and fine-tuning at a smaller L'.</summary>
public sealed class InitFromTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("fbd-init-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void InitFromLoadsTheWeightsAndStartsAFreshOptimiser()
    {
        string data = CheckpointTests.WriteCorpus(_dir);
        string pre = Path.Combine(_dir, "pretrain");
        TrainingRun.Run(CheckpointTests.TinyRequest(data, pre, 3) with { BlockSize = 16 });   // L' = L = 16: MDLM
        var pretrained = ModelCheckpoint.Load(pre, new CpuBackend()).DownloadWeights();

        string fine = Path.Combine(_dir, "finetune");
        var req = CheckpointTests.TinyRequest(data, fine, 1) with { InitFrom = pre, BlockSize = 4, Dropout = 0f };
        TrainingRun.Run(req with { Options = req.Options with { LearningRate = 1e-9f, WarmupSteps = 1 } });
        var tuned = ModelCheckpoint.Load(fine, new CpuBackend());
        Assert.Equal(4, tuned.Config.BlockSize);
        var w = tuned.DownloadWeights();
        for (int i = 0; i < w.Length; i++) Assert.True(Math.Abs(w[i] - pretrained[i]) <= 1e-5f, $"weight {i}: {w[i]} vs pretrained {pretrained[i]}");

        // a fresh optimiser: step 1, and after one step m = (1-β1)·g, v = (1-β2)·g², so m²/v = 0.01/0.001 = 10
        var state = TrainingCheckpoint.Load(fine);
        Assert.Equal(1, state.Step);
        int checkedMoments = 0;
        for (int i = 0; i < state.M.Length; i++)
        {
            if (state.V[i] < 1e-12f) continue;
            Assert.Equal(10.0, (double)state.M[i] * state.M[i] / state.V[i], 2);
            checkedMoments++;
        }
        Assert.True(checkedMoments > 100, $"only {checkedMoments} parameters had a gradient");

        var e = Assert.Throws<UserInputException>(() => TrainingRun.Run(req with { OutputDirectory = Path.Combine(_dir, "x"), HiddenDim = 32 }));
        Assert.Contains("--init-from", e.Message);
    }
}
