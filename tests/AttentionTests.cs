using System.Diagnostics;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>Float64 naive dense masked softmax attention over the [B, T, 3, H, hd] qkv layout.</summary>
static class AttentionReference
{
    static int Q(AttentionShape s, int b, int t, int h) => (b * s.SeqLen + t) * s.QkvRowStride + h * s.HeadDim;

    public static (double[] Output, double[] Lse) Forward(AttentionShape s, double[] qkv)
    {
        int T = s.SeqLen, D = s.ModelDim, hd = s.HeadDim;
        double scale = 1 / Math.Sqrt(hd);
        var o = new double[s.Batch * T * D];
        var lse = new double[s.Batch * s.Heads * T];
        var sc = new double[T];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.Heads; h++)
                for (int i = 0; i < T; i++)
                {
                    double m = double.NegativeInfinity;
                    for (int j = 0; j < T; j++)
                    {
                        if (!Bd3Mask.Allowed(s.Mask, T, s.BlockSize, i, j)) { sc[j] = double.NegativeInfinity; continue; }
                        double d = 0;
                        for (int c = 0; c < hd; c++) d += qkv[Q(s, b, i, h) + c] * qkv[Q(s, b, j, h) + D + c];
                        sc[j] = d * scale;
                        m = Math.Max(m, sc[j]);
                    }
                    double z = 0;
                    for (int j = 0; j < T; j++) if (sc[j] > double.NegativeInfinity) z += Math.Exp(sc[j] - m);
                    lse[(b * s.Heads + h) * T + i] = z > 0 ? m + Math.Log(z) : double.NegativeInfinity;
                    for (int j = 0; j < T; j++)
                    {
                        if (sc[j] == double.NegativeInfinity) continue;
                        double p = Math.Exp(sc[j] - m) / z;
                        for (int c = 0; c < hd; c++) o[(b * T + i) * D + h * hd + c] += p * qkv[Q(s, b, j, h) + 2 * D + c];
                    }
                }
        return (o, lse);
    }

    /// <summary>Analytic gradient of Σ dO ⊙ O with respect to qkv, by dense probability matrices.</summary>
    public static double[] Backward(AttentionShape s, double[] qkv, double[] dO)
    {
        int T = s.SeqLen, D = s.ModelDim, hd = s.HeadDim;
        double scale = 1 / Math.Sqrt(hd);
        var g = new double[qkv.Length];
        var p = new double[T, T];
        var dp = new double[T, T];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.Heads; h++)
            {
                for (int i = 0; i < T; i++)
                {
                    double m = double.NegativeInfinity;
                    for (int j = 0; j < T; j++)
                    {
                        p[i, j] = double.NegativeInfinity;
                        if (!Bd3Mask.Allowed(s.Mask, T, s.BlockSize, i, j)) continue;
                        double d = 0;
                        for (int c = 0; c < hd; c++) d += qkv[Q(s, b, i, h) + c] * qkv[Q(s, b, j, h) + D + c];
                        p[i, j] = d * scale;
                        m = Math.Max(m, p[i, j]);
                    }
                    double z = 0;
                    for (int j = 0; j < T; j++) { p[i, j] = Math.Exp(p[i, j] - m); z += p[i, j]; }
                    for (int j = 0; j < T; j++) p[i, j] /= z;
                }
                for (int i = 0; i < T; i++)
                {
                    int doRow = (b * T + i) * D + h * hd;
                    double delta = 0;
                    for (int j = 0; j < T; j++)
                    {
                        double d = 0;
                        for (int c = 0; c < hd; c++) d += dO[doRow + c] * qkv[Q(s, b, j, h) + 2 * D + c];
                        dp[i, j] = d;
                        delta += p[i, j] * d;
                    }
                    for (int j = 0; j < T; j++)
                    {
                        if (p[i, j] == 0) continue;
                        double ds = p[i, j] * (dp[i, j] - delta) * scale;
                        for (int c = 0; c < hd; c++)
                        {
                            g[Q(s, b, i, h) + c] += ds * qkv[Q(s, b, j, h) + D + c];
                            g[Q(s, b, j, h) + D + c] += ds * qkv[Q(s, b, i, h) + c];
                            g[Q(s, b, j, h) + 2 * D + c] += p[i, j] * dO[doRow + c];
                        }
                    }
                }
            }
        return g;
    }
}

public class AttentionTests
{
    readonly CpuBackend be = new();

    static float[] Random(int n, int seed, float amp = 1f)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(r.NextDouble() * 2 - 1) * amp;
        return a;
    }

    static double[] ToDouble(float[] a) => Array.ConvertAll(a, x => (double)x);

    /// <summary>max |got - want| / max |want|, the norm-wise relative error.</summary>
    static double RelErr(ReadOnlySpan<float> got, double[] want)
    {
        double num = 0, den = 1e-30;
        for (int i = 0; i < want.Length; i++)
        {
            Assert.False(float.IsNaN(got[i]), $"NaN at {i}");
            num = Math.Max(num, Math.Abs(got[i] - want[i]));
            den = Math.Max(den, Math.Abs(want[i]));
        }
        return num / den;
    }

    static double RelErr(ReadOnlySpan<float> got, ReadOnlySpan<float> want) => RelErr(got, ToDouble(want.ToArray()));

    (float[] Qkv, float[] Out, float[] Lse) RunForward(AttentionShape s, int seed, float amp = 1f)
    {
        int bt = s.Batch * s.SeqLen;
        var qkvHost = Random(bt * s.QkvRowStride, seed, amp);
        var qkv = be.AllocFloat(qkvHost.Length);
        be.Upload(qkv, qkvHost);
        var o = be.AllocFloat(bt * s.ModelDim);
        var lse = be.AllocFloat(bt * s.Heads);
        be.Fill(o, float.NaN);
        be.Fill(lse, float.NaN);
        be.AttentionForward(s, qkv, o, lse);
        return (qkvHost, CpuBackend.Span(o).ToArray(), CpuBackend.Span(lse).ToArray());
    }

    public static TheoryData<MaskKind, int, int, int> ForwardCases()
    {
        var data = new TheoryData<MaskKind, int, int, int>();
        int[] headDims = [8, 16, 24, 64];
        int k = 0;
        foreach (int l in new[] { 12, 20, 36, 40, 80, 100 })
            foreach (int bs in new[] { 1, 2, 4, 8, 16, l }.Distinct().Where(b => l % b == 0))
            {
                data.Add(MaskKind.Bd3, l, bs, headDims[k % 4]);
                data.Add(MaskKind.BlockCausal, l, bs, headDims[(k + 1) % 4]);
                k++;
            }
        foreach (int t in new[] { 1, 12, 37, 100 })
        {
            data.Add(MaskKind.Causal, t, 1, headDims[k++ % 4]);
            data.Add(MaskKind.Full, t, 1, headDims[k++ % 4]);
        }
        // head dims that are not a multiple of the SIMD width take the portable path
        data.Add(MaskKind.Bd3, 20, 4, 12);
        data.Add(MaskKind.Bd3, 64, 4, 64);   // the default size class: L' = 4, head dim 64
        data.Add(MaskKind.Bd3, 100, 1, 64);
        data.Add(MaskKind.Causal, 33, 1, 5);
        return data;
    }

    /// <summary>L is the un-doubled length: BD3 runs over SeqLen = 2L.</summary>
    static AttentionShape Shape(MaskKind kind, int l, int bs, int hd, int batch = 2, int heads = 3)
        => new(batch, heads, hd, kind == MaskKind.Bd3 ? 2 * l : l, kind, bs);

    [Theory]
    [MemberData(nameof(ForwardCases))]
    public void ForwardMatchesFloat64Reference(MaskKind kind, int l, int bs, int hd)
    {
        var s = Shape(kind, l, bs, hd);
        var (qkv, o, lse) = RunForward(s, seed: l * 31 + bs * 7 + hd, amp: 2f);
        var (ro, rlse) = AttentionReference.Forward(s, ToDouble(qkv));
        Assert.True(RelErr(o, ro) < 1e-4, $"output rel err {RelErr(o, ro)}");
        for (int i = 0; i < rlse.Length; i++)
            Assert.True(Math.Abs(lse[i] - rlse[i]) <= 1e-4 * Math.Max(1, Math.Abs(rlse[i])), $"lse[{i}] = {lse[i]}, want {rlse[i]}");
    }

    [Fact]
    public void ForwardRespectsViewOffsetsAndLargeLogits()
    {
        // views that do not start at 0, and scores around ±100 (online softmax must rescale, not overflow)
        var s = Shape(MaskKind.Bd3, 40, 4, 16);
        int bt = s.Batch * s.SeqLen;
        var host = Random(bt * s.QkvRowStride, 5, amp: 10f);
        var qkvAll = be.AllocFloat(host.Length + 13);
        var outAll = be.AllocFloat(bt * s.ModelDim + 7);
        var lseAll = be.AllocFloat(bt * s.Heads + 3);
        var qkv = qkvAll.Slice(13, host.Length);
        be.Upload(qkv, host);
        be.AttentionForward(s, qkv, outAll.Slice(7, bt * s.ModelDim), lseAll.Slice(3, bt * s.Heads));
        var (ro, rlse) = AttentionReference.Forward(s, ToDouble(host));
        Assert.True(RelErr(CpuBackend.Span(outAll.Slice(7, bt * s.ModelDim)), ro) < 1e-4);
        Assert.True(RelErr(CpuBackend.Span(lseAll.Slice(3, bt * s.Heads)), rlse) < 1e-5);
        Assert.Equal(0f, CpuBackend.Span(outAll)[0]);
    }

    [Fact]
    public void Bd3WithBlockSizeLIsMdlmAndNoisyHalfIgnoresClean()
    {
        // L' = L: noisy queries see exactly the whole noisy half (MDLM), i.e. Full attention over x_noisy.
        var s = Shape(MaskKind.Bd3, 24, 24, 16, batch: 1, heads: 2);
        var (qkv, o, _) = RunForward(s, 3);
        var full = new AttentionShape(1, 2, 16, 24, MaskKind.Full, 1);
        var half = new float[24 * full.QkvRowStride];
        Array.Copy(qkv, half, half.Length);
        var hv = be.AllocFloat(half.Length); be.Upload(hv, half);
        var fo = be.AllocFloat(24 * 32); var fl = be.AllocFloat(48);
        be.AttentionForward(full, hv, fo, fl);
        Assert.True(RelErr(o.AsSpan(0, 24 * 32), CpuBackend.Span(fo)) < 1e-5);
    }

    // ------------------------------------------------------------------ backward

    /// <summary>fused: null = the backend's own choice (IBackend path), true/false force the CPU kernel's variant.</summary>
    float[] RunBackward(AttentionShape s, float[] qkvHost, float[] dOHost, bool? fused = null)
    {
        int bt = s.Batch * s.SeqLen;
        var qkv = be.AllocFloat(qkvHost.Length); be.Upload(qkv, qkvHost);
        var o = be.AllocFloat(bt * s.ModelDim);
        var lse = be.AllocFloat(bt * s.Heads);
        be.AttentionForward(s, qkv, o, lse);
        var dO = be.AllocFloat(dOHost.Length); be.Upload(dO, dOHost);
        var dQkv = be.AllocFloat(qkvHost.Length);
        be.Fill(dQkv, float.NaN); // must be overwritten everywhere
        if (fused is null) be.AttentionBackward(s, qkv, o, lse, dO, dQkv);
        else CpuAttention.Backward(s, qkv, o, lse, dO, dQkv, fused);
        return CpuBackend.Span(dQkv).ToArray();
    }

    public static TheoryData<MaskKind, int, int> SmallBackwardCases() => new()
    {
        { MaskKind.Bd3, 6, 1 }, { MaskKind.Bd3, 6, 2 }, { MaskKind.Bd3, 6, 3 }, { MaskKind.Bd3, 6, 6 },
        { MaskKind.BlockCausal, 9, 3 }, { MaskKind.BlockCausal, 8, 1 },
        { MaskKind.Causal, 7, 1 }, { MaskKind.Full, 5, 1 },
    };

    [Theory]
    [MemberData(nameof(SmallBackwardCases))]
    public void BackwardMatchesFiniteDifferences(MaskKind kind, int l, int bs)
    {
        var s = Shape(kind, l, bs, hd: 8, batch: 2, heads: 2);
        int bt = s.Batch * s.SeqLen;
        var qkv = Random(bt * s.QkvRowStride, 100 + l * 3 + bs);
        var w = Random(bt * s.ModelDim, 200 + l);
        var x = ToDouble(qkv);
        double Loss()
        {
            var (o, _) = AttentionReference.Forward(s, x);
            double sum = 0;
            for (int i = 0; i < o.Length; i++) sum += w[i] * o[i];
            return sum;
        }
        var fd = new double[x.Length];
        const double h = 1e-4;
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + h; double up = Loss();
            x[i] = keep - h; double down = Loss();
            x[i] = keep;
            fd[i] = (up - down) / (2 * h);
        }
        foreach (bool? fused in new bool?[] { null, true, false })
        {
            double err = RelErr(RunBackward(s, qkv, w, fused), fd);
            Assert.True(err < 1e-4, $"fused={fused}: gradient rel err vs finite differences {err}");
        }
    }

    public static TheoryData<MaskKind, int, int, int> BigBackwardCases() => new()
    {
        { MaskKind.Bd3, 40, 1, 16 }, { MaskKind.Bd3, 40, 4, 64 }, { MaskKind.Bd3, 48, 8, 24 }, { MaskKind.Bd3, 80, 16, 8 },
        { MaskKind.Bd3, 36, 36, 16 }, { MaskKind.Bd3, 20, 4, 12 },
        { MaskKind.BlockCausal, 100, 4, 16 }, { MaskKind.BlockCausal, 96, 32, 24 },
        { MaskKind.Causal, 70, 1, 64 }, { MaskKind.Full, 45, 1, 16 }, { MaskKind.Causal, 33, 1, 5 },
    };

    [Theory]
    [MemberData(nameof(BigBackwardCases))]
    public void BackwardMatchesFloat64Analytic(MaskKind kind, int l, int bs, int hd)
    {
        var s = Shape(kind, l, bs, hd);
        int bt = s.Batch * s.SeqLen;
        var qkv = Random(bt * s.QkvRowStride, 7 * l + bs, amp: 1.5f);
        var dO = Random(bt * s.ModelDim, 3 * l + hd);
        var want = AttentionReference.Backward(s, ToDouble(qkv), ToDouble(dO));
        // check each of dq, dk, dv on its own, so a small dk cannot hide behind a large dv
        int D = s.ModelDim;
        foreach (bool fused in new[] { true, false })
        {
            var got = RunBackward(s, qkv, dO, fused);
            CompareParts(got, want, bt, D, $"fused={fused}");
        }
    }


    static void CompareParts(float[] got, double[] want, int bt, int D, string what)
    {
        for (int part = 0; part < 3; part++)
        {
            double num = 0, den = 1e-30;
            for (int r = 0; r < bt; r++)
                for (int c = 0; c < D; c++)
                {
                    int idx = r * 3 * D + part * D + c;
                    num = Math.Max(num, Math.Abs(got[idx] - want[idx]));
                    den = Math.Max(den, Math.Abs(want[idx]));
                }
            Assert.True(num / den < 1e-4, $"{what} part {part}: rel err {num / den}");
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void BackwardRespectsViewOffsets(bool fused)
    {
        var s = Shape(MaskKind.Bd3, 20, 2, 16);
        int bt = s.Batch * s.SeqLen, n = bt * s.QkvRowStride, m = bt * s.ModelDim, h = bt * s.Heads;
        var host = Random(n, 41);
        var dOHost = Random(m, 42);
        var qkvAll = be.AllocFloat(n + 5); var oAll = be.AllocFloat(m + 6); var lseAll = be.AllocFloat(h + 7);
        var dOAll = be.AllocFloat(m + 8); var dAll = be.AllocFloat(n + 9 + 4);
        be.Fill(dAll, 123f);
        var qkv = qkvAll.Slice(5, n); var o = oAll.Slice(6, m); var lse = lseAll.Slice(7, h);
        var dO = dOAll.Slice(8, m); var d = dAll.Slice(9, n);
        be.Upload(qkv, host); be.Upload(dO, dOHost);
        be.AttentionForward(s, qkv, o, lse);
        CpuAttention.Backward(s, qkv, o, lse, dO, d, fused);
        var want = AttentionReference.Backward(s, ToDouble(host), ToDouble(dOHost));
        CompareParts(CpuBackend.Span(d).ToArray(), want, bt, s.ModelDim, $"fused={fused}");
        // nothing outside the view is touched
        var all = CpuBackend.Span(dAll);
        for (int i = 0; i < 9; i++) Assert.Equal(123f, all[i]);
        for (int i = 9 + n; i < all.Length; i++) Assert.Equal(123f, all[i]);
    }

    [Fact]
    public void ReferenceBackwardMatchesFiniteDifferences()
    {
        // the float64 analytic reference itself, so that the big cases above compare against something trusted
        var s = Shape(MaskKind.Bd3, 4, 2, hd: 4, batch: 1, heads: 2);
        var x = ToDouble(Random(s.SeqLen * s.QkvRowStride, 9));
        var w = ToDouble(Random(s.SeqLen * s.ModelDim, 10));
        var g = AttentionReference.Backward(s, x, w);
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + 1e-5; var (up, _) = AttentionReference.Forward(s, x);
            x[i] = keep - 1e-5; var (down, _) = AttentionReference.Forward(s, x);
            x[i] = keep;
            double fd = 0;
            for (int k = 0; k < w.Length; k++) fd += w[k] * (up[k] - down[k]) / 2e-5;
            Assert.True(Math.Abs(fd - g[i]) < 1e-7, $"{i}: {g[i]} vs {fd}");
        }
    }

    // ------------------------------------------------------------------ tile boundaries

    /// <summary>
    /// Shapes whose tiles straddle the 32-query / 64-key tiling and the 8-row × 32-column register tiles: sequence
    /// lengths that are not multiples of a tile (and shorter than one), L' = 1 and L' = L, head dims below the SIMD
    /// width, not a multiple of 8, and 128 (four register strips). (kind, L, L', head dim, batch, heads)
    /// </summary>
    public static TheoryData<MaskKind, int, int, int, int, int> TileBoundaryCases() => new()
    {
        { MaskKind.Bd3, 33, 1, 16, 1, 1 },     // 2L = 66: one key more than a key tile, two queries past a query tile
        { MaskKind.Bd3, 33, 33, 8, 1, 2 },     // L' = L: the noisy half is one bidirectional block
        { MaskKind.Bd3, 33, 3, 4, 2, 1 },      // head dim 4: half a vector
        { MaskKind.Bd3, 48, 16, 128, 1, 1 },   // head dim 128
        { MaskKind.Bd3, 100, 4, 64, 1, 1 },    // 2L = 200: a partial last query tile and key tile
        { MaskKind.Bd3, 7, 1, 2, 1, 3 },       // everything shorter than one tile
        { MaskKind.BlockCausal, 65, 13, 128, 1, 1 },
        { MaskKind.BlockCausal, 130, 65, 20, 1, 1 },
        { MaskKind.Causal, 97, 1, 1, 1, 2 },   // head dim 1
        { MaskKind.Causal, 129, 1, 40, 2, 1 },
        { MaskKind.Full, 31, 1, 128, 1, 1 },
        { MaskKind.Full, 65, 1, 3, 1, 1 },
    };

    [Theory]
    [MemberData(nameof(TileBoundaryCases))]
    public void TileBoundariesMatchFloat64Reference(MaskKind kind, int l, int bs, int hd, int batch, int heads)
    {
        var s = Shape(kind, l, bs, hd, batch, heads);
        var (qkv, o, lse) = RunForward(s, seed: 11 * l + bs + hd, amp: 2f);
        var (ro, rlse) = AttentionReference.Forward(s, ToDouble(qkv));
        Assert.True(RelErr(o, ro) < 1e-4, $"output rel err {RelErr(o, ro)}");
        for (int i = 0; i < rlse.Length; i++)
            Assert.True(Math.Abs(lse[i] - rlse[i]) <= 1e-4 * Math.Max(1, Math.Abs(rlse[i])), $"lse[{i}] = {lse[i]}, want {rlse[i]}");
        int bt = s.Batch * s.SeqLen;
        var dO = Random(bt * s.ModelDim, 5 * l + hd);
        var want = AttentionReference.Backward(s, ToDouble(qkv), ToDouble(dO));
        foreach (bool? fused in new bool?[] { null, true, false })
            CompareParts(RunBackward(s, qkv, dO, fused), want, bt, s.ModelDim, $"fused={fused}");
    }

    // ------------------------------------------------------------------ decode

    [Theory]
    [InlineData(4, 3, 16, 0)]
    [InlineData(4, 3, 16, 5)]
    [InlineData(1, 6, 24, 3)]
    [InlineData(8, 4, 64, 9)]
    [InlineData(16, 5, 8, 1)]
    [InlineData(48, 2, 16, 0)]   // block longer than a query tile, prefix longer than a key tile
    [InlineData(2, 50, 12, 4)]   // head dim outside the SIMD path
    public void DecodeEqualsLastBlockOfBlockCausalForward(int blockLen, int prefixBlocks, int hd, int spare)
    {
        const int batch = 2, heads = 3;
        int T = (prefixBlocks + 1) * blockLen, cacheLen = prefixBlocks * blockLen, cap = cacheLen + spare;
        var s = new AttentionShape(batch, heads, hd, T, MaskKind.BlockCausal, blockLen);
        var (qkv, o, _) = RunForward(s, seed: blockLen * 13 + prefixBlocks);
        int D = s.ModelDim, stride = 3 * D;

        // K/V cache [B, cap, D] from the prefix's k and v; rows past cacheLen hold garbage that must not be read
        var kc = new float[batch * cap * D];
        var vc = new float[batch * cap * D];
        Array.Fill(kc, 1e6f); Array.Fill(vc, float.NaN);
        var blockQkv = new float[batch * blockLen * stride];
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < cacheLen; t++)
            {
                Array.Copy(qkv, (b * T + t) * stride + D, kc, (b * cap + t) * D, D);
                Array.Copy(qkv, (b * T + t) * stride + 2 * D, vc, (b * cap + t) * D, D);
            }
            Array.Copy(qkv, (b * T + cacheLen) * stride, blockQkv, b * blockLen * stride, blockLen * stride);
        }
        var bq = be.AllocFloat(blockQkv.Length); be.Upload(bq, blockQkv);
        var kcv = be.AllocFloat(kc.Length); be.Upload(kcv, kc);
        var vcv = be.AllocFloat(vc.Length); be.Upload(vcv, vc);
        var outv = be.AllocFloat(batch * blockLen * D);
        be.DecodeAttention(new DecodeShape(batch, heads, hd, blockLen, cacheLen, cap), bq, kcv, vcv, outv);
        var got = CpuBackend.Span(outv);
        var want = new float[batch * blockLen * D];
        for (int b = 0; b < batch; b++)
            Array.Copy(o, (b * T + cacheLen) * D, want, b * blockLen * D, blockLen * D);
        Assert.True(RelErr(got, want) < 1e-5, $"decode vs forward rel err {RelErr(got, want)}");
    }

    [Theory]
    [InlineData(12, 1, 16)]
    [InlineData(12, 4, 8)]
    [InlineData(40, 8, 24)]
    [InlineData(36, 36, 16)]
    public void Bd3EqualsPerBlockLoopOverCleanPrefix(int l, int bs, int hd)
    {
        // DESIGN 1.1 at the attention level: noisy block b of the 2L pass = decoding that block against the clean
        // K/V of blocks < b; the clean half = BlockCausal attention over x_clean alone.
        const int batch = 2, heads = 3;
        var s = Shape(MaskKind.Bd3, l, bs, hd, batch, heads);
        var (qkv, o, _) = RunForward(s, seed: l + bs);
        int T = 2 * l, D = s.ModelDim, stride = 3 * D;
        for (int blk = 0; blk < l / bs; blk++)
        {
            int cacheLen = blk * bs;
            var kc = new float[batch * l * D]; var vc = new float[batch * l * D];
            var bq = new float[batch * bs * stride];
            for (int b = 0; b < batch; b++)
            {
                for (int t = 0; t < cacheLen; t++)
                {
                    Array.Copy(qkv, (b * T + l + t) * stride + D, kc, (b * l + t) * D, D);
                    Array.Copy(qkv, (b * T + l + t) * stride + 2 * D, vc, (b * l + t) * D, D);
                }
                Array.Copy(qkv, (b * T + blk * bs) * stride, bq, b * bs * stride, bs * stride);
            }
            var bqv = be.AllocFloat(bq.Length); be.Upload(bqv, bq);
            var kcv = be.AllocFloat(kc.Length); be.Upload(kcv, kc);
            var vcv = be.AllocFloat(vc.Length); be.Upload(vcv, vc);
            var outv = be.AllocFloat(batch * bs * D);
            be.DecodeAttention(new DecodeShape(batch, heads, hd, bs, cacheLen, l), bqv, kcv, vcv, outv);
            var want = new float[batch * bs * D];
            for (int b = 0; b < batch; b++) Array.Copy(o, (b * T + blk * bs) * D, want, b * bs * D, bs * D);
            Assert.True(RelErr(CpuBackend.Span(outv), want) < 1e-5, $"noisy block {blk}");
        }
        // clean half
        var clean = new float[batch * l * stride];
        for (int b = 0; b < batch; b++) Array.Copy(qkv, (b * T + l) * stride, clean, b * l * stride, l * stride);
        var cs = new AttentionShape(batch, heads, hd, l, MaskKind.BlockCausal, bs);
        var cv = be.AllocFloat(clean.Length); be.Upload(cv, clean);
        var co = be.AllocFloat(batch * l * D); var cl = be.AllocFloat(batch * l * heads);
        be.AttentionForward(cs, cv, co, cl);
        var wantClean = new float[batch * l * D];
        for (int b = 0; b < batch; b++) Array.Copy(o, (b * T + l) * D, wantClean, b * l * D, l * D);
        Assert.True(RelErr(CpuBackend.Span(co), wantClean) < 1e-5, "clean half");
    }

    // ------------------------------------------------------------------ timing (run explicitly)

    [Fact(Explicit = true)]
    public void TimeBd3VersusFull()
    {
        foreach (var (kind, seq, bs) in new[] { (MaskKind.Bd3, 512, 4), (MaskKind.Bd3, 512, 1), (MaskKind.Bd3, 512, 16), (MaskKind.Full, 512, 1),
            (MaskKind.Causal, 512, 1), (MaskKind.Bd3, 2048, 4), (MaskKind.Full, 2048, 1) })
        {
            var s = new AttentionShape(1, 4, 64, seq, kind, bs);
            int bt = s.SeqLen;
            var qkv = be.AllocFloat(bt * s.QkvRowStride); be.Upload(qkv, Random(bt * s.QkvRowStride, 1));
            var o = be.AllocFloat(bt * s.ModelDim); var lse = be.AllocFloat(bt * s.Heads);
            var dO = be.AllocFloat(bt * s.ModelDim); be.Upload(dO, Random(bt * s.ModelDim, 2));
            var dq = be.AllocFloat(bt * s.QkvRowStride);
            for (int w = 0; w < 3; w++) { be.AttentionForward(s, qkv, o, lse); be.AttentionBackward(s, qkv, o, lse, dO, dq); }
            int reps = seq > 1000 ? 5 : 30;
            // wall time and process CPU time (the latter is less disturbed by a busy shared machine)
            var proc = Process.GetCurrentProcess();
            var cpu0 = proc.TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            for (int r = 0; r < reps; r++) be.AttentionForward(s, qkv, o, lse);
            double fwd = sw.Elapsed.TotalMilliseconds / reps;
            proc.Refresh();
            double fwdCpu = (proc.TotalProcessorTime - cpu0).TotalMilliseconds / reps;
            cpu0 = proc.TotalProcessorTime;
            sw.Restart();
            for (int r = 0; r < reps; r++) be.AttentionBackward(s, qkv, o, lse, dO, dq);
            double bwd = sw.Elapsed.TotalMilliseconds / reps;
            proc.Refresh();
            double bwdCpu = (proc.TotalProcessorTime - cpu0).TotalMilliseconds / reps;
            long pairs = 0;
            for (int i = 0; i < seq; i++)
            {
                CpuAttention.KeyRanges(kind, seq, bs, i, out int a0, out int a1, out int b0, out int b1);
                pairs += Math.Max(0, a1 - a0) + Math.Max(0, b1 - b0);
            }
            double gflop = 4.0 * pairs * 64 * 4 / 1e9; // 2 matmuls × 2 flops, 4 heads
            TestContext.Current.TestOutputHelper?.WriteLine(
                $"{kind} T={seq} L'={bs} H=4 d=64: fwd {fwd:F2} ms wall, {fwdCpu:F2} ms cpu ({gflop / fwdCpu * 1e3:F1} useful GFLOP/s per cpu-s); " +
                $"bwd {bwd:F2} ms wall, {bwdCpu:F2} ms cpu");
        }
    }
}
