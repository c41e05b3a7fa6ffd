using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cuda;

namespace FastBlockDiff.Tests;

/// <summary>
/// The bf16 tensor-core attention (attention_bf16.cu) against the double-precision reference on a GPU, for the shapes
/// issue 10 names: BD3 with L' in {1, 2, 4, 8, 16, L}, awkward L, head dims 64 and 128 (backward: 64; 128 falls back to
/// the fp32 kernels), forward and backward, atomic and deterministic dQ. Skips without a CUDA device (sm_80+);
/// tests/cuda-emu runs the same kernels on the CPU emulator.
/// </summary>
public class CudaAttentionBf16Tests
{
    static float[] Rand(Random r, int n)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    static FloatView Up(IBackend be, float[] d) { var v = be.AllocFloat(d.Length); be.Upload(v, d); return v; }
    static float[] Down(IBackend be, FloatView v) { var a = new float[v.Length]; be.Download(v, a); return a; }

    static CudaBackend Sm80()
    {
        var g = CudaBackendTests.Gpu();
        if (g.ComputeCapability.Major < 8) Assert.Skip($"bf16 tensor-core attention needs sm_80+, device is sm_{g.ComputeCapability.Major}{g.ComputeCapability.Minor}");
        return g;
    }

    [Theory]
    [InlineData(MaskKind.Bd3, 48, 1, 64)] [InlineData(MaskKind.Bd3, 48, 2, 64)] [InlineData(MaskKind.Bd3, 48, 4, 64)]
    [InlineData(MaskKind.Bd3, 48, 8, 64)] [InlineData(MaskKind.Bd3, 48, 16, 64)] [InlineData(MaskKind.Bd3, 48, 48, 64)]
    [InlineData(MaskKind.Bd3, 33, 3, 64)] [InlineData(MaskKind.Bd3, 128, 16, 64)] [InlineData(MaskKind.Bd3, 40, 5, 128)]
    [InlineData(MaskKind.BlockCausal, 45, 5, 64)] [InlineData(MaskKind.Causal, 77, 1, 128)] [InlineData(MaskKind.Full, 35, 1, 64)]
    public void ForwardAndBothBackwardsWithinTwoPercent(MaskKind mask, int l, int blockSize, int hd)
    {
        var g = Sm80();
        int B = 2, H = 2, T = mask == MaskKind.Bd3 ? 2 * l : l;
        var shape = new AttentionShape(B, H, hd, T, mask, blockSize);
        var r = new Random(l * 31 + blockSize + hd);
        var qkv = Rand(r, B * T * 3 * H * hd); var dOut = Rand(r, B * T * H * hd);
        var (eo, eLse, edq) = CudaBackendTests.ReferenceAttention(shape, qkv, dOut);
        g.Bf16Attention = true;
        try
        {
            var qv = Up(g, qkv); var o = g.AllocFloat(eo.Length); var lse = g.AllocFloat(eLse.Length); var go = Up(g, dOut);
            g.AttentionForward(shape, qv, o, lse);
            CudaBackendTests.Close("bf16 out", eo, Down(g, o), 2e-2);
            CudaBackendTests.Close("bf16 lse", eLse, Down(g, lse), 2e-2);
            var dq = g.AllocFloat(qkv.Length);
            g.AttentionBackward(shape, qv, o, lse, go, dq);
            CudaBackendTests.Close("bf16 dQkv (atomic dQ)", edq, Down(g, dq), 2e-2);
            g.DeterministicAttention = true;
            g.AttentionBackward(shape, qv, o, lse, go, dq);
            var first = Down(g, dq);
            CudaBackendTests.Close("bf16 dQkv (deterministic)", edq, first, 2e-2);
            g.AttentionBackward(shape, qv, o, lse, go, dq);
            Assert.True(first.AsSpan().SequenceEqual(Down(g, dq)), "deterministic attention backward differs between two runs");
        }
        finally { g.Bf16Attention = false; g.DeterministicAttention = false; }
    }
}
