using FastBlockDiff.Engine.Training;
using FastBlockDiff.Interop;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Tests;

/// <summary>
/// CUDA graphs (issue 9, item 2): capture records without running, a host wait inside a capture is refused, and the
/// denoiser's forward + backward + loss on fixed buffers replays from a graph exactly as it ran eagerly, new batches
/// coming in through uploads outside it. Runs on the fake driver (tests/cuda-emu/fake records the captured launches
/// with their argument values and replays them) and on a GPU; skips without either. What only a GPU shows: that the
/// real driver accepts the same capture, and how much time replay saves.
/// </summary>
public class CudaGraphTests
{
    sealed class Rows(int length, int vocab, int salt) : IBatchSource
    {
        long pos;
        public int SequenceLength => length;
        public void Next(Span<int> dst, int batch)
        {
            for (int i = 0; i < dst.Length; i++) dst[i] = (int)((pos * 7 + i * 5 + i / 3 + salt) % vocab);
            pos++;
        }
        public long[] SaveState() => [pos];
        public void RestoreState(long[] state) => pos = state[0];
    }

    [Fact]
    public void AHostWaitInsideACaptureIsRefused()
    {
        using var g = CudaEngineTests.Gpu();
        var x = g.AllocFloat(100);
        g.Synchronize();
        var e = Assert.Throws<CudaException>(() => g.Capture(() => { g.Fill(x, 3f); g.Synchronize(); }));
        Assert.Contains("CAPTURE", e.Message);
        // the stream left capture mode: eager work runs again
        g.Fill(x, 2f);
        var host = new float[100];
        g.Download(x, host);
        Assert.All(host, v => Assert.Equal(2f, v));
    }

    [Fact]
    public void DenoiserStepReplaysFromAGraphAsItRanEagerly()
    {
        using var g = CudaEngineTests.Gpu();
        var config = TinyModels.Config(length: 8, blockSize: 2, vocab: 13, dim: 16, heads: 2, layers: 2) with { Dropout = 0.1f };
        var model = TinyModels.Random(config, seed: 11, backend: g);
        using var objective = new Bd3Objective(model);
        var records = g.AllocFloat(DoubleSlots.Floats(1));
        var batches = new[] { Batch(config, 1), Batch(config, 2) };
        const ulong seed = 99;
        void Body(Bd3Batch b)
        {
            g.Fill(model.Grads, 0f);
            objective.Compute(b, backward: true, config.Dropout, seed, 1f, lossSum: records);
            g.SumTo(model.Grads, records, squares: true);   // overwrites the loss: the gradient's Σg² is what the step needs
        }

        // eager, for both batches
        var eager = new List<(float[] Grads, double SumSquares)>();
        foreach (var b in batches)
        {
            objective.Upload(b);
            Body(b);
            eager.Add((Down(g, model.Grads), DoubleSlots.Download(g, records)));
        }

        // captured once on the first batch's buffers; each batch goes up outside the graph, then the graph replays
        objective.Upload(batches[0]);
        g.Synchronize();
        using var graph = g.Capture(() => Body(batches[0]));
        for (int i = 0; i < batches.Length; i++)
        {
            objective.Upload(batches[i]);   // same shape: the same device buffers the graph reads
            g.Fill(model.Grads, float.NaN);   // whatever was there, the replay recomputes it
            g.Replay(graph);
            CudaBackendTests.Close($"gradients replayed for batch {i}", eager[i].Grads, Down(g, model.Grads), 1e-5);
            Assert.Equal(eager[i].SumSquares, DoubleSlots.Download(g, records), 1e-5 * eager[i].SumSquares);
        }
        Assert.NotEqual(eager[0].SumSquares, eager[1].SumSquares);   // the batches differ, so the replays did read the new one
    }

    static float[] Down(IBackend be, FloatView v) { var a = new float[v.Length]; be.Download(v, a); return a; }

    static Bd3Batch Batch(Engine.Model.ModelConfig c, int salt)
    {
        var rows = new int[2 * c.ModelLength];
        new Rows(c.ModelLength, c.VocabSize - 1, salt).Next(rows, 2);
        var b = new Bd3Batch(2, c.ModelLength, c.BlockSize);
        b.Noise(rows, new NoiseSchedule(c.ScheduleMin, c.ScheduleMax), c.MaskId, new Rng((ulong)salt), resample: true);
        return b;
    }
}
