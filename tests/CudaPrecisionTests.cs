using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;
using FastBlockDiff.Kernels.Cuda;

namespace FastBlockDiff.Tests;

/// <summary>
/// The CUDA backend in bf16 against the CPU backend in fp32 (relative error &lt; 2e-2): GEMMs that read the persistent
/// bf16 weight copy (written by AdamW, refreshed after other writes, at unaligned offsets), and whole training steps.
/// Also the device-resident step pieces (Σ on the device, AdamW with the clip factor from the device) in fp32 (&lt; 1e-4).
/// Skips without a CUDA device; runs on the fake driver (tests/cuda-emu/fake).
/// </summary>
public class CudaPrecisionTests
{
    static readonly CpuBackend Cpu = new();

    static float[] Rand(Random r, int n, float scale = 1f) => [.. Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale)];
    static FloatView Up(IBackend be, float[] d) { var v = be.AllocFloat(d.Length); be.Upload(v, d); return v; }
    static float[] Down(IBackend be, FloatView v) { var a = new float[v.Length]; be.Download(v, a); return a; }

    /// <summary>C = X·W[offset..] with W a slice of the mirrored buffer, on the CPU and on the GPU.</summary>
    static (float[] Cpu, float[] Gpu) GemmOnWeights(CudaBackend g, FloatView gw, float[] w, int offset, float[] x, int m, int n, int k)
    {
        var e = Cpu.AllocFloat(m * n);
        Cpu.Gemm(false, true, m, n, k, 1, Up(Cpu, x), k, Up(Cpu, w).Slice(offset, n * k), k, 0, e, n);
        var c = g.AllocFloat(m * n);
        g.Gemm(false, true, m, n, k, 1, Up(g, x), k, gw.Slice(offset, n * k), k, 0, c, n);
        return (Down(Cpu, e), Down(g, c));
    }

    [Fact]
    public void Bf16GemmReadsAWeightCopyThatFollowsEveryWrite()
    {
        using var g = CudaEngineTests.Gpu();
        g.Precision = Precision.Bf16;
        var r = new Random(3);
        int m = 37, n = 29, k = 41, offset = 7;   // an odd offset: the operand is only 2-byte aligned in bf16
        var w = Rand(r, 2000); var x = Rand(r, m * k);
        var gw = Up(g, w);
        g.KeepBf16Copy(gw);
        var (e, a) = GemmOnWeights(g, gw, w, offset, x, m, n, k);
        CudaBackendTests.Close("bf16 gemm on the weight copy", e, a, 2e-2);
        Assert.True(g.Bf16CopyBytes >= w.Length * 2L, "the GEMM did not use the persistent copy");

        // a plain upload makes the copy stale: the next GEMM must see the new weights
        w = Rand(r, 2000, 3f); g.Upload(gw, w);
        (e, a) = GemmOnWeights(g, gw, w, offset, x, m, n, k);
        CudaBackendTests.Close("after upload", e, a, 2e-2);

        // AdamW writes the copy itself
        var grad = Rand(r, 2000); var step = new AdamWStep(0.05f, 0.9f, 0.999f, 1e-8f, 0.01f, 1, 1f);
        var cm = Cpu.AllocFloat(2000); var cv = Cpu.AllocFloat(2000); var cw = Up(Cpu, w);
        Cpu.AdamW(cw, Up(Cpu, grad), cm, cv, step);
        g.AdamW(gw, Up(g, grad), g.AllocFloat(2000), g.AllocFloat(2000), step);
        var w2 = Down(Cpu, cw);
        CudaBackendTests.Close("fp32 master weights after AdamW", w2, Down(g, gw), 1e-4);
        (e, a) = GemmOnWeights(g, gw, w2, offset, x, m, n, k);
        CudaBackendTests.Close("after AdamW", e, a, 2e-2);

        // a copy into part of the weights (the EMA swap does this)
        var part = Rand(r, 500, 2f); g.Copy(gw.Slice(100, 500), Up(g, part));
        part.CopyTo(w2, 100);
        (e, a) = GemmOnWeights(g, gw, w2, offset, x, m, n, k);
        CudaBackendTests.Close("after a partial copy", e, a, 2e-2);
    }

    [Fact]
    public void LayerNormWritesTheBf16OperandOfTheGemmAfterIt()
    {
        using var g = CudaEngineTests.Gpu();
        g.Precision = Precision.Bf16;
        var r = new Random(5);
        int rows = 19, dim = 40, n = 24;
        var x = Rand(r, rows * dim, 2f); var w = Rand(r, dim); var wb = Rand(r, dim); var lin = Rand(r, n * dim, 0.3f);
        float[][] Run(IBackend be)
        {
            var y = be.AllocFloat(rows * dim); var mean = be.AllocFloat(rows); var rstd = be.AllocFloat(rows);
            var c1 = be.AllocFloat(rows * n); var c2 = be.AllocFloat(rows * n); var c3 = be.AllocFloat(rows * n);
            var pw = Up(be, lin);
            be.LayerNormForward(Up(be, x), Up(be, w), Up(be, wb), y, mean, rstd, rows, dim, 1e-5f);
            be.Gemm(false, true, rows, n, dim, 1f, y, dim, pw, dim, 0f, c1, n);   // right after the LayerNorm: its bf16 twin
            be.Gemm(false, true, rows, n, dim, 1f, y, dim, pw, dim, 0f, c2, n);   // later: converted
            be.ScaleShift(y, 2f, 0f);                                             // y changes: the next read sees it
            be.Gemm(false, true, rows, n, dim, 1f, y, dim, pw, dim, 0f, c3, n);
            return [Down(be, y), Down(be, c1), Down(be, c2), Down(be, c3)];
        }
        long before = g.Bf16TwinReads;
        var e = Run(Cpu); var a = Run(g);
        Assert.Equal(before + 1, g.Bf16TwinReads);
        CudaBackendTests.Close("LayerNorm output (fp32)", e[0], a[0], 1e-4);
        for (int i = 1; i < 4; i++) CudaBackendTests.Close($"bf16 GEMM {i} on the LayerNorm output", e[i], a[i], 2e-2);
    }

    [Fact]
    public void DeviceSumAndClippedAdamWEqualCpu()
    {
        using var g = CudaEngineTests.Gpu();
        var r = new Random(9);
        int n = 3001;
        var w = Rand(r, n); var grad = Rand(r, n, 2f);
        foreach (var (maxNorm, poison) in new[] { (1f, false), (1000f, false), (0f, false), (1f, true) })
        {
            if (poison) grad[123] = float.NaN;
            var step = new AdamWStep(0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 2, 0.5f);
            float[][] Run(IBackend be)
            {
                var pw = Up(be, w); var pg = Up(be, grad); var m = be.AllocFloat(n); var v = be.AllocFloat(n);
                var sums = be.AllocFloat(6);   // two doubles at float offsets 2 and 4
                be.SumTo(pg, sums.Slice(2, 2), squares: true);
                be.SumTo(pw, sums.Slice(4, 2), squares: false);
                be.AdamWClipped(pw, pg, m, v, step, maxNorm, sums.Slice(2, 2));
                var s = Down(be, sums);
                return [Down(be, pw), Down(be, m), [(float)DoubleSlots.Read(s, 1), (float)DoubleSlots.Read(s, 2)]];
            }
            var e = Run(Cpu); var a = Run(g);
            for (int i = 0; i < e.Length; i++) CudaBackendTests.Close($"maxNorm {maxNorm} poison {poison} [{i}]", e[i], a[i]);
            if (!poison) Assert.True(a[2][0] > 0, "Σg² on the device");
            if (poison) Assert.Equal(w, a[0]);   // a non-finite norm leaves the weights as they were
        }
    }

    [Fact]
    public void UploadsGoThroughThePinnedRingAndTheSourceMayBeReusedAtOnce()
    {
        using var g = CudaEngineTests.Gpu();
        long before = g.AsyncUploads;
        var host = new int[300_001];   // 1.2 MB, an odd size: 20 of them wrap the 16 MiB ring, unaligned ends
        var views = new List<IntView>();
        for (int u = 0; u < 20; u++)   // more bytes than the ring holds: its start is written again
        {
            for (int i = 0; i < host.Length; i++) host[i] = u * 100_000 + i;
            var v = g.AllocInt(host.Length);
            g.Upload(v, host);
            views.Add(v);
            Array.Fill(host, -1);   // the caller's memory changes right after the call
        }
        Assert.Equal(before + 20, g.AsyncUploads);
        var back = new int[host.Length];
        for (int u = 0; u < views.Count; u++)
        {
            g.Download(views[u], back);
            for (int i = 0; i < back.Length; i += 4999) Assert.Equal(u * 100_000 + i, back[i]);
            Assert.Equal(u * 100_000 + back.Length - 1, back[^1]);
        }
    }

    [Fact]
    public void Bf16TrainingStepsMatchCpuWithinBf16Tolerance()
    {
        using var g = CudaEngineTests.Gpu();
        g.Precision = Precision.Bf16;
        EngineParity.TrainingStepsEqualCpu(g, tol: 2e-2);
        Assert.True(g.Bf16CopyBytes > 0, "the training step never read the bf16 weight copy");
    }
}
