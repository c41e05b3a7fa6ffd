using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Tests;

/// <summary>Gradient accumulation: k micro-batches of B rows make the same optimiser step as one batch of k·B rows.</summary>
public class GradAccumulationTests
{
    /// <summary>Serves fixed rows in order, whatever the batch size asked for.</summary>
    sealed class SequentialRows(int[][] rows) : IBatchSource
    {
        long next;
        public int SequenceLength => rows[0].Length;
        public void Next(Span<int> dst, int batch)
        {
            for (int i = 0; i < batch; i++) rows[next++ % rows.Length].CopyTo(dst[(i * SequenceLength)..]);
        }
        public long[] SaveState() => [next];
        public void RestoreState(long[] state) => next = state[0];
    }

    [Fact]
    public void TwoMicroBatchesEqualOneDoubleBatch()
    {
        // the autoregressive schedule masks deterministically, and without dropout the two runs see identical inputs
        var config = TinyModels.Config(length: 8, blockSize: 1) with { ScheduleMin = 1f, ScheduleMax = 1f };
        var rows = Enumerable.Range(0, 4).Select(i => TinyModels.Tokens(8, config.VocabSize - 1, 30 + i)).ToArray();
        var results = new List<(double Loss, double Norm, float[] W)>();
        foreach (var (batch, accum) in new[] { (4, 1), (2, 2) })
        {
            var m = TinyModels.Random(config, seed: 5);
            var opts = new TrainOptions { Steps = 1, BatchSize = batch, GradAccumulation = accum, WarmupSteps = 1, LearningRate = 1e-2f, Dropout = false };
            var (loss, norm, _) = new Trainer(m, opts, new SequentialRows(rows)).TrainStep();
            results.Add((loss, norm, m.DownloadWeights()));
        }
        Assert.Equal(results[0].Loss, results[1].Loss, 5);
        Assert.Equal(results[0].Norm, results[1].Norm, 4);
        for (int i = 0; i < results[0].W.Length; i++) Assert.Equal(results[0].W[i], results[1].W[i], 4);
        Assert.Throws<FastBlockDiff.Engine.UserInputException>(() => new TrainOptions { GradAccumulation = 0 }.Validate());
    }
}
