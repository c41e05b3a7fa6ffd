using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// Every differentiable CPU op against a float64 reference written here, independently of the kernels:
/// the forward must match the reference (relative 1e-5), and the op's analytic backward (fp32) must match
/// central finite differences of the scalar loss Σ w⊙out of the float64 reference (relative 1e-3 on the vector).
/// Inputs are generated as doubles rounded to float, so the reference and the CPU op see the same point.
/// Attention ops are covered in AttentionTests.
/// </summary>
public class OpGradientTests
{
    const double ForwardTol = 1e-5, GradTol = 1e-3;
    readonly CpuBackend _be = new();

    // ---------------------------------------------------------------- helpers

    static double[] Rand(Random rnd, int n, double lo = -1, double hi = 1)
    {
        var x = new double[n];
        for (int i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * rnd.NextDouble());
        return x;
    }

    FloatView Up(double[] x)
    {
        var v = _be.AllocFloat(x.Length);
        _be.Upload(v, x.Select(d => (float)d).ToArray());
        return v;
    }

    IntView Up(int[] x)
    {
        var v = _be.AllocInt(x.Length);
        _be.Upload(v, x);
        return v;
    }

    static double[] Down(FloatView v) => CpuBackend.Span(v).ToArray().Select(f => (double)f).ToArray();

    static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    static double[] Sub(double[] a, double[] b) => a.Select((v, i) => v - b[i]).ToArray();

    /// <summary>Central differences of <paramref name="loss"/> w.r.t. every element of x, perturbed in place and restored.</summary>
    static double[] Fd(double[] x, Func<double> loss, double h = 1e-5)
    {
        var g = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double x0 = x[i];
            x[i] = x0 + h; double lp = loss();
            x[i] = x0 - h; double lm = loss();
            x[i] = x0;
            g[i] = (lp - lm) / (2 * h);
        }
        return g;
    }

    static double RelErr(double[] actual, double[] expected)
    {
        Assert.Equal(expected.Length, actual.Length);
        double num = 0, den = 0;
        for (int i = 0; i < actual.Length; i++) { num += (actual[i] - expected[i]) * (actual[i] - expected[i]); den += expected[i] * expected[i]; }
        return Math.Sqrt(num) / Math.Max(Math.Sqrt(den), 1e-30);
    }

    static void AssertRel(double[] actual, double[] expected, double tol, string what)
    {
        double e = RelErr(actual, expected);
        Assert.True(e < tol, $"{what}: relative error {e:g3} > {tol:g1}");
    }

    // ---------------------------------------------------------------- LayerNorm

    static double[] LayerNormRef(double[] x, double[] w, double[]? b, int rows, int dim, double eps, double[]? mean = null, double[]? rstd = null)
    {
        var y = new double[rows * dim];
        for (int r = 0; r < rows; r++)
        {
            double mu = 0, var = 0;
            for (int c = 0; c < dim; c++) mu += x[r * dim + c];
            mu /= dim;
            for (int c = 0; c < dim; c++) var += (x[r * dim + c] - mu) * (x[r * dim + c] - mu);
            var /= dim;
            double rs = 1 / Math.Sqrt(var + eps);
            if (mean != null) mean[r] = mu;
            if (rstd != null) rstd[r] = rs;
            for (int c = 0; c < dim; c++) y[r * dim + c] = (x[r * dim + c] - mu) * rs * w[c] + (b?[c] ?? 0);
        }
        return y;
    }

    [Theory]
    [InlineData(3, 7, false)]
    [InlineData(3, 10, true)]
    [InlineData(1, 1, true)]    // dim 1: y = bias, no gradient to x or weight
    [InlineData(37, 10, true)]  // several workers: partial dWeight/dBias sums merged
    [InlineData(37, 7, false)]
    public void LayerNorm(int rows, int dim, bool withBias)
    {
        var rnd = new Random(rows * 100 + dim);
        const float eps = 1e-5f;
        var x = Rand(rnd, rows * dim, -2, 2);
        for (int r = 0; r < rows; r++) for (int c = 0; c < dim; c++) x[r * dim + c] = (float)(x[r * dim + c] + r * 0.7 - 3); // row offsets
        var w = Rand(rnd, dim, 0.5, 1.5); var b = withBias ? Rand(rnd, dim) : null;
        var lw = Rand(rnd, rows * dim);

        var refMean = new double[rows]; var refRstd = new double[rows];
        var yRef = LayerNormRef(x, w, b, rows, dim, eps, refMean, refRstd);
        FloatView xv = Up(x), wv = Up(w), y = _be.AllocFloat(rows * dim), mean = _be.AllocFloat(rows), rstd = _be.AllocFloat(rows);
        FloatView? bv = b is null ? null : Up(b);
        _be.LayerNormForward(xv, wv, bv, y, mean, rstd, rows, dim, eps);
        AssertRel(Down(y), yRef, ForwardTol, "y");
        AssertRel(Down(mean), refMean, ForwardTol, "mean");
        AssertRel(Down(rstd), refRstd, ForwardTol, "rstd");

        double Loss() => Dot(lw, LayerNormRef(x, w, b, rows, dim, eps));
        var gx = Fd(x, Loss); var gw = Fd(w, Loss); var gb = b is null ? null : Fd(b, Loss);

        // the backward accumulates: start from known values and compare the increments
        var dx0 = Rand(rnd, rows * dim); var dw0 = Rand(rnd, dim); var db0 = Rand(rnd, dim);
        FloatView dx = Up(dx0), dw = Up(dw0), db = Up(db0);
        _be.LayerNormBackward(Up(lw), xv, wv, mean, rstd, dx, dw, withBias ? db : null, rows, dim);
        if (dim > 1)
        {
            AssertRel(Sub(Down(dx), dx0), gx, GradTol, "dx");
            AssertRel(Sub(Down(dw), dw0), gw, GradTol, "dWeight");
        }
        else
        {
            Assert.All(Sub(Down(dx), dx0), v => Assert.Equal(0, v, 6));
            Assert.All(Sub(Down(dw), dw0), v => Assert.Equal(0, v, 6));
        }
        if (gb != null) AssertRel(Sub(Down(db), db0), gb, GradTol, "dBias");
        else Assert.Equal(db0, Down(db)); // no bias: dBias untouched
    }

    // ---------------------------------------------------------------- GELU, SiLU

    static double GeluRef(double v) => 0.5 * v * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));
    static double SiluRef(double v) => v / (1 + Math.Exp(-v));

    [Theory]
    [InlineData("gelu", 29)]
    [InlineData("silu", 29)]
    [InlineData("gelu", 9001)]  // parallel path (4096 per worker)
    [InlineData("silu", 9001)]
    public void Activation(string op, int n)
    {
        var rnd = new Random(n);
        Func<double, double> f = op == "gelu" ? GeluRef : SiluRef;
        var x = Rand(rnd, n, -5, 5); x[0] = 0; if (n > 2) { x[1] = -12; x[2] = 12; }
        var lw = Rand(rnd, n);
        FloatView xv = Up(x), y = _be.AllocFloat(n);
        if (op == "gelu") _be.GeluForward(xv, y); else _be.SiluForward(xv, y);
        AssertRel(Down(y), x.Select(f).ToArray(), ForwardTol, "forward");

        // Σ w⊙f(x) is separable, so perturbing x[i] alone changes only term i: the central difference of that term
        // is the central difference of the whole loss, without cancelling against the other n-1 terms.
        const double h = 1e-5;
        var g = x.Select((v, i) => lw[i] * (f(v + h) - f(v - h)) / (2 * h)).ToArray();
        if (n < 100) AssertRel(g, Fd(x, () => Dot(lw, x.Select(f).ToArray())), 1e-6, "separable FD = full FD");

        var dy = Up(lw); var dx = Up(Rand(rnd, n)); // dx is overwritten
        if (op == "gelu") _be.GeluBackward(xv, dy, dx); else _be.SiluBackward(xv, dy, dx);
        AssertRel(Down(dx), g, GradTol, "dx");
        // dx may alias dy
        if (op == "gelu") _be.GeluBackward(xv, dy, dy); else _be.SiluBackward(xv, dy, dy);
        Assert.Equal(Down(dx), Down(dy));
    }

    // ---------------------------------------------------------------- Rotary

    static (double[] Cos, double[] Sin) RotaryTables(int maxPos, int headDim)
    {
        int half = headDim / 2;
        var cos = new double[maxPos * half]; var sin = new double[maxPos * half];
        for (int p = 0; p < maxPos; p++)
            for (int i = 0; i < half; i++)
            {
                double theta = p * Math.Pow(10000, -2.0 * i / headDim);
                cos[p * half + i] = (float)Math.Cos(theta); sin[p * half + i] = (float)Math.Sin(theta);
            }
        return (cos, sin);
    }

    /// <summary>Half-split rotary of the [heads, headDim] prefix of every row; the rest of the row is copied.</summary>
    static double[] RotaryRef(double[] x, int rows, int rowStride, int heads, int headDim, int[] pos, double[] cos, double[] sin)
    {
        var y = (double[])x.Clone();
        int half = headDim / 2;
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < half; i++)
                {
                    int a = r * rowStride + h * headDim + i, b = a + half;
                    double c = cos[pos[r] * half + i], s = sin[pos[r] * half + i];
                    y[a] = x[a] * c - x[b] * s;
                    y[b] = x[b] * c + x[a] * s;
                }
        return y;
    }

    [Theory]
    [InlineData(3, 2, 10, 3)]   // rows, heads, headDim, extra columns per row (the row is a slice of a wider one, e.g. q in qkv)
    [InlineData(3, 1, 14, 0)]
    [InlineData(17, 3, 6, 5)]   // several workers
    public void Rotary(int rows, int heads, int headDim, int extra)
    {
        var rnd = new Random(rows * 31 + headDim);
        int stride = heads * headDim + extra, maxPos = 40;
        var pos = Enumerable.Range(0, rows).Select(_ => rnd.Next(maxPos)).ToArray(); pos[0] = 0; // position 0: identity
        var (cos, sin) = RotaryTables(maxPos, headDim);
        var x = Rand(rnd, rows * stride, -2, 2);
        var lw = Rand(rnd, rows * stride);
        FloatView cv = Up(cos), sv = Up(sin); var pv = Up(pos);

        var xv = Up(x);
        _be.Rotary(xv, rows, stride, heads, headDim, pv, cv, sv, inverse: false);
        var yRef = RotaryRef(x, rows, stride, heads, headDim, pos, cos, sin);
        AssertRel(Down(xv), yRef, ForwardTol, "forward");
        for (int r = 0; r < rows; r++) for (int c = heads * headDim; c < stride; c++)
            Assert.Equal(x[r * stride + c], Down(xv)[r * stride + c]); // columns past the heads untouched

        // inverse ∘ forward = identity
        _be.Rotary(xv, rows, stride, heads, headDim, pv, cv, sv, inverse: true);
        AssertRel(Down(xv), x, 1e-6, "inverse(forward(x))");

        // the inverse is the backward: d/dx Σ w⊙R(x) = Rᵀw
        var gx = Fd(x, () => Dot(lw, RotaryRef(x, rows, stride, heads, headDim, pos, cos, sin)));
        var dy = Up(lw);
        _be.Rotary(dy, rows, stride, heads, headDim, pv, cv, sv, inverse: true);
        AssertRel(Down(dy), gx, GradTol, "dx");
    }

    // ---------------------------------------------------------------- Embedding

    [Fact]
    public void Embedding()
    {
        var rnd = new Random(3);
        int vocab = 6, dim = 7;
        int[] ids = [2, 5, 2, 0, 2, 5, 1, 3, 0]; // repeats; id 4 unused
        int rows = ids.Length;
        var table = Rand(rnd, vocab * dim);
        var lw = Rand(rnd, rows * dim);
        double[] Ref()
        {
            var o = new double[rows * dim];
            for (int r = 0; r < rows; r++) for (int c = 0; c < dim; c++) o[r * dim + c] = table[ids[r] * dim + c];
            return o;
        }
        var idv = Up(ids); var tv = Up(table); var outv = _be.AllocFloat(rows * dim);
        _be.EmbeddingForward(idv, tv, outv, rows, dim);
        Assert.Equal(Ref(), Down(outv));

        var g = Fd(table, () => Dot(lw, Ref()));
        var d0 = Rand(rnd, vocab * dim); var dTable = Up(d0);
        _be.EmbeddingBackward(idv, Up(lw), dTable, rows, dim);
        var inc = Sub(Down(dTable), d0);
        AssertRel(inc, g, GradTol, "dTable");
        for (int c = 0; c < dim; c++) Assert.Equal(0, inc[4 * dim + c], 6); // unused row only keeps its old value
    }

    // ---------------------------------------------------------------- Residual gated (+ dropout)

    [Theory]
    [InlineData(3, 10, 0f)]
    [InlineData(3, 7, 0.3f)]
    [InlineData(37, 10, 0.3f)]  // several workers: partial dGate sums merged
    [InlineData(37, 7, 0f)]
    public void ResidualGated(int rows, int dim, float p)
    {
        var rnd = new Random(rows * 7 + dim);
        const ulong seed = 0xC0FFEE;
        var x = Rand(rnd, rows * dim); var y = Rand(rnd, rows * dim); var gate = Rand(rnd, dim);
        var lw = Rand(rnd, rows * dim);
        // the mask is defined by Dropout.Keep(seed, element index, p); the reference applies it independently of the op
        double[] Ref()
        {
            var o = (double[])x.Clone();
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < dim; c++)
                {
                    int i = r * dim + c;
                    if (Dropout.Keep(seed, (ulong)i, p)) o[i] += gate[c] * y[i] / (1.0 - p);
                }
            return o;
        }
        var xv = Up(x); FloatView yv = Up(y), gv = Up(gate);
        _be.ResidualGatedForward(xv, yv, gv, rows, dim, p, seed);
        AssertRel(Down(xv), Ref(), ForwardTol, "forward");

        double Loss() => Dot(lw, Ref());
        var gy = Fd(y, Loss); var gg = Fd(gate, Loss);
        var dy = Up(Rand(rnd, rows * dim)); // overwritten
        var dg0 = Rand(rnd, dim); var dGate = Up(dg0); // accumulated
        _be.ResidualGatedBackward(Up(lw), yv, gv, dy, dGate, rows, dim, p, seed);
        AssertRel(Down(dy), gy, GradTol, "dy");
        AssertRel(Sub(Down(dGate), dg0), gg, GradTol, "dGate");
    }

    [Fact]
    public void DropoutKeepsAboutOneMinusPAndForwardBackwardMasksAgree()
    {
        int rows = 64, dim = 100, n = rows * dim;
        const float p = 0.3f;
        const ulong seed = 1234;
        var x = _be.AllocFloat(n); _be.Fill(x, 0);
        var ones = _be.AllocFloat(n); _be.Fill(ones, 1);
        var gate = _be.AllocFloat(dim); _be.Fill(gate, 1);
        _be.ResidualGatedForward(x, ones, gate, rows, dim, p, seed);
        var fwd = Down(x);
        float scale = 1f / (1f - p);
        Assert.All(fwd, v => Assert.True(v == 0 || Math.Abs(v - scale) < 1e-6, $"kept value {v} is not 1/(1-p)"));
        double kept = fwd.Count(v => v != 0) / (double)n;
        Assert.InRange(kept, 1 - p - 0.03, 1 - p + 0.03); // σ ≈ 0.006

        var dy = _be.AllocFloat(n); var dGate = _be.AllocFloat(dim); _be.Fill(dGate, 0);
        _be.ResidualGatedBackward(ones, ones, gate, dy, dGate, rows, dim, p, seed);
        var bwd = Down(dy);
        for (int i = 0; i < n; i++) Assert.True((fwd[i] != 0) == (bwd[i] != 0), $"element {i}: forward and backward masks differ");
        var dg = Down(dGate);
        for (int c = 0; c < dim; c++)
        {
            double colKept = 0; for (int r = 0; r < rows; r++) colKept += fwd[r * dim + c];
            Assert.Equal(colKept, dg[c], 3);
        }

        // another seed draws another mask
        _be.Fill(x, 0);
        _be.ResidualGatedForward(x, ones, gate, rows, dim, p, seed + 1);
        Assert.NotEqual(fwd, Down(x));
    }

    // ---------------------------------------------------------------- SUBS cross-entropy

    [Theory]
    [InlineData(4, 10, 3)]
    [InlineData(9, 7, 6)]   // several workers; mask is the last column
    [InlineData(3, 10, -1)] // no mask column
    public void SubsCrossEntropy(int rows, int vocab, int maskId)
    {
        var rnd = new Random(rows * 13 + vocab);
        var logits = Rand(rnd, rows * vocab, -2, 2);
        if (maskId >= 0) for (int r = 0; r < rows; r++) logits[r * vocab + maskId] = 5; // would dominate if not excluded
        for (int c = 0; c < vocab; c++) logits[vocab + c] = (float)(logits[vocab + c] + 30); // a shifted row
        var targets = Enumerable.Range(0, rows).Select(_ => { int t; do t = rnd.Next(vocab); while (t == maskId); return t; }).ToArray();
        var weights = Rand(rnd, rows, 0.2, 2); weights[rows - 1] = 0; // last row carried over
        const float gradScale = 0.25f;

        double[] Ref()
        {
            var loss = new double[rows];
            for (int r = 0; r < rows; r++)
            {
                if (weights[r] == 0) continue;
                double max = double.NegativeInfinity;
                for (int c = 0; c < vocab; c++) if (c != maskId) max = Math.Max(max, logits[r * vocab + c]);
                double s = 0;
                for (int c = 0; c < vocab; c++) if (c != maskId) s += Math.Exp(logits[r * vocab + c] - max);
                loss[r] = weights[r] * (max + Math.Log(s) - logits[r * vocab + targets[r]]);
            }
            return loss;
        }

        var lv = Up(logits); var tv = Up(targets); var wv = Up(weights); var loss = Up(Rand(rnd, rows));
        _be.SubsCrossEntropy(lv, tv, wv, loss, rows, vocab, maskId, gradScale, writeGrad: false);
        var lossRef = Ref();
        AssertRel(Down(loss), lossRef, ForwardTol, "loss");
        Assert.Equal(0, Down(loss)[rows - 1]);
        Assert.Equal(logits, Down(lv)); // without writeGrad the logits (mask column included) are left as they were

        // the gradient of gradScale·Σ_r loss[r]
        var g = Fd(logits, () => Ref().Sum()).Select(v => v * gradScale).ToArray();
        _be.SubsCrossEntropy(lv, tv, wv, loss, rows, vocab, maskId, gradScale, writeGrad: true);
        AssertRel(Down(loss), lossRef, ForwardTol, "loss with writeGrad");
        var grad = Down(lv);
        AssertRel(grad, g, GradTol, "dLogits");
        for (int c = 0; c < vocab; c++) Assert.Equal(0, grad[(rows - 1) * vocab + c]); // weight-0 row
        if (maskId >= 0) for (int r = 0; r < rows; r++) Assert.Equal(0, grad[r * vocab + maskId]);
        for (int r = 0; r < rows; r++) // each row's gradient sums to 0 over the non-mask columns
            Assert.Equal(0, grad.Skip(r * vocab).Take(vocab).Sum(), 5);
    }

    [Fact]
    public void SubsCrossEntropyOverTheGpt2VocabularyMatchesFloat64()
    {
        const int rows = 5, vocab = 50258, maskId = 50257;
        const float gradScale = 0.5f;
        var rnd = new Random(23);
        var logits = Rand(rnd, rows * vocab, -4, 4);
        for (int r = 0; r < rows; r++) logits[r * vocab + maskId] = 40;   // would dominate if not excluded
        for (int c = 0; c < vocab; c++) logits[2 * vocab + c] += 60;      // a shifted row: exp without the max would overflow
        var targets = new[] { 0, 17, 50256, 999, 31337 };
        double[] weights = [1.5, 0.25, 2, 0, 1];
        var lv = Up(logits); var loss = _be.AllocFloat(rows);
        _be.SubsCrossEntropy(lv, Up(targets), Up(weights), loss, rows, vocab, maskId, gradScale, writeGrad: true);
        var got = Down(lv);
        var lossRef = new double[rows];
        var gradRef = new double[rows * vocab];
        for (int r = 0; r < rows; r++)
        {
            if (weights[r] == 0) continue;
            var row = logits.AsSpan(r * vocab, vocab).ToArray().Select(x => (double)(float)x).ToArray();
            double max = double.NegativeInfinity, s = 0;
            for (int c = 0; c < vocab; c++) if (c != maskId) max = Math.Max(max, row[c]);
            for (int c = 0; c < vocab; c++) if (c != maskId) s += Math.Exp(row[c] - max);
            lossRef[r] = weights[r] * (max + Math.Log(s) - row[targets[r]]);
            for (int c = 0; c < vocab; c++)
                gradRef[r * vocab + c] = c == maskId ? 0 : gradScale * weights[r] * (Math.Exp(row[c] - max) / s - (c == targets[r] ? 1 : 0));
        }
        AssertRel(Down(loss), lossRef, ForwardTol, "loss");
        for (int r = 0; r < rows; r++)
            AssertRel(got.AsSpan(r * vocab, vocab).ToArray(), gradRef.AsSpan(r * vocab, vocab).ToArray(), ForwardTol, $"dLogits row {r}");
        for (int r = 0; r < rows; r++) Assert.Equal(0, got[r * vocab + maskId]);
        Assert.All(got.AsSpan(3 * vocab, vocab).ToArray(), g => Assert.Equal(0, g)); // weight-0 row
    }

    // ---------------------------------------------------------------- GEMM (the transposed GEMMs of a backward)

    static double[] GemmRef(bool ta, bool tb, int m, int n, int k, double alpha, double[] a, double[] b, double beta, double[] c, double[]? bias)
    {
        int lda = ta ? m : k, ldb = tb ? k : n;
        var o = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++) s += a[ta ? p * lda + i : i * lda + p] * b[tb ? j * ldb + p : p * ldb + j];
                o[i * n + j] = alpha * s + beta * c[i * n + j] + (bias?[j] ?? 0);
            }
        return o;
    }

    /// <summary>
    /// C = α·op(A)·op(B) + β·C + bias. dop(A) = α·dC·op(B)ᵀ and dop(B) = α·op(A)ᵀ·dC, written back in A's and B's
    /// storage layouts as GEMMs with transposes (accumulating, β = 1), and dBias = ColumnSum(dC). The case
    /// (transA, transB) = (false, true) is exactly a linear layer y = x·Wᵀ + b and its backward as the engine issues it:
    /// dW += Gemm(T, N, dy, x) and dx = Gemm(N, N, dy, W).
    /// </summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void GemmGradients(bool ta, bool tb)
    {
        var rnd = new Random((ta ? 2 : 0) + (tb ? 1 : 0));
        int m = 3, n = 7, k = 10, lda = ta ? m : k, ldb = tb ? k : n;
        const float alpha = 0.75f, beta = 0.5f;
        var a = Rand(rnd, m * k); var b = Rand(rnd, k * n); var c0 = Rand(rnd, m * n); var bias = Rand(rnd, n);
        var lw = Rand(rnd, m * n);
        FloatView av = Up(a), bv = Up(b), cv = Up(c0), biasv = Up(bias);
        _be.Gemm(ta, tb, m, n, k, alpha, av, lda, bv, ldb, beta, cv, n, biasv);
        AssertRel(Down(cv), GemmRef(ta, tb, m, n, k, alpha, a, b, beta, c0, bias), ForwardTol, "forward");

        double Loss() => Dot(lw, GemmRef(ta, tb, m, n, k, alpha, a, b, beta, c0, bias));
        var ga = Fd(a, Loss); var gb = Fd(b, Loss); var gbias = Fd(bias, Loss);
        var dC = Up(lw);

        var da0 = Rand(rnd, m * k); var da = Up(da0);
        if (!ta) _be.Gemm(false, !tb, m, k, n, alpha, dC, n, bv, ldb, 1f, da, k);   // dA[m,k] = α·dC·op(B)ᵀ
        else _be.Gemm(tb, true, k, m, n, alpha, bv, ldb, dC, n, 1f, da, m);         // dA[k,m] = α·op(B)·dCᵀ
        AssertRel(Sub(Down(da), da0), ga, GradTol, "dA");

        var db0 = Rand(rnd, k * n); var db = Up(db0);
        if (!tb) _be.Gemm(!ta, false, k, n, m, alpha, av, lda, dC, n, 1f, db, n);   // dB[k,n] = α·op(A)ᵀ·dC
        else _be.Gemm(true, ta, n, k, m, alpha, dC, n, av, lda, 1f, db, k);         // dB[n,k] = α·dCᵀ·op(A)
        AssertRel(Sub(Down(db), db0), gb, GradTol, "dB");

        var dbias0 = Rand(rnd, n); var dbias = Up(dbias0);
        _be.ColumnSum(dbias, dC, m, n, accumulate: true);
        AssertRel(Sub(Down(dbias), dbias0), gbias, GradTol, "dBias");
    }

    // ---------------------------------------------------------------- ColumnSum, Mul

    [Fact]
    public void ColumnSum()
    {
        var rnd = new Random(11);
        int rows = 3, cols = 7;
        var src = Rand(rnd, rows * cols); var d0 = Rand(rnd, cols);
        var sums = Enumerable.Range(0, cols).Select(c => Enumerable.Range(0, rows).Sum(r => src[r * cols + c])).ToArray();
        var dst = Up(d0);
        _be.ColumnSum(dst, Up(src), rows, cols, accumulate: false);
        AssertRel(Down(dst), sums, ForwardTol, "overwrite");
        dst = Up(d0);
        _be.ColumnSum(dst, Up(src), rows, cols, accumulate: true);
        AssertRel(Down(dst), d0.Select((v, c) => v + sums[c]).ToArray(), ForwardTol, "accumulate");

        // ColumnSum is the backward of a broadcast bias: out[r,c] = x[r,c] + b[c]
        var bias = Rand(rnd, cols); var lw = Rand(rnd, rows * cols);
        var g = Fd(bias, () => Dot(lw, src.Select((v, i) => v + bias[i % cols]).ToArray()));
        var db = _be.AllocFloat(cols);
        _be.ColumnSum(db, Up(lw), rows, cols, accumulate: false);
        AssertRel(Down(db), g, GradTol, "dBias");
    }

    [Fact]
    public void Mul()
    {
        var rnd = new Random(12);
        int n = 23;
        var a = Rand(rnd, n); var b = Rand(rnd, n); var d0 = Rand(rnd, n); var lw = Rand(rnd, n);
        FloatView av = Up(a), bv = Up(b);
        var dst = Up(d0);
        _be.Mul(dst, av, bv, accumulate: false);
        AssertRel(Down(dst), a.Select((v, i) => v * b[i]).ToArray(), ForwardTol, "overwrite");
        _be.Mul(dst, av, bv, accumulate: true);
        AssertRel(Down(dst), a.Select((v, i) => 2 * v * b[i]).ToArray(), ForwardTol, "accumulate");

        // Mul is its own backward: da (+)= dout⊙b, db (+)= dout⊙a
        double Loss() => Dot(lw, a.Select((v, i) => v * b[i]).ToArray());
        var ga = Fd(a, Loss); var gb = Fd(b, Loss);
        var dout = Up(lw);
        var da0 = Rand(rnd, n); var da = Up(da0);
        _be.Mul(da, dout, bv, accumulate: true);
        AssertRel(Sub(Down(da), da0), ga, GradTol, "da");
        var db = Up(Rand(rnd, n));
        _be.Mul(db, dout, av, accumulate: false);
        AssertRel(Down(db), gb, GradTol, "db");
    }

    // ---------------------------------------------------------------- AdamW, EMA

    [Theory]
    [InlineData(37)]
    [InlineData(40000)] // several workers
    public void AdamWMatchesPyTorchOverSeveralSteps(int n)
    {
        var rnd = new Random(n);
        const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f, gradScale = 0.5f;
        var p = Rand(rnd, n); var m = new double[n]; var v = new double[n];
        FloatView pv = Up(p), mv = _be.AllocFloat(n), vv = _be.AllocFloat(n), gv = _be.AllocFloat(n);
        _be.Fill(mv, 0); _be.Fill(vv, 0);
        for (int t = 1; t <= 6; t++)
        {
            var g = Rand(rnd, n, -2, 2);
            if (t == 4) for (int i = 0; i < n; i += 3) g[i] = 0; // zero gradients: only decay and momentum move them
            _be.Upload(gv, g.Select(d => (float)d).ToArray());
            _be.AdamW(pv, gv, mv, vv, new AdamWStep(lr, b1, b2, eps, wd, t, gradScale));
            // torch.optim.AdamW (amsgrad = False, maximize = False)
            double bc1 = 1 - Math.Pow(b1, t), bc2 = 1 - Math.Pow(b2, t);
            for (int i = 0; i < n; i++)
            {
                double gi = g[i] * gradScale;
                p[i] *= 1 - (double)lr * wd;
                m[i] = b1 * m[i] + (1 - (double)b1) * gi;
                v[i] = b2 * v[i] + (1 - (double)b2) * gi * gi;
                double denom = Math.Sqrt(v[i]) / Math.Sqrt(bc2) + eps;
                p[i] -= lr / bc1 * m[i] / denom;
            }
            AssertRel(Down(mv), m, ForwardTol, $"m after step {t}");
            AssertRel(Down(vv), v, ForwardTol, $"v after step {t}");
            AssertRel(Down(pv), p, ForwardTol, $"param after step {t}");
            Assert.Equal(g, Down(gv)); // the gradient buffer is only read (the scale is applied on the fly)
        }
    }

    [Theory]
    [InlineData(37)]
    [InlineData(40003)] // several workers, a vector tail
    public void AdamWEmaFusedEqualsAdamWThenEma(int n)
    {
        var rnd = new Random(n + 1);
        FloatView[] fused = [Up(Rand(rnd, n)), Up(Rand(rnd, n, -0.1, 0.1)), Up(Rand(rnd, n, 0, 0.01)), Up(Rand(rnd, n))]; // param, m, v, ema
        var split = new FloatView[4];
        for (int i = 0; i < 4; i++) { split[i] = _be.AllocFloat(n); _be.Copy(split[i], fused[i]); }
        var gv = _be.AllocFloat(n);
        string[] names = ["param", "m", "v", "ema"];
        for (int t = 1; t <= 4; t++)
        {
            _be.Upload(gv, Rand(rnd, n, -2, 2).Select(d => (float)d).ToArray());
            var step = new AdamWStep(3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t, t == 2 ? 0.3f : 1f); // step 2 clipped
            float decay = 0.9f + 0.02f * t;
            _be.AdamWEma(fused[0], gv, fused[1], fused[2], fused[3], step, decay);
            _be.AdamW(split[0], gv, split[1], split[2], step);
            _be.Ema(split[3], split[0], decay);
            for (int i = 0; i < 4; i++) Assert.True(Down(fused[i]).SequenceEqual(Down(split[i])), $"{names[i]} after step {t}");
        }
    }

    [Fact]
    public void Ema()
    {
        var rnd = new Random(5);
        int n = 19;
        const float decay = 0.9f;
        var e = Rand(rnd, n); var ev = Up(e);
        for (int t = 0; t < 3; t++)
        {
            var p = Rand(rnd, n);
            _be.Ema(ev, Up(p), decay);
            for (int i = 0; i < n; i++) e[i] = decay * e[i] + (1 - (double)decay) * p[i];
        }
        AssertRel(Down(ev), e, ForwardTol, "ema");
    }

    // ---------------------------------------------------------------- SampleCategorical

    /// <summary>
    /// softmax(logits/T) without the mask column, cut to the reference's nucleus: in descending order (ties by id) the
    /// tokens whose cumulative mass is ≤ topP (the token that crosses topP is left out), the top token always; renormalised.
    /// </summary>
    static double[] NucleusRef(double[] logits, int maskId, double temperature, double topP)
    {
        int v = logits.Length;
        var q = new double[v];
        double max = logits.Where((_, j) => j != maskId).Max(), s = 0;
        for (int j = 0; j < v; j++) if (j != maskId) s += q[j] = Math.Exp((logits[j] - max) / temperature);
        for (int j = 0; j < v; j++) q[j] /= s;
        if (topP < 1)
        {
            var order = Enumerable.Range(0, v).OrderByDescending(j => q[j]).ThenBy(j => j).ToArray();
            double cum = q[order[0]]; int kept = 1;
            while (kept < v && cum + q[order[kept]] <= topP) cum += q[order[kept++]];
            // the test must not sit on the boundary, where float and double could disagree
            Assert.True(kept == v || Math.Abs(cum + q[order[kept]] - topP) > 1e-4, "top-p on a nucleus boundary");
            for (int i = kept; i < v; i++) q[order[i]] = 0;
            for (int j = 0; j < v; j++) q[j] /= cum;
        }
        return q;
    }

    [Theory]
    [InlineData(1.0f, 1.0f)]
    [InlineData(0.7f, 1.0f)]
    [InlineData(2.0f, 1.0f)]
    [InlineData(1.0f, 0.8f)]
    [InlineData(0.7f, 0.9f)]
    [InlineData(1.5f, 0.5f)]
    [InlineData(1.0f, 0.01f)]  // only the most likely token
    public void SampleCategoricalFrequenciesMatchTheNucleusDistribution(float temperature, float topP)
    {
        if (topP < 1 && NucleusRuleTests.CpuKeepsCrossingToken()) Assert.Skip(NucleusRuleTests.CpuPending);
        const int vocab = 11, maskId = 4, rows = 10000;
        double[] logits = [0.3, -1.2, 1.9, 0.8, 6.0, -0.4, 1.1, -2.5, 0.05, 1.6, -0.9]; // the mask logit would dominate
        var expect = NucleusRef(logits, maskId, temperature, topP);

        var lrow = logits.Select(d => (float)d).ToArray();
        var lv = _be.AllocFloat(rows * vocab);
        for (int r = 0; r < rows; r++) _be.Upload(lv.Slice(r * vocab, vocab), lrow);
        // stratified uniforms: each token's count is then rows·p ± 1
        var u = Enumerable.Range(0, rows).Select(i => (float)((i + 0.5) / rows)).ToArray();
        var uv = _be.AllocFloat(rows); _be.Upload(uv, u);
        var tokens = _be.AllocInt(rows); var probs = _be.AllocFloat(rows);
        _be.SampleCategorical(lv, rows, vocab, maskId, temperature, topP, uv, tokens, probs);
        var tk = CpuBackend.Span(tokens).ToArray(); var pr = Down(probs);

        var freq = new double[vocab];
        foreach (var t in tk) freq[t] += 1.0 / rows;
        for (int j = 0; j < vocab; j++)
            Assert.True(Math.Abs(freq[j] - expect[j]) <= 2.0 / rows + 1e-5, $"token {j}: frequency {freq[j]:g5} vs {expect[j]:g5}");
        Assert.Equal(0, freq[maskId]);
        for (int r = 0; r < rows; r++) Assert.Equal(expect[tk[r]], pr[r], 5); // the probability written is the renormalised one
        for (int r = 0; r < rows; r += 997) Assert.Equal(lrow, CpuBackend.Span(lv.Slice(r * vocab, vocab)).ToArray()); // logits only read

        // independent uniforms: frequencies within 5σ
        var rnd = new Random(42);
        _be.Upload(uv, Enumerable.Range(0, rows).Select(_ => rnd.NextSingle()).ToArray());
        _be.SampleCategorical(lv, rows, vocab, maskId, temperature, topP, uv, tokens, probs);
        Array.Clear(freq);
        foreach (var t in CpuBackend.Span(tokens)) freq[t] += 1.0 / rows;
        for (int j = 0; j < vocab; j++)
            Assert.True(Math.Abs(freq[j] - expect[j]) <= 5 * Math.Sqrt(expect[j] * (1 - expect[j]) / rows) + 1e-9,
                $"token {j}: frequency {freq[j]:g5} vs {expect[j]:g5} (random uniforms)");
    }

    [Theory]
    [InlineData(3.0, false, 0.9f)]   // peaked: a few hundred tokens in the nucleus
    [InlineData(0.01, false, 0.9f)]  // nearly flat: most of the vocabulary is, bucketed down to equal float bits
    [InlineData(2.0, true, 0.7f)]    // many exactly equal probabilities: ties by id
    [InlineData(40.0, false, 0.5f)]  // one dominant token: it alone crosses topP and alone is kept
    [InlineData(1.0, false, 0.999f)]
    public void SampleCategoricalNucleusOverTheGpt2VocabularyEqualsAFullSort(double scale, bool ties, float topP)
    {
        const int vocab = 50258, rows = 24, maskId = 50257;
        const float temperature = 0.8f;
        var rnd = new Random(17);
        var logits = new float[rows * vocab];
        for (int i = 0; i < logits.Length; i++)
        {
            double x = scale * Math.Sqrt(-2 * Math.Log(1 - rnd.NextDouble())) * Math.Cos(2 * Math.PI * rnd.NextDouble());
            logits[i] = (float)(ties ? Math.Round(x) : x);
        }
        var u = Enumerable.Range(0, rows).Select(i => i == 0 ? 0f : i == 1 ? 0.99999f : rnd.NextSingle()).ToArray();
        var lv = _be.AllocFloat(logits.Length); _be.Upload(lv, logits);
        var uv = _be.AllocFloat(rows); _be.Upload(uv, u);
        var tokens = _be.AllocInt(rows); var probs = _be.AllocFloat(rows);
        _be.SampleCategorical(lv, rows, vocab, maskId, temperature, topP, uv, tokens, probs);
        for (int r = 0; r < rows; r++)
        {
            // the same float probabilities the op computes
            var q = new float[vocab];
            CpuBackend.SoftMaxWithout(logits.AsSpan(r * vocab, vocab), 1f / temperature, maskId, q);
            Assert.Equal(1.0, q.Sum(x => (double)x), 4);
            var (token, prob) = NucleusReference.DrawBySort(q, topP, u[r]);
            Assert.Equal(token, CpuBackend.Span(tokens)[r]);
            Assert.Equal(prob, CpuBackend.Span(probs)[r], 5);
        }
    }

    [Fact]
    public void SampleCategoricalTemperatureZeroIsArgmaxWithoutTheMask()
    {
        const int vocab = 7, rows = 5, maskId = 2;
        var logits = new float[rows * vocab];
        var rnd = new Random(9);
        for (int i = 0; i < logits.Length; i++) logits[i] = rnd.NextSingle() * 4 - 2;
        for (int r = 0; r < rows; r++) logits[r * vocab + maskId] = 10;
        var lv = _be.AllocFloat(logits.Length); _be.Upload(lv, logits);
        var uv = _be.AllocFloat(rows); _be.Upload(uv, [0f, 0.25f, 0.5f, 0.75f, 0.999f]);
        var tokens = _be.AllocInt(rows); var probs = _be.AllocFloat(rows);
        _be.SampleCategorical(lv, rows, vocab, maskId, 0f, 0.9f, uv, tokens, probs);
        for (int r = 0; r < rows; r++)
        {
            int best = Enumerable.Range(0, vocab).Where(j => j != maskId).MaxBy(j => logits[r * vocab + j]);
            Assert.Equal(best, CpuBackend.Span(tokens)[r]);
            Assert.Equal(1f, CpuBackend.Span(probs)[r]);
        }
    }
}
