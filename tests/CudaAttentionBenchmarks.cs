using System.Text.Json;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cuda;

namespace FastBlockDiff.Tests;

/// <summary>
/// Attention throughput on the GPU for the shapes issue 3 asks about (B=8, H=12, d=64, L=1024/4096, L'=4/16, BD3 mask
/// over 2L): forward and backward, fp32 and bf16 kernels, TFLOP/s counted on unmasked pairs (4·d flops per pair forward,
/// 10·d backward). Writes attention-throughput.json to FASTBLOCKDIFF_BENCH_OUT (default: the current folder).
/// Skips without a GPU; timings come from CUDA events on the backend's stream.
/// </summary>
public class CudaAttentionBenchmarks
{
    static long AllowedPairs(AttentionShape s)
    {
        long n = 0;
        for (int i = 0; i < s.SeqLen; i++)
            for (int j = 0; j < s.SeqLen; j++)
                if (Bd3Mask.Allowed(s.Mask, s.SeqLen, s.BlockSize, i, j)) n++;
        return n * s.Batch * s.Heads;
    }

    [Fact]
    public void AttentionThroughput()
    {
        if (CudaBackend.Unavailable() is { } why)
        {
            if (Environment.GetEnvironmentVariable("FASTBLOCKDIFF_REQUIRE_CUDA") == "1") Assert.Fail($"no CUDA device: {why}");
            Assert.Skip($"no CUDA device: {why}");
        }
        using var g = new CudaBackend();
        var results = new List<object>();
        foreach (var l in new[] { 1024, 4096 })
            foreach (var lp in new[] { 4, 16 })
            {
                var shape = new AttentionShape(8, 12, 64, 2 * l, MaskKind.Bd3, lp);
                long pairs = AllowedPairs(shape);
                int n = shape.Batch * shape.SeqLen * shape.QkvRowStride, no = shape.Batch * shape.SeqLen * shape.ModelDim;
                var qkv = g.AllocFloat(n); var o = g.AllocFloat(no); var lse = g.AllocFloat(shape.Batch * shape.Heads * shape.SeqLen);
                var dO = g.AllocFloat(no); var dq = g.AllocFloat(n);
                var r = new Random(l + lp);
                g.Upload(qkv, Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray());
                g.Upload(dO, Enumerable.Range(0, no).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray());
                foreach (var bf16 in new[] { false, true })
                {
                    g.Bf16Attention = bf16;
                    const int warm = 2, reps = 5;
                    for (int i = 0; i < warm; i++) { g.AttentionForward(shape, qkv, o, lse); g.AttentionBackward(shape, qkv, o, lse, dO, dq); }
                    float fwdMs = g.TimeMs(() => { for (int i = 0; i < reps; i++) g.AttentionForward(shape, qkv, o, lse); }) / reps;
                    float bwdMs = g.TimeMs(() => { for (int i = 0; i < reps; i++) g.AttentionBackward(shape, qkv, o, lse, dO, dq); }) / reps;
                    double fwdTf = 4.0 * pairs * shape.HeadDim / (fwdMs * 1e-3) / 1e12, bwdTf = 10.0 * pairs * shape.HeadDim / (bwdMs * 1e-3) / 1e12;
                    results.Add(new { L = l, blockSize = lp, seqLen = shape.SeqLen, batch = shape.Batch, heads = shape.Heads, headDim = shape.HeadDim,
                        precision = bf16 ? "bf16" : "fp32", pairs, density = pairs / (double)shape.Batch / shape.Heads / shape.SeqLen / shape.SeqLen,
                        forwardMs = fwdMs, backwardMs = bwdMs, forwardTflops = fwdTf, backwardTflops = bwdTf });
                    TestContext.Current.SendDiagnosticMessage($"L={l} L'={lp} {(bf16 ? "bf16" : "fp32")}: fwd {fwdMs:F3} ms {fwdTf:F1} TFLOP/s, bwd {bwdMs:F3} ms {bwdTf:F1} TFLOP/s");
                }
                g.Bf16Attention = false;
                foreach (var v in new[] { qkv, o, lse, dO, dq }) v.Storage.Dispose();
            }
        var dir = Environment.GetEnvironmentVariable("FASTBLOCKDIFF_BENCH_OUT") is { Length: > 0 } d ? d : Directory.GetCurrentDirectory();
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "attention-throughput.json"), JsonSerializer.Serialize(new
        {
            device = g.Description, date = DateTime.UtcNow.ToString("o"), results,
        }, new JsonSerializerOptions { WriteIndented = true }));
    }
}
