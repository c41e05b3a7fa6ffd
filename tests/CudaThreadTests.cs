using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Text;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// The CUDA backend on threads other than the one that created it: it makes its context current on whatever thread
/// calls it, buffers are freed from any thread, and the public API's generation on a worker thread gives what the CPU
/// gives. Skips without a CUDA device; the fake driver (tests/cuda-emu/fake), like the real one, fails context-less calls.
/// </summary>
public class CudaThreadTests
{
    static void OnNewThread(Action body)
    {
        Exception? error = null;
        var t = new Thread(() => { try { body(); } catch (Exception e) { error = e; } });
        t.Start(); t.Join();
        if (error != null) throw new Xunit.Sdk.XunitException($"on a new thread: {error}");
    }

    [Fact]
    public void BufferIsUsedAndFreedOnThreadsThatNeverSawTheContext()
    {
        using var be = CudaEngineTests.Gpu();
        long failedBefore = Interop.DeviceMemory.FailedFrees;
        Kernels.FloatView v = default;
        OnNewThread(() =>
        {
            v = be.AllocFloat(1 << 20);
            be.Fill(v.Slice(0, 1000), 2f);
            be.ScaleShift(v.Slice(0, 1000), 3f, 1f);
        });
        var host = new float[1000];
        OnNewThread(() => be.Download(v.Slice(0, 1000), host));
        Assert.All(host, x => Assert.Equal(7f, x));
        // cuMemFree on a thread where the context is not current fails (and SafeHandle would swallow it: a leak)
        OnNewThread(() => v.Storage.Dispose());
        Assert.Equal(failedBefore, Interop.DeviceMemory.FailedFrees);
    }

    [Fact]
    public async Task GenerateAsyncOnAWorkerThreadEqualsCpu()
    {
        var cuda = CudaEngineTests.Gpu();
        var config = TinyModels.Config(length: 16, blockSize: 4, vocab: 260);
        var options = new SamplingOptions { MaxTokens = 8, Seed = 5, StopOnEos = false, EntropyThreshold = 0, TopP = 0.9f };
        async Task<string> Generate(Kernels.IBackend be)
        {
            using var model = BlockDiffusionModel.FromDenoiser(TinyModels.Random(config, 3, be), new ByteTokenizer());
            var text = "";
            await foreach (var piece in model.GenerateAsync("ab", options, TestContext.Current.CancellationToken)) text += piece;
            return text;
        }
        var expected = await Generate(new CpuBackend());
        var got = await Generate(cuda);
        Assert.Equal(expected, got);
    }

    [Fact]
    public void CapturedGraphReplaysItsOps()
    {
        using var be = CudaEngineTests.Gpu();
        var x = be.AllocFloat(1000);
        be.Fill(x, 1f);
        be.Synchronize();
        using var graph = be.Capture(() => { be.ScaleShift(x, 2f, 1f); be.Axpy(x, 0.5f, x); });
        var host = new float[1000];
        be.Download(x, host);
        Assert.All(host, v => Assert.Equal(1f, v));   // capturing ran nothing
        be.Replay(graph); be.Replay(graph);
        be.Download(x, host);
        Assert.All(host, v => Assert.Equal(((2f * 1 + 1) * 1.5f * 2 + 1) * 1.5f, v));
    }
}
