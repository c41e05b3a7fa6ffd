using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;
using FastBlockDiff.Kernels.Cuda;

namespace FastBlockDiff.Tests;

/// <summary>
/// The MLP's GEMMs with cuBLASLt epilogues (bias + GELU saving its input; × GELU' in the backward) against the CPU
/// backend's GEMM followed by the GELU kernels: fp32 within 1e-4, bf16 within 2e-2, on awkward shapes, where the aux
/// leading dimension is a multiple of 8 (fused) and where it is not (cuBLASLt has no algorithm: the plain GEMM and our
/// kernels). Skips without a CUDA device; runs on the fake driver and cuBLASLt (tests/cuda-emu/fake), whose epilogues
/// compute the same tanh GELU. That cuBLASLt's own GELU matches it is checked only on a GPU. Likewise a linear layer's
/// weight gradient with the bias gradient from the BGRADB epilogue.
/// </summary>
public class CudaGemmEpilogueTests
{
    static float[] Rand(Random r, int n, float scale = 1f) => [.. Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale)];
    static FloatView Up(IBackend be, float[] d) { var v = be.AllocFloat(d.Length); be.Upload(v, d); return v; }
    static float[] Down(IBackend be, FloatView v) { var a = new float[v.Length]; be.Download(v, a); return a; }

    [Theory]
    [InlineData(37, 24, 41, false)]   // n a multiple of 8: fused
    [InlineData(37, 29, 41, false)]   // not: the plain GEMM and the GELU kernels
    [InlineData(37, 24, 41, true)]
    [InlineData(5, 64, 300, true)]
    public void MlpGemmsWithGeluEpiloguesEqualCpu(int m, int n, int k, bool bf16)
    {
        using var g = CudaEngineTests.Gpu();
        g.Precision = bf16 ? Precision.Bf16 : Precision.Fp32;
        double tol = bf16 ? 2e-2 : 1e-4;
        var cpu = new CpuBackend();
        var r = new Random(m * 1000 + n + k);
        var x = Rand(r, m * k); var w = Rand(r, n * k, 0.3f); var bias = Rand(r, n); var w2 = Rand(r, 7 * n, 0.3f); var dy = Rand(r, m * 7);
        long fusedBefore = g.FusedGeluGemms;
        float[][] Run(IBackend be)
        {
            var pre = be.AllocFloat(m * n); var act = be.AllocFloat(m * n); var dPre = be.AllocFloat(m * n);
            // forward: act = GELU(x·wᵀ + bias); backward: dPre = (dy·w2) ⊙ GELU'(pre), w2 a [7, n] weight
            be.GemmBiasGelu(false, true, m, n, k, Up(be, x), k, Up(be, w), k, Up(be, bias), pre, act);
            be.GemmGeluBackward(false, false, m, n, 7, Up(be, dy), 7, Up(be, w2), n, pre, dPre);
            return [Down(be, pre), Down(be, act), Down(be, dPre)];
        }
        var e = Run(cpu); var a = Run(g);
        CudaBackendTests.Close($"pre-activation {m}x{n}x{k} bf16={bf16}", e[0], a[0], tol);
        CudaBackendTests.Close($"GELU output {m}x{n}x{k} bf16={bf16}", e[1], a[1], tol);
        CudaBackendTests.Close($"GELU backward {m}x{n}x{k} bf16={bf16}", e[2], a[2], tol);
        if (g.DeviceName.Contains("fake"))
            Assert.Equal(fusedBefore + (n % 8 == 0 ? 2 : 0), g.FusedGeluGemms);   // the fake's cuBLASLt fuses exactly where cuBLASLt may
    }

    /// <summary>
    /// A linear layer's weight gradients with the bias gradient taken in the weight-gradient GEMM's epilogue (BGRADB),
    /// accumulated onto gradients that already hold values (as over micro-batches), against the CPU's GEMM + column sum.
    /// </summary>
    [Theory]
    [InlineData(37, 24, 29, false)]
    [InlineData(300, 7, 13, false)]
    [InlineData(37, 24, 29, true)]
    [InlineData(5, 64, 48, true)]
    public void WeightGradientsWithBiasGradientEpilogueEqualCpu(int rows, int inDim, int outDim, bool bf16)
    {
        using var g = CudaEngineTests.Gpu();
        g.Precision = bf16 ? Precision.Bf16 : Precision.Fp32;
        double tol = bf16 ? 2e-2 : 1e-4;
        var cpu = new CpuBackend();
        var r = new Random(rows * 1000 + inDim + outDim);
        var dy = Rand(r, rows * outDim); var x = Rand(r, rows * inDim); var dw0 = Rand(r, outDim * inDim); var db0 = Rand(r, outDim);
        long fusedBefore = g.FusedBiasGradientGemms;
        float[][] Run(IBackend be)
        {
            var dw = Up(be, dw0); var db = Up(be, db0);
            be.LinearWeightGradients(Up(be, dy), Up(be, x), dw, db, rows, inDim, outDim);
            return [Down(be, dw), Down(be, db)];
        }
        var e = Run(cpu); var a = Run(g);
        CudaBackendTests.Close($"dW {rows}x{inDim}x{outDim} bf16={bf16}", e[0], a[0], tol);
        CudaBackendTests.Close($"dBias {rows}x{inDim}x{outDim} bf16={bf16}", e[1], a[1], tol);
        if (g.DeviceName.Contains("fake"))
            Assert.Equal(fusedBefore + 1, g.FusedBiasGradientGemms);   // the fake's cuBLASLt has BGRADB: the bias gradient came from the epilogue
    }
}
