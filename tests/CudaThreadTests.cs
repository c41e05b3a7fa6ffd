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
        const int n = 16 << 20;   // 64 MiB
        long before = be.MemoryInfo().Free;
        Kernels.FloatView v = default;
        OnNewThread(() =>
        {
            v = be.AllocFloat(n);
            be.Fill(v.Slice(0, 1000), 2f);
            be.ScaleShift(v.Slice(0, 1000), 3f, 1f);
        });
        Assert.True(before - be.MemoryInfo().Free >= n * 4L, "the allocation did not show in cuMemGetInfo");
        var host = new float[1000];
        OnNewThread(() => be.Download(v.Slice(0, 1000), host));
        Assert.All(host, x => Assert.Equal(7f, x));
        OnNewThread(() => v.Storage.Dispose());
        Assert.True(be.MemoryInfo().Free >= before - (1 << 20), $"64 MiB freed on another thread did not come back (free {be.MemoryInfo().Free} < {before})");
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
}
