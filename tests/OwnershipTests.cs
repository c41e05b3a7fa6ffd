using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// Every device buffer has one owner that frees it, and sizes that multiply batch, length and vocabulary are formed
/// in 64 bits. Live buffers are counted through <see cref="CountingBackend"/>, which forwards to the CPU backend,
/// records every allocation and asks each storage whether it was disposed.
/// </summary>
public class OwnershipTests
{
    sealed class CyclingRows(int length, int vocab) : IBatchSource
    {
        long pos;
        public int SequenceLength => length;
        public void Next(Span<int> dst, int batch) { for (int i = 0; i < dst.Length; i++) dst[i] = (int)((pos * 5 + i * 3) % vocab); pos++; }
        public long[] SaveState() => [pos];
        public void RestoreState(long[] state) => pos = state[0];
    }

    [Fact]
    public void SizeProductsAreFormedIn64Bits()
    {
        // batch 42, L = 1024, the GPT-2 vocabulary: 2,162,696,192 logits, past int32
        long logits = 42L * 1024 * 50258;
        Assert.True(logits > int.MaxValue);
        var e = Assert.Throws<UserInputException>(() => OwnedBuffers.Elements("logits", 42, 1024, 50258));
        Assert.Contains("logits", e.Message);
        Assert.Contains("42 × 1024 × 50258", e.Message);
        Assert.Contains(logits.ToString("N0"), e.Message);
        // the int32 product would have wrapped to a negative size; the 64-bit one is exact below the limit
        Assert.True(unchecked(42 * 1024 * 50258) < 0);
        Assert.Equal(41 * 1024 * 50258, OwnedBuffers.Elements("logits", 41, 1024, 50258));
        Assert.Equal(int.MaxValue, OwnedBuffers.Elements("edge", int.MaxValue, 1));
        Assert.Throws<UserInputException>(() => OwnedBuffers.Elements("edge", 1L << 16, 1L << 15));
        Assert.Throws<UserInputException>(() => OwnedBuffers.Elements("huge", long.MaxValue, 4));
        Assert.Contains("negative", Assert.Throws<UserInputException>(() => OwnedBuffers.Elements("rows", 4, -3)).Message);
        Assert.Equal(0, OwnedBuffers.Elements("empty", 0, long.MaxValue));
    }

    [Fact]
    public void WorkspaceOfAnOverflowingShapeIsAnErrorNotASmallBuffer()
    {
        var be = new CountingBackend(); var counter = be;
        var config = TinyModels.Config();
        var e = Assert.Throws<UserInputException>(() => new DenoiserWorkspace(be, config, 1 << 20, 1 << 12));
        Assert.Contains("batch × sequence length", e.Message);
        Assert.Equal(0, counter.Live);
    }

    [Fact]
    public void RepeatedEvaluationsDoNotGrowLiveBuffers()
    {
        var be = new CountingBackend(); var counter = be;
        var config = TinyModels.Config(length: 8, blockSize: 2, vocab: 13);
        using var model = TinyModels.Random(config, backend: be);
        var rows = Enumerable.Range(0, 5).Select(i => TinyModels.Tokens(8, 12, i)).ToList();   // batches of 2, 2, 1
        using var trainer = new Trainer(model, new TrainOptions { Steps = 100, BatchSize = 2, WarmupSteps = 1, Seed = 3 }, new CyclingRows(8, 12));
        using var evaluator = new Evaluator(model);

        void Round()
        {
            trainer.TrainStep();
            trainer.WithEmaWeights(() => evaluator.Evaluate(rows, 2));
            using (var once = new Evaluator(model)) once.Evaluate(rows, 3);   // an evaluation with its own workspace
            ScheduleSearch.Run(model, rows, 2, grid: [(0.2f, 0.8f), (0.5f, 1f)]);
        }
        Round();
        int live = counter.Live;
        for (int i = 0; i < 4; i++) Round();
        Assert.Equal(live, counter.Live);
        Assert.True(counter.Allocated.Count > live, "the rounds allocated temporaries (else this test checks nothing)");

        trainer.Dispose(); evaluator.Dispose(); model.Dispose();
        Assert.Equal(0, counter.Live);
    }

    [Fact]
    public void ObjectiveKeepsTwoShapesAndFreesTheRest()
    {
        var be = new CountingBackend(); var counter = be;
        var config = TinyModels.Config(length: 8, blockSize: 2, vocab: 13);
        using var model = TinyModels.Random(config, backend: be);
        int modelBuffers = counter.Live;
        using var objective = new Bd3Objective(model);
        var rng = new Rng(1);
        int Run(int batch)
        {
            var b = new Bd3Batch(batch, 8, 2);
            b.Noise(TinyModels.Tokens(batch * 8, 12, batch), NoiseSchedule.Eval, config.MaskId, rng, resample: false);
            objective.Run(b, backward: true);
            return counter.Live - modelBuffers;
        }
        // every shape holds the same number of buffers
        int one = Run(1), two = Run(2);
        Assert.True(one > 0);
        Assert.Equal(2 * one, two);
        Assert.Equal(objective.BufferCount, two);
        int three = Run(3);   // a third shape frees the least recently used (batch 1)
        Assert.Equal(2 * one, three);
        Assert.Equal(objective.BufferCount, three);
        for (int i = 0; i < 3; i++) { Run(2); Run(3); }
        Assert.Equal(three, counter.Live - modelBuffers);
        objective.Dispose();
        Assert.Equal(modelBuffers, counter.Live);
    }

    [Fact]
    public void SamplingFreesItsBuffers()
    {
        var be = new CountingBackend(); var counter = be;
        var config = TinyModels.Config(length: 16, blockSize: 4, vocab: 13);
        using var model = TinyModels.Random(config, 3, be);
        int modelBuffers = counter.Live;
        var opts = new SamplingOptions { MaxTokens = 8, Seed = 1, StopOnEos = false, EntropyThreshold = 0, BatchSize = 2 };
        using (var sampler = new BlockSampler(model, 9, 10))
        {
            sampler.Generate([1, 2, 3], opts);
            int kept = counter.Live;
            Assert.Equal(modelBuffers + sampler.BufferCount, kept);   // the KV cache and step buffers are gone
            for (int i = 0; i < 3; i++) sampler.Generate([4, 5], opts with { Seed = (ulong)i });
            Assert.Equal(kept, counter.Live);
        }
        Assert.Equal(modelBuffers, counter.Live);
    }

    [Fact]
    public void CountingBackendSeesALeak()
    {
        // the counter itself: a workspace that is dropped without Dispose stays live
        var be = new CountingBackend(); var counter = be;
        _ = new DenoiserWorkspace(be, TinyModels.Config(), 2, 8);
        Assert.True(counter.Live > 10);
    }
}
