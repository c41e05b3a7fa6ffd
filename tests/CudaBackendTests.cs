using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;
using FastBlockDiff.Kernels.Cuda;

namespace FastBlockDiff.Tests;

/// <summary>
/// Each CUDA op against the CPU reference (attention against a naive double-precision reference of the mask
/// formula) on random awkward shapes, outputs poisoned with NaN first. fp32 relative error (max |Δ| / max |ref|)
/// below 1e-4. Skips with the reason when no CUDA device/driver/NVRTC/cuBLASLt is present.
/// </summary>
public class CudaBackendTests
{
    const double Tol = 1e-4;
    static readonly Lazy<(CudaBackend? Backend, string? Why)> Shared = new(() =>
    {
        var why = CudaBackend.Unavailable();
        return why != null ? (null, why) : (new CudaBackend(), null);
    });

    internal static CudaBackend Gpu()
    {
        var (b, why) = Shared.Value;
        if (b == null)
        {
            if (Environment.GetEnvironmentVariable("FASTBLOCKDIFF_REQUIRE_CUDA") == "1") Assert.Fail($"no CUDA device (FASTBLOCKDIFF_REQUIRE_CUDA=1): {why}");
            Assert.Skip($"no CUDA device: {why}");
        }
        return b!;
    }

    static readonly CpuBackend Cpu = new();

    // ---- helpers ----
    static float[] Rand(Random r, int n, float scale = 1f)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(r.NextDouble() * 2 - 1) * scale;
        return a;
    }
    static FloatView Up(IBackend be, float[] d) { var v = be.AllocFloat(d.Length); be.Upload(v, d); return v; }
    static IntView UpI(IBackend be, int[] d) { var v = be.AllocInt(d.Length); be.Upload(v, d); return v; }
    static FloatView Poison(IBackend be, int n) { var v = be.AllocFloat(n); be.Upload(v, Enumerable.Repeat(float.NaN, n).ToArray()); return v; }
    static float[] Down(IBackend be, FloatView v) { var a = new float[v.Length]; be.Download(v, a); return a; }
    static int[] DownI(IBackend be, IntView v) { var a = new int[v.Length]; be.Download(v, a); return a; }

    internal static void Close(string what, ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double tol = Tol)
    {
        Assert.Equal(expected.Length, actual.Length);
        double maxRef = 0, maxDiff = 0; int worst = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            if (float.IsNaN(actual[i]) != float.IsNaN(expected[i])) Assert.Fail($"{what}: NaN mismatch at {i} (expected {expected[i]}, got {actual[i]})");
            if (float.IsNaN(expected[i])) continue;
            if (float.IsInfinity(expected[i]) || float.IsInfinity(actual[i]))
            {
                Assert.True(expected[i] == actual[i], $"{what}: at {i} expected {expected[i]}, got {actual[i]}");
                continue;
            }
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
            double d = Math.Abs(expected[i] - actual[i]);
            if (d > maxDiff) { maxDiff = d; worst = i; }
        }
        double rel = maxDiff / Math.Max(maxRef, 1e-6);
        Assert.True(rel < tol, $"{what}: relative error {rel:E2} at {worst} (expected {(worst >= 0 ? expected[worst] : 0)}, got {(worst >= 0 ? actual[worst] : 0)})");
    }

    /// <summary>Runs the same op on both backends and compares every output.</summary>
    static void Both(string what, Func<IBackend, float[][]> run, double tol = Tol)
    {
        var g = Gpu();
        var e = run(Cpu); var a = run(g);
        for (int i = 0; i < e.Length; i++) Close($"{what}[{i}]", e[i], a[i], tol);
    }

    // ---- elementwise and reductions ----
    [Theory]
    [InlineData(1)] [InlineData(37)] [InlineData(1000)] [InlineData(65537)]
    public void Elementwise(int n)
    {
        var r = new Random(n);
        var x = Rand(r, n); var y = Rand(r, n); var z = Rand(r, n);
        Both("fill", be => { var v = Poison(be, n); be.Fill(v, 0.25f); return [Down(be, v)]; });
        Both("copy", be => { var v = Poison(be, n); be.Copy(v, Up(be, x)); return [Down(be, v)]; });
        Both("axpy", be => { var v = Up(be, y); be.Axpy(v, -0.7f, Up(be, x)); return [Down(be, v)]; });
        Both("scaleShift", be => { var v = Up(be, x); be.ScaleShift(v, 1.3f, -0.2f); return [Down(be, v)]; });
        Both("mul", be => { var v = Poison(be, n); be.Mul(v, Up(be, x), Up(be, y), false); return [Down(be, v)]; });
        Both("mulAcc", be => { var v = Up(be, z); be.Mul(v, Up(be, x), Up(be, y), true); return [Down(be, v)]; });
        Both("gelu", be => { var v = Poison(be, n); be.GeluForward(Up(be, x), v); return [Down(be, v)]; });
        Both("geluBwd", be => { var v = Poison(be, n); be.GeluBackward(Up(be, x), Up(be, y), v); return [Down(be, v)]; });
        Both("geluBwdAlias", be => { var d = Up(be, y); be.GeluBackward(Up(be, x), d, d); return [Down(be, d)]; });
        Both("silu", be => { var v = Poison(be, n); be.SiluForward(Up(be, x), v); return [Down(be, v)]; });
        Both("siluBwd", be => { var v = Poison(be, n); be.SiluBackward(Up(be, x), Up(be, y), v); return [Down(be, v)]; });
        Both("ema", be => { var v = Up(be, y); be.Ema(v, Up(be, x), 0.99f); return [Down(be, v)]; });
        Both("sums", be => { var v = Up(be, x); return [[(float)be.Sum(v), (float)be.SumSquares(v)]]; });
        // views at an offset
        Both("sliceAxpy", be => { var v = Up(be, y); be.Axpy(v.Slice(n / 3), 2f, Up(be, x).Slice(0, n - n / 3)); return [Down(be, v)]; });
    }

    [Theory]
    [InlineData(1, 1)] [InlineData(7, 33)] [InlineData(300, 129)] [InlineData(2049, 3)]
    public void RowsAndColumns(int rows, int cols)
    {
        var r = new Random(rows * 31 + cols);
        var src = Rand(r, rows * (cols + 5)); var acc = Rand(r, cols);
        Both("copyRows", be => { var d = Poison(be, rows * (cols + 2)); be.CopyRows(d, cols + 2, Up(be, src), cols + 5, rows, cols);
            var a = Down(be, d); for (int i = 0; i < a.Length; i++) if (i % (cols + 2) >= cols) a[i] = 0; return [a]; });
        Both("columnSum", be => { var d = Poison(be, cols); be.ColumnSum(d, Up(be, src), rows, cols, false); return [Down(be, d)]; });
        Both("columnSumAcc", be => { var d = Up(be, acc); be.ColumnSum(d, Up(be, src), rows, cols, true); return [Down(be, d)]; });
    }

    // ---- GEMM ----
    [Theory]
    [InlineData(false, false, 1, 1, 1, 1)] [InlineData(false, false, 17, 33, 65, 1)] [InlineData(true, false, 31, 7, 129, 1)]
    [InlineData(false, true, 64, 96, 40, 1)] [InlineData(true, true, 13, 29, 31, 1)] [InlineData(false, true, 19, 23, 37, 3)]
    [InlineData(true, false, 5, 300, 77, 4)]
    public void Gemm(bool ta, bool tb, int m, int n, int k, int batch)
    {
        var r = new Random(m * 7 + n * 13 + k);
        int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
        long sa = (long)(ta ? k : m) * lda, sb = (long)(tb ? n : k) * ldb, sc = (long)m * ldc;
        var a = Rand(r, (int)(sa * batch)); var b = Rand(r, (int)(sb * batch)); var c = Rand(r, (int)(sc * batch)); var bias = Rand(r, n);
        foreach (var withBias in new[] { false, true })
            foreach (var beta in new[] { 0f, 0.5f })
                Both($"gemm bias={withBias} beta={beta}", be =>
                {
                    var cv = Up(be, c);
                    be.Gemm(ta, tb, m, n, k, 0.75f, Up(be, a), lda, Up(be, b), ldb, beta, cv, ldc, withBias ? Up(be, bias) : null, batch, sa, sb, sc);
                    var o = Down(be, cv);
                    for (int i = 0; i < o.Length; i++) if (i % ldc >= n) o[i] = 0; // padding columns are not the op's
                    return [o];
                });
    }

    [Fact]
    public void GemmBf16WithinTwoPercent()
    {
        var g = Gpu();
        var r = new Random(5);
        int m = 70, n = 90, k = 130;
        var a = Rand(r, m * k); var b = Rand(r, k * n);
        var e = Cpu.AllocFloat(m * n); Cpu.Gemm(false, false, m, n, k, 1, Up(Cpu, a), k, Up(Cpu, b), n, 0, e, n);
        g.Bf16Gemm = true;
        try
        {
            var c = Poison(g, m * n); g.Gemm(false, false, m, n, k, 1, Up(g, a), k, Up(g, b), n, 0, c, n);
            Close("bf16 gemm", Down(Cpu, e), Down(g, c), 2e-2);
        }
        finally { g.Bf16Gemm = false; }
    }

    // ---- normalisation, transformer pieces ----
    [Theory]
    [InlineData(1, 5)] [InlineData(37, 129)] [InlineData(300, 768)] [InlineData(3, 1030)]
    public void LayerNorm(int rows, int dim)
    {
        var r = new Random(rows + dim);
        var x = Rand(r, rows * dim, 3f); var w = Rand(r, dim); var bias = Rand(r, dim); var dy = Rand(r, rows * dim);
        var dx0 = Rand(r, rows * dim); var dw0 = Rand(r, dim); var db0 = Rand(r, dim);
        foreach (var withBias in new[] { false, true })
            Both($"layernorm bias={withBias}", be =>
            {
                var y = Poison(be, rows * dim); var mean = Poison(be, rows); var rstd = Poison(be, rows);
                var xv = Up(be, x); var wv = Up(be, w);
                be.LayerNormForward(xv, wv, withBias ? Up(be, bias) : null, y, mean, rstd, rows, dim, 1e-5f);
                var dx = Up(be, dx0); var dw = Up(be, dw0); var db = Up(be, db0);
                be.LayerNormBackward(Up(be, dy), xv, wv, mean, rstd, dx, dw, withBias ? db : null, rows, dim);
                return [Down(be, y), Down(be, mean), Down(be, rstd), Down(be, dx), Down(be, dw), Down(be, db)];
            });
    }

    [Theory]
    [InlineData(1, 1, 2, false)] [InlineData(13, 3, 64, false)] [InlineData(13, 3, 64, true)] [InlineData(50, 12, 32, true)]
    public void Rotary(int rows, int heads, int hd, bool inverse)
    {
        var r = new Random(rows * heads + hd);
        int stride = 3 * heads * hd + 1, maxPos = 97, half = hd / 2;
        var x = Rand(r, rows * stride);
        var cos = new float[maxPos * half]; var sin = new float[maxPos * half];
        for (int p = 0; p < maxPos; p++)
            for (int i = 0; i < half; i++)
            {
                double th = p * Math.Pow(10000, -2.0 * i / hd);
                cos[p * half + i] = (float)Math.Cos(th); sin[p * half + i] = (float)Math.Sin(th);
            }
        var pos = Enumerable.Range(0, rows).Select(i => (i * 37) % maxPos).ToArray();
        Both("rotary", be =>
        {
            var v = Up(be, x);
            be.Rotary(v.Slice(heads * hd), rows, stride, heads, hd, UpI(be, pos), Up(be, cos), Up(be, sin), inverse);
            return [Down(be, v)];
        });
    }

    [Theory]
    [InlineData(1, 1, 3)] [InlineData(77, 33, 50)] [InlineData(500, 256, 17)]
    public void Embedding(int rows, int dim, int vocab)
    {
        var r = new Random(rows + dim);
        var table = Rand(r, vocab * dim); var dOut = Rand(r, rows * dim); var dT0 = Rand(r, vocab * dim);
        var ids = Enumerable.Range(0, rows).Select(_ => r.Next(vocab)).ToArray();
        Both("embedding", be =>
        {
            var o = Poison(be, rows * dim); var idv = UpI(be, ids);
            be.EmbeddingForward(idv, Up(be, table), o, rows, dim);
            var dT = Up(be, dT0); be.EmbeddingBackward(idv, Up(be, dOut), dT, rows, dim);
            return [Down(be, o), Down(be, dT)];
        });
    }

    [Theory]
    [InlineData(1, 7, 0f)] [InlineData(33, 129, 0.1f)] [InlineData(300, 768, 0.5f)]
    public void ResidualGated(int rows, int dim, float p)
    {
        var r = new Random(rows + dim);
        var x = Rand(r, rows * dim); var y = Rand(r, rows * dim); var gate = Rand(r, dim); var dx = Rand(r, rows * dim); var dg0 = Rand(r, dim);
        const ulong seed = 0xDEADBEEF12345UL;
        Both("residualGated", be =>
        {
            var xv = Up(be, x); var yv = Up(be, y); var gv = Up(be, gate);
            be.ResidualGatedForward(xv, yv, gv, rows, dim, p, seed);
            var dy = Poison(be, rows * dim); var dg = Up(be, dg0);
            be.ResidualGatedBackward(Up(be, dx), yv, gv, dy, dg, rows, dim, p, seed);
            return [Down(be, xv), Down(be, dy), Down(be, dg)];
        });
    }

    // ---- loss, optimiser, sampling ----
    [Theory]
    [InlineData(1, 5, 4, true)] [InlineData(37, 1001, 1000, true)] [InlineData(9, 50258, 50257, false)] [InlineData(20, 300, -1, true)]
    public void SubsCrossEntropy(int rows, int vocab, int maskId, bool writeGrad)
    {
        var r = new Random(rows + vocab);
        var logits = Rand(r, rows * vocab, 6f);
        var targets = Enumerable.Range(0, rows).Select(_ => { int t; do t = r.Next(vocab); while (t == maskId); return t; }).ToArray();
        var weights = Enumerable.Range(0, rows).Select(i => i % 3 == 1 ? 0f : (float)r.NextDouble() * 4).ToArray();
        Both("subsCE", be =>
        {
            var lv = Up(be, logits); var loss = Poison(be, rows);
            be.SubsCrossEntropy(lv, UpI(be, targets), Up(be, weights), loss, rows, vocab, maskId, 0.37f, writeGrad);
            return [Down(be, loss), Down(be, lv)];
        });
    }

    [Theory]
    [InlineData(1, 1)] [InlineData(1000, 3)] [InlineData(70001, 2500)]
    public void AdamW(int n, int step)
    {
        var r = new Random(n);
        var p = Rand(r, n); var g = Rand(r, n); var m = Rand(r, n, 0.1f); var v = Rand(r, n, 0.01f).Select(Math.Abs).ToArray();
        var s = new AdamWStep(3e-4f, 0.9f, 0.999f, 1e-8f, 0.01f, step, 0.5f);
        Both("adamw", be =>
        {
            var pv = Up(be, p); var mv = Up(be, m); var vv = Up(be, v);
            be.AdamW(pv, Up(be, g), mv, vv, s);
            return [Down(be, pv), Down(be, mv), Down(be, vv)];
        });
    }

    [Theory]
    [InlineData(1, 10, 9, 1f, 1f)] [InlineData(16, 1000, 999, 0.8f, 0.9f)] [InlineData(8, 50258, 50257, 1f, 0.9f)]
    [InlineData(5, 333, -1, 1.3f, 0.5f)] [InlineData(4, 64, 0, 0f, 0.9f)] [InlineData(6, 200, 3, 1f, 1f)]
    public void SampleCategorical(int rows, int vocab, int maskId, float temperature, float topP)
    {
        var r = new Random(rows * vocab);
        var logits = Rand(r, rows * vocab, 5f);
        var u = Enumerable.Range(0, rows).Select(_ => (float)r.NextDouble()).ToArray();
        var g = Gpu();
        if (topP < 1 && temperature > 0 && NucleusRuleTests.CpuKeepsCrossingToken()) Assert.Skip(NucleusRuleTests.CpuPending);
        (int[] Tok, float[] P) Run(IBackend be)
        {
            var t = be.AllocInt(rows); var p = Poison(be, rows);
            be.SampleCategorical(Up(be, logits), rows, vocab, maskId, temperature, topP, Up(be, u), t, p);
            return (DownI(be, t), Down(be, p));
        }
        var e = Run(Cpu); var a = Run(g);
        for (int row = 0; row < rows; row++)
        {
            if (e.Tok[row] == a.Tok[row]) { Close($"sample prob row {row}", [e.P[row]], [a.P[row]]); continue; }
            // Float normalisers differ between backends (CPU float SoftMax, GPU double sum); over a large vocabulary that
            // can move the draw by a few tokens. Then the GPU token must be the exact (double) draw up to 1e-4 of mass.
            AssertValidDraw(logits.AsSpan(row * vocab, vocab), maskId, temperature, topP, u[row], a.Tok[row], 1e-4);
        }
    }

    /// <summary>u lies (within tol of probability mass) in the CDF interval of token under the exact distribution.</summary>
    static void AssertValidDraw(ReadOnlySpan<float> logits, int maskId, float temperature, float topP, float u, int token, double tol)
    {
        int v = logits.Length;
        var p = new double[v];
        double mx = double.NegativeInfinity;
        for (int j = 0; j < v; j++) if (j != maskId) mx = Math.Max(mx, logits[j] * (double)(1f / temperature));
        double s = 0;
        for (int j = 0; j < v; j++) { p[j] = j == maskId ? 0 : Math.Exp(logits[j] * (double)(1f / temperature) - mx); s += p[j]; }
        for (int j = 0; j < v; j++) p[j] /= s;
        var order = Enumerable.Range(0, v).ToArray();
        int n = v; double total = 1;
        if (topP < 1)
        {
            Array.Sort(order, (x, y) => p[y] != p[x] ? p[y].CompareTo(p[x]) : x.CompareTo(y));
            double cum = 0; n = 0;
            while (n < v && (n == 0 || cum + p[order[n]] <= topP)) cum += p[order[n++]];   // bd3lms: cumsum ≤ p, top token kept
            total = cum;
        }
        double before = 0; int at = -1;
        for (int k = 0; k < n; k++) { if (order[k] == token) { at = k; break; } before += p[order[k]]; }
        Assert.True(at >= 0 || topP < 1 && Math.Abs(before - total) < tol * 10, $"token {token} is outside the nucleus");
        if (at < 0) return;
        double lo = before / total, hi = (before + p[token]) / total;
        Assert.True(u >= lo - tol && u <= hi + tol, $"token {token} covers [{lo}, {hi}) of the CDF, u = {u}");
    }

    // ---- attention ----
    /// <summary>Naive double-precision reference: softmax over allowed keys per (b, h, i), and its gradient.</summary>
    internal static (float[] O, float[] Lse, float[] DQkv) ReferenceAttention(AttentionShape s, float[] qkv, float[] dOut)
    {
        int B = s.Batch, H = s.Heads, hd = s.HeadDim, T = s.SeqLen, rs = 3 * H * hd, D = H * hd;
        double scale = 1 / Math.Sqrt(hd);
        var o = new float[B * T * D]; var lse = new float[B * H * T]; var dqkv = new float[qkv.Length];
        var dq = new double[B * T * rs];
        Parallel.For(0, B * H, bh =>
        {
            int b = bh / H, h = bh % H;
            double Q(int i, int d) => qkv[(b * T + i) * rs + h * hd + d];
            double K(int j, int d) => qkv[(b * T + j) * rs + D + h * hd + d];
            double V(int j, int d) => qkv[(b * T + j) * rs + 2 * D + h * hd + d];
            var p = new double[T];
            var gradQ = new double[T * hd]; var gradK = new double[T * hd]; var gradV = new double[T * hd];
            for (int i = 0; i < T; i++)
            {
                double mx = double.NegativeInfinity;
                for (int j = 0; j < T; j++)
                {
                    if (!Bd3Mask.Allowed(s.Mask, T, Math.Max(1, s.BlockSize), i, j)) { p[j] = double.NegativeInfinity; continue; }
                    double dot = 0; for (int d = 0; d < hd; d++) dot += Q(i, d) * K(j, d);
                    p[j] = dot * scale; mx = Math.Max(mx, p[j]);
                }
                double sum = 0; for (int j = 0; j < T; j++) { p[j] = double.IsNegativeInfinity(p[j]) ? 0 : Math.Exp(p[j] - mx); sum += p[j]; }
                lse[(b * H + h) * T + i] = (float)(mx + Math.Log(sum));
                for (int j = 0; j < T; j++) p[j] /= sum;
                for (int d = 0; d < hd; d++) { double acc = 0; for (int j = 0; j < T; j++) acc += p[j] * V(j, d); o[(b * T + i) * D + h * hd + d] = (float)acc; }
                // backward of row i
                double Dd = 0;
                var dp = new double[T];
                for (int j = 0; j < T; j++)
                {
                    if (p[j] == 0) continue;
                    double acc = 0; for (int d = 0; d < hd; d++) acc += dOut[(b * T + i) * D + h * hd + d] * V(j, d);
                    dp[j] = acc; Dd += p[j] * acc;
                }
                for (int j = 0; j < T; j++)
                {
                    if (p[j] == 0) continue;
                    double ds = p[j] * (dp[j] - Dd);
                    for (int d = 0; d < hd; d++)
                    {
                        gradQ[i * hd + d] += ds * K(j, d) * scale;
                        gradK[j * hd + d] += ds * Q(i, d) * scale;
                        gradV[j * hd + d] += p[j] * dOut[(b * T + i) * D + h * hd + d];
                    }
                }
            }
            for (int i = 0; i < T; i++)
                for (int d = 0; d < hd; d++)
                {
                    dqkv[(b * T + i) * rs + h * hd + d] = (float)gradQ[i * hd + d];
                    dqkv[(b * T + i) * rs + D + h * hd + d] = (float)gradK[i * hd + d];
                    dqkv[(b * T + i) * rs + 2 * D + h * hd + d] = (float)gradV[i * hd + d];
                }
        });
        return (o, lse, dqkv);
    }

    /// <summary>Reference output row (hd values) and logsumexp of query i of (b, h); keys filtered by keyAllowed.</summary>
    internal static (double[] O, double Lse) ReferenceRow(float[] qkv, int T, int H, int hd, int b, int h, int i, Func<int, bool> keyAllowed)
    {
        int rs = 3 * H * hd, D = H * hd;
        double scale = 1 / Math.Sqrt(hd), mx = double.NegativeInfinity;
        var sc = new double[T];
        for (int j = 0; j < T; j++)
        {
            if (!keyAllowed(j)) { sc[j] = double.NegativeInfinity; continue; }
            double dot = 0;
            for (int d = 0; d < hd; d++) dot += (double)qkv[(b * T + i) * rs + h * hd + d] * qkv[(b * T + j) * rs + D + h * hd + d];
            sc[j] = dot * scale; mx = Math.Max(mx, sc[j]);
        }
        double sum = 0; var o = new double[hd];
        for (int j = 0; j < T; j++)
        {
            if (double.IsNegativeInfinity(sc[j])) continue;
            double p = Math.Exp(sc[j] - mx); sum += p;
            for (int d = 0; d < hd; d++) o[d] += p * qkv[(b * T + j) * rs + 2 * D + h * hd + d];
        }
        for (int d = 0; d < hd; d++) o[d] /= sum;
        return (o, mx + Math.Log(sum));
    }

    [Theory]
    [InlineData(MaskKind.Bd3, 1024, 4)] [InlineData(MaskKind.Bd3, 1024, 16)] [InlineData(MaskKind.Bd3, 4096, 4)] [InlineData(MaskKind.Bd3, 4096, 16)]
    [InlineData(MaskKind.Causal, 4096, 1)] [InlineData(MaskKind.BlockCausal, 4096, 16)]
    public void AttentionLongSequencesOnSampledRows(MaskKind mask, int l, int blockSize)
    {
        var g = Gpu();
        int B = 1, H = 2, hd = 64, T = mask == MaskKind.Bd3 ? 2 * l : l;
        var shape = new AttentionShape(B, H, hd, T, mask, blockSize);
        var r = new Random(l + blockSize);
        var qkv = Rand(r, B * T * 3 * H * hd, 2f);
        foreach (var bf16 in new[] { false, true })
        {
            g.Bf16Attention = bf16;
            try
            {
                var o = Poison(g, B * T * H * hd); var lse = Poison(g, B * H * T);
                g.AttentionForward(shape, Up(g, qkv), o, lse);
                var got = Down(g, o); var gotLse = Down(g, lse);
                var rows = Enumerable.Range(0, 48).Select(_ => r.Next(T)).Append(0).Append(T - 1).Append(T / 2).Append(T / 2 - 1);
                var exp = new List<float>(); var act = new List<float>();
                foreach (var i in rows)
                    for (int h = 0; h < H; h++)
                    {
                        var (ro, rl) = ReferenceRow(qkv, T, H, hd, 0, h, i, j => Bd3Mask.Allowed(mask, T, blockSize, i, j));
                        for (int d = 0; d < hd; d++) { exp.Add((float)ro[d]); act.Add(got[i * H * hd + h * hd + d]); }
                        exp.Add((float)rl); act.Add(gotLse[h * T + i]);
                    }
                Close($"long attention bf16={bf16}", exp.ToArray(), act.ToArray(), bf16 ? 2e-2 : Tol);
            }
            finally { g.Bf16Attention = false; }
        }
    }

    /// <summary>One tiny case of each attention path (quick smoke run, e.g. on the fake driver of tests/cuda-emu/fake).</summary>
    [Fact]
    public void AttentionSmoke()
    {
        Attention(MaskKind.Bd3, 20, 4, 32);
        DecodeMatchesTrainingRows(4, 36);
        DecodeMatchesTrainingRows(8, 1000); // split-KV + combine
        var g = Gpu();
        if (g.ComputeCapability.Major >= 8) AttentionBf16WithinTwoPercent(MaskKind.Bd3, 36, 4, 32);
    }

    public static TheoryData<MaskKind, int, int, int> AttentionCases()
    {
        var data = new TheoryData<MaskKind, int, int, int>();
        // (mask, L, L', headDim): L' in {1,2,4,8,16,L}; L not a multiple of the 32-wide tiles where the mask allows
        foreach (var lp in new[] { 1, 2, 4, 8, 16 })
        {
            data.Add(MaskKind.Bd3, 48, lp, 64);
            data.Add(MaskKind.BlockCausal, 80, lp, 32);
        }
        data.Add(MaskKind.Bd3, 40, 40, 64);
        data.Add(MaskKind.Bd3, 96, 4, 128);
        data.Add(MaskKind.Bd3, 63, 7, 48);
        data.Add(MaskKind.BlockCausal, 45, 45, 64);
        data.Add(MaskKind.Causal, 77, 1, 64);
        data.Add(MaskKind.Causal, 5, 1, 16);
        data.Add(MaskKind.Full, 70, 1, 64);
        data.Add(MaskKind.Full, 33, 1, 100);
        return data;
    }

    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void Attention(MaskKind mask, int l, int blockSize, int hd)
    {
        var g = Gpu();
        int B = 2, H = 3, T = mask == MaskKind.Bd3 ? 2 * l : l;
        var shape = new AttentionShape(B, H, hd, T, mask, blockSize);
        var r = new Random(l * 100 + blockSize + hd);
        var qkv = Rand(r, B * T * 3 * H * hd, 2f); var dOut = Rand(r, B * T * H * hd);
        var (eo, eLse, edq) = ReferenceAttention(shape, qkv, dOut);
        var qv = Up(g, qkv); var o = Poison(g, eo.Length); var lse = Poison(g, eLse.Length);
        g.AttentionForward(shape, qv, o, lse);
        Close("attention out", eo, Down(g, o));
        Close("attention lse", eLse, Down(g, lse));
        var dq = Poison(g, qkv.Length);
        g.AttentionBackward(shape, qv, o, lse, Up(g, dOut), dq);
        Close("attention dQkv", edq, Down(g, dq));
    }

    [Theory]
    [InlineData(MaskKind.Bd3, 132, 4, 64)] [InlineData(MaskKind.Bd3, 64, 16, 128)] [InlineData(MaskKind.Bd3, 50, 1, 32)]
    [InlineData(MaskKind.Causal, 200, 1, 64)] [InlineData(MaskKind.Full, 77, 1, 128)] [InlineData(MaskKind.BlockCausal, 96, 32, 64)]
    public void AttentionBf16WithinTwoPercent(MaskKind mask, int l, int blockSize, int hd)
    {
        var g = Gpu();
        if (g.ComputeCapability.Major < 8) Assert.Skip($"bf16 tensor-core attention needs sm_80+, device is sm_{g.ComputeCapability.Major}{g.ComputeCapability.Minor}");
        int B = 2, H = 2, T = mask == MaskKind.Bd3 ? 2 * l : l;
        var shape = new AttentionShape(B, H, hd, T, mask, blockSize);
        var r = new Random(l + hd);
        var qkv = Rand(r, B * T * 3 * H * hd, 1f);
        var dOut = Rand(r, B * T * H * hd);
        var (eo, eLse, edq) = ReferenceAttention(shape, qkv, dOut);
        g.Bf16Attention = true;
        try
        {
            var qv = Up(g, qkv); var o = Poison(g, eo.Length); var lse = Poison(g, eLse.Length);
            g.AttentionForward(shape, qv, o, lse);
            Close("bf16 attention out", eo, Down(g, o), 2e-2);
            Close("bf16 attention lse", eLse, Down(g, lse), 2e-2);
            var dq = Poison(g, qkv.Length);
            g.AttentionBackward(shape, qv, o, lse, Up(g, dOut), dq);
            Close("bf16 attention dQkv", edq, Down(g, dq), 2e-2);
        }
        finally { g.Bf16Attention = false; }
    }

    [Theory]
    [InlineData(1, 0)] [InlineData(4, 0)] [InlineData(4, 36)] [InlineData(16, 48)] [InlineData(8, 1000)] [InlineData(2, 4094)] [InlineData(64, 64)]
    public void DecodeMatchesTrainingRows(int blockLen, int cacheLen)
    {
        // Block-causal attention over (cache ⊕ block) gives, for the last block's rows, exactly block-decode attention.
        var g = Gpu();
        int B = 2, H = 2, hd = 64, T = cacheLen + blockLen, cap = cacheLen + 3, D = H * hd, rs = 3 * D;
        var r = new Random(blockLen * 7 + cacheLen);
        var qkv = Rand(r, B * T * rs, 2f);
        var shape = new AttentionShape(B, H, hd, T, MaskKind.BlockCausal, blockLen);
        var o = Poison(g, B * T * D); var lse = Poison(g, B * H * T);
        if (cacheLen % blockLen == 0) g.AttentionForward(shape, Up(g, qkv), o, lse);
        var blockQkv = new float[B * blockLen * rs]; var kc = new float[B * cap * D]; var vc = new float[B * cap * D];
        for (int b = 0; b < B; b++)
        {
            Array.Copy(qkv, (b * T + cacheLen) * rs, blockQkv, b * blockLen * rs, blockLen * rs);
            for (int j = 0; j < cacheLen; j++)
            {
                Array.Copy(qkv, (b * T + j) * rs + D, kc, (b * cap + j) * D, D);
                Array.Copy(qkv, (b * T + j) * rs + 2 * D, vc, (b * cap + j) * D, D);
            }
        }
        var dout = Poison(g, B * blockLen * D);
        g.DecodeAttention(new DecodeShape(B, H, hd, blockLen, cacheLen, cap), Up(g, blockQkv), Up(g, kc), Up(g, vc), dout);
        var got = Down(g, dout);
        // reference: each block query over every key of cache ⊕ block
        var expected = new float[B * blockLen * D];
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < blockLen; i++)
                {
                    var (ro, _) = ReferenceRow(qkv, T, H, hd, b, h, cacheLen + i, _ => true);
                    for (int d = 0; d < hd; d++) expected[(b * blockLen + i) * D + h * hd + d] = (float)ro[d];
                }
        Close("decode vs reference", expected, got);
        if (cacheLen % blockLen == 0)
        {
            var train = Down(g, o); var rows = new float[expected.Length];
            for (int b = 0; b < B; b++) Array.Copy(train, (b * T + cacheLen) * D, rows, b * blockLen * D, blockLen * D);
            Close("decode vs training rows", rows, got);
        }
    }
}

/// <summary>A training step and sampled blocks of the engine on CUDA (fp32 mode) equal the CPU backend; skip without a GPU.</summary>
public class CudaEngineTests
{
    internal static CudaBackend Gpu()
    {
        if (CudaBackend.Unavailable() is { } why)
        {
            if (Environment.GetEnvironmentVariable("FASTBLOCKDIFF_REQUIRE_CUDA") == "1") Assert.Fail($"no CUDA device (FASTBLOCKDIFF_REQUIRE_CUDA=1): {why}");
            Assert.Skip($"no CUDA device: {why}");
        }
        return new CudaBackend();
    }

    [Fact]
    public void TrainingStepsEqualCpu() => EngineParity.TrainingStepsEqualCpu(Gpu());

    [Theory]
    [InlineData(FastBlockDiff.Engine.Sampling.SamplerKind.Ddpm)]
    [InlineData(FastBlockDiff.Engine.Sampling.SamplerKind.FirstHitting)]
    public void SampledBlocksEqualCpu(FastBlockDiff.Engine.Sampling.SamplerKind kind) => EngineParity.SampledBlocksEqualCpu(Gpu(), kind);
}

