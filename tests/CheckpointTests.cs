using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

public sealed class CheckpointTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("fbd-ckpt-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Two training states are the same point of one trajectory: weights, moments, EMA, RNG, data position and loss log, bit for bit.</summary>
    internal static void AssertSameTrajectory(TrainingState expected, TrainingState actual)
    {
        Assert.Equal(expected.Weights, actual.Weights);
        Assert.Equal(expected.M, actual.M);
        Assert.Equal(expected.V, actual.V);
        Assert.Equal(expected.Ema, actual.Ema);
        Assert.Equal(expected.Rng, actual.Rng);
        Assert.Equal(expected.Data, actual.Data);
        Assert.Equal(expected.LossLog, actual.LossLog);
    }

    internal static string WriteCorpus(string dir, int paragraphs = 60)
    {
        string path = Path.Combine(dir, "corpus.txt");
        var r = new Random(1);
        string[] words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "then", "slept"];
        File.WriteAllText(path, string.Join("\n\n", Enumerable.Range(0, paragraphs).Select(_ =>
            string.Join(' ', Enumerable.Range(0, 12).Select(_ => words[r.Next(words.Length)])) + ".")));
        return path;
    }

    internal static TrainingRequest TinyRequest(string data, string outDir, int steps) => new()
    {
        DataPath = data, OutputDirectory = outDir, ModelSize = "custom", HiddenDim = 16, Layers = 1, Heads = 2,
        SeqLen = 16, BlockSize = 4, Backend = "cpu", Dropout = 0.1f,
        Options = new TrainOptions { Steps = steps, BatchSize = 2, WarmupSteps = 2, LearningRate = 1e-2f, EvalBatches = 1, FinalEvalSequences = 2 },
    };

    [Fact]
    public void ModelCheckpointRoundTripIsExact()
    {
        var c = TinyModels.Config();
        var m = TinyModels.Random(c, seed: 3);
        var w = m.DownloadWeights();
        ModelCheckpoint.Save(_dir, c, m.Params, w);
        var loaded = ModelCheckpoint.Load(_dir, new CpuBackend());
        Assert.Equal(c, loaded.Config);
        Assert.Equal(w, loaded.DownloadWeights());
    }

    [Fact]
    public void ResumedRunMatchesUninterruptedRun()
    {
        string corpus = WriteCorpus(_dir);
        string straight = Path.Combine(_dir, "straight"), split = Path.Combine(_dir, "split");
        TrainingRun.Run(TinyRequest(corpus, straight, 6));
        TrainingRun.Run(TinyRequest(corpus, split, 3));
        var half = TrainingCheckpoint.Load(split);
        Assert.Equal(3, half.Step);
        TrainingRun.Run(TinyRequest(corpus, split, 6) with { Resume = true });
        var a = TrainingCheckpoint.Load(straight);
        var b = TrainingCheckpoint.Load(split);
        Assert.Equal(6, b.Step);
        AssertSameTrajectory(a, b);
        Assert.NotEqual(half.Weights, b.Weights);
    }

    [Fact]
    public void TruncatedOrCorruptWeightsAreRejectedClearly()
    {
        var c = TinyModels.Config();
        var m = TinyModels.Random(c);
        ModelCheckpoint.Save(_dir, c, m.Params, m.DownloadWeights());
        string file = Path.Combine(_dir, ModelCheckpoint.WeightsFile);
        var bytes = File.ReadAllBytes(file);

        File.WriteAllBytes(file, bytes[..^100]);
        var e = Assert.Throws<UserInputException>(() => ModelCheckpoint.Load(_dir, new CpuBackend()));
        Assert.Contains("model.safetensors", e.Message);

        var corrupt = (byte[])bytes.Clone();
        corrupt[10] = (byte)'#'; // inside the JSON header
        File.WriteAllBytes(file, corrupt);
        e = Assert.Throws<UserInputException>(() => ModelCheckpoint.Load(_dir, new CpuBackend()));
        Assert.Contains("model.safetensors", e.Message);
    }

    [Fact]
    public void CheckpointOfAnotherShapeIsRejected()
    {
        var c = TinyModels.Config();
        var m = TinyModels.Random(c);
        ModelCheckpoint.Save(_dir, c, m.Params, m.DownloadWeights());
        AtomicFile.WriteAllText(Path.Combine(_dir, ModelCheckpoint.ConfigFile), (c with { HiddenDim = 32 }).ToJson());
        var e = Assert.Throws<UserInputException>(() => ModelCheckpoint.Load(_dir, new CpuBackend()));
        Assert.Contains("changed after the checkpoint was written", e.Message);
        File.Delete(Path.Combine(_dir, CheckpointSet.ManifestFile));
        e = Assert.Throws<UserInputException>(() => ModelCheckpoint.Load(_dir, new CpuBackend()));
        Assert.Contains("another shape", e.Message);
    }
}
