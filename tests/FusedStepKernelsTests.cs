using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// The CPU's fused kernels of a training step (issue 15, item 2) against the unfused sequences they replace: the SUBS
/// cross-entropy (one SIMD exp pass per row with its own float exp) against separate max / runtime-exp / sum / scale
/// passes, to fp32 rounding; the optimiser step as the trainer calls it (Σg² left in the device slots, then the clipped
/// AdamW with the EMA in one pass) against SumSquares on the host, the clip factor, AdamW, then Ema, bit for bit.
/// </summary>
public class FusedStepKernelsTests
{
    readonly IBackend _be = new CpuBackend();

    FloatView Up(float[] x) { var v = _be.AllocFloat(x.Length); _be.Upload(v, x); return v; }
    IntView Up(int[] x) { var v = _be.AllocInt(x.Length); _be.Upload(v, x); return v; }
    static float[] Down(FloatView v) => CpuBackend.Span(v).ToArray();

    [Fact]
    public void SimdExpMatchesFloat64ToAboutAnUlp()
    {
        // a dense sweep of the range where e^x is a normal float, and the edges
        const int n = 1 << 20;
        var xs = new float[n];
        for (int i = 0; i < n; i++) xs[i] = -87.3f + (88.3f + 87.3f) * i / (n - 1);
        double worst = 0;
        for (int i = 0; i + 16 <= n; i += 16)
        {
            var e = SimdExp.Exp(Vector512.Create(xs.AsSpan(i, 16)));
            for (int k = 0; k < 16; k++)
            {
                double want = Math.Exp(xs[i + k]);
                worst = Math.Max(worst, Math.Abs(e[k] - want) / want);
            }
        }
        Assert.True(worst < 1.5e-7, $"largest relative error {worst:E3}");

        float[] special = [0f, -0f, float.NegativeInfinity, -87.31f, -100f, -1e30f, float.NaN, 1f, -1f, 88.3f, 89f, -87.3f, 1e-30f, -1e-30f, 0.5f, -0.5f];
        var s = SimdExp.Exp(Vector512.Create(special));
        string got = string.Join(", ", Enumerable.Range(0, 16).Select(k => $"exp({special[k]}) = {s[k]}"));
        Assert.True(s[0] == 1f && s[1] == 1f, got);
        for (int k = 2; k <= 5; k++) Assert.True(s[k] == 0f && !float.IsNegative(s[k]), got);   // below the normal floats: +0
        Assert.True(float.IsNaN(s[6]), got);
        Assert.True(Math.Abs(s[7] - Math.E) / Math.E < 1.5e-7 && Math.Abs(s[8] - 1 / Math.E) * Math.E < 1.5e-7, got);
        Assert.True(float.IsFinite(s[9]) && Math.Abs(s[9] - Math.Exp(88.3f)) / Math.Exp(88.3f) < 1.5e-7, got);
        Assert.True(s[10] == float.PositiveInfinity, got);
        Assert.True(s[11] > 0 && float.IsNormal(s[11]), got);
    }

    /// <summary>
    /// The op's semantics written as separate passes in float, the way the kernel computed it before it was fused:
    /// max, the runtime's exp of x - max into a new array, Σ in double, loss, then the scaled softmax minus the one-hot.
    /// </summary>
    static (float[] Loss, float[] Grad) Unfused(float[] logits, int[] targets, float[] weights, int vocab, int maskId, float gradScale)
    {
        int rows = targets.Length;
        var loss = new float[rows];
        var grad = new float[logits.Length];
        for (int r = 0; r < rows; r++)
        {
            if (weights[r] == 0) continue;
            var row = logits.AsSpan(r * vocab, vocab).ToArray();
            row[maskId] = float.NegativeInfinity;
            float max = TensorPrimitives.Max(row);
            var e = new float[vocab];
            TensorPrimitives.Subtract(row, max, e);
            TensorPrimitives.Exp(e, e);
            double sum = 0;
            foreach (float x in e) sum += x;
            loss[r] = weights[r] * (max + (float)Math.Log(sum) - row[targets[r]]);
            float s = gradScale * weights[r];
            var g = grad.AsSpan(r * vocab, vocab);
            TensorPrimitives.Multiply(e, (float)(s / sum), g);
            g[targets[r]] -= s;
            g[maskId] = 0;
        }
        return (loss, grad);
    }

    [Fact]
    public void SubsCrossEntropyMatchesTheUnfusedPassesOverTheGpt2Vocabulary()
    {
        // 11 rows over two workers (so that rows prefetch their successors, and each range ends without one)
        const int rows = 11, vocab = 50258, maskId = 50257;
        const float gradScale = 0.37f;
        var rnd = new Random(41);
        var logits = new float[rows * vocab];
        for (int i = 0; i < logits.Length; i++) logits[i] = rnd.NextSingle() * 8 - 4;
        for (int r = 0; r < rows; r++) logits[r * vocab + maskId] = 50;               // would dominate if not excluded
        for (int c = 0; c < vocab; c++) logits[2 * vocab + c] += 60;                   // exp without the max would overflow
        for (int c = 0; c < vocab; c += 3) logits[5 * vocab + c] -= 120;               // a third of the row underflows to 0
        for (int c = 0; c < vocab; c++) logits[7 * vocab + c] *= 0.01f;                // nearly uniform: a sum of 50,257 similar terms
        logits[8 * vocab + 50256] = 30;                                                // one token takes almost all the mass
        int[] targets = [0, 17, 50256, 999, 31337, 3, 50000, 12345, 50256, 2, 40000];
        float[] weights = [1.5f, 0.25f, 2f, 0f, 1f, 7.5f, 1f, 0.5f, 1f, 0f, 3f];      // rows 3 and 9 carried over
        var (lossWant, gradWant) = Unfused(logits, targets, weights, vocab, maskId, gradScale);

        var lv = Up(logits); var tv = Up(targets); var wv = Up(weights);
        var lossOnly = _be.AllocFloat(rows);
        _be.SubsCrossEntropy(lv, tv, wv, lossOnly, rows, vocab, maskId, gradScale, writeGrad: false);
        Assert.Equal(logits, Down(lv));   // without the gradient the logits, mask column included, stay as they were
        var loss = _be.AllocFloat(rows);
        _be.SubsCrossEntropy(lv, tv, wv, loss, rows, vocab, maskId, gradScale, writeGrad: true);
        Assert.Equal(Down(lossOnly), Down(loss));
        var lossGot = Down(loss); var gradGot = Down(lv);

        for (int r = 0; r < rows; r++)
        {
            // the fused exp and sum differ from the runtime's by float roundings: ~1e-7 of the log-sum-exp
            Assert.True(Math.Abs(lossGot[r] - lossWant[r]) <= 2e-6 * Math.Max(weights[r], Math.Abs(lossWant[r])),
                $"row {r}: loss {lossGot[r]} vs unfused {lossWant[r]}");
            double s = gradScale * weights[r], worst = 0;
            for (int c = 0; c < vocab; c++)
            {
                int i = r * vocab + c;
                // the target's s·p - s cancels when p is near 1: its error is the rounding of s
                double slack = c == targets[r] ? 1e-6 * s : 1e-12 * s;
                worst = Math.Max(worst, (Math.Abs(gradGot[i] - gradWant[i]) - 1e-6 * Math.Abs(gradWant[i])) / Math.Max(slack, 1e-30));
            }
            // each element to 1e-6 of itself, plus an absolute 1e-12 of the row's scale (the flushed underflows)
            Assert.True(worst <= 1, $"row {r}: gradient off by {worst:F2} times the fp32 tolerance");
            if (weights[r] == 0) Assert.All(gradGot.AsSpan(r * vocab, vocab).ToArray(), g => Assert.Equal(0f, g));
            Assert.Equal(0f, gradGot[r * vocab + maskId]);
        }
    }

    [Theory]
    [InlineData(0.05f, 0.1f)]   // clipping active, weight decay on
    [InlineData(0.05f, 0f)]     // clipping active, weight decay off
    [InlineData(1e6f, 0.1f)]    // clipping inactive
    [InlineData(0f, 0f)]        // clipping off (maxNorm 0), weight decay off
    public void ClippedAdamWWithTheEmaEqualsNormThenClipThenAdamWThenEma(float maxNorm, float weightDecay)
    {
        const int n = 70001;   // several workers, a vector tail
        var rnd = new Random(3);
        float[] R(double lo, double hi) => Enumerable.Range(0, n).Select(_ => (float)(lo + (hi - lo) * rnd.NextDouble())).ToArray();
        var start = new[] { R(-1, 1), R(-0.1, 0.1), R(0, 0.01), R(-1, 1) };   // param, m, v, ema
        FloatView[] fused = [.. start.Select(Up)], split = [.. start.Select(Up)];
        var g = _be.AllocFloat(n);
        var slots = _be.AllocFloat(DoubleSlots.Floats(1));
        string[] names = ["param", "m", "v", "ema"];
        bool clipped = false;
        for (int t = 1; t <= 5; t++)
        {
            _be.Upload(g, R(-0.01 * t, 0.01 * t));
            var step = new AdamWStep(3e-3f, 0.9f, 0.95f, 1e-8f, weightDecay, t, 0.5f);
            float decay = 0.9f + 0.02f * t;

            _be.SumTo(g, slots, squares: true);
            _be.AdamWEmaClipped(fused[0], g, fused[1], fused[2], fused[3], step, decay, maxNorm, slots);

            double sumSquares = _be.SumSquares(g), norm = Math.Sqrt(sumSquares);
            Assert.Equal(sumSquares, DoubleSlots.Download(_be, slots));
            float clip = maxNorm > 0 && norm > maxNorm ? (float)(maxNorm / norm) : 1f;
            clipped |= clip < 1f;
            _be.AdamW(split[0], g, split[1], split[2], step with { GradScale = step.GradScale * clip });
            _be.Ema(split[3], split[0], decay);

            for (int i = 0; i < 4; i++) Assert.True(Down(fused[i]).SequenceEqual(Down(split[i])), $"{names[i]} after step {t}");
        }
        Assert.Equal(maxNorm is > 0 and < 1, clipped);   // the cases clip (or not) as their comments say
    }

    [Fact]
    public void AdamWWithTheEmaRoundsEveryElementAsTheScalarFormula()
    {
        // 16-lane vectors and the scalar tail must give the same bits as the formula element by element (no FMA contraction)
        const int n = 16 * 5 + 7;
        var rnd = new Random(9);
        float[] R(double lo, double hi) => Enumerable.Range(0, n).Select(_ => (float)(lo + (hi - lo) * rnd.NextDouble())).ToArray();
        float[] p = R(-1, 1), g = R(-2, 2), m = R(-0.1, 0.1), v = R(0, 0.01), e = R(-1, 1);
        var views = new[] { p, g, m, v, e }.Select(Up).ToArray();
        var s = new AdamWStep(3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3, 0.7f);
        const float emaDecay = 0.97f;
        _be.AdamWEma(views[0], views[1], views[2], views[3], views[4], s, emaDecay);
        float bc1 = 1f - MathF.Pow(s.Beta1, s.Step), bc2 = 1f - MathF.Pow(s.Beta2, s.Step);
        float decay = 1f - s.LearningRate * s.WeightDecay, stepSize = s.LearningRate / bc1, sqrtBc2 = MathF.Sqrt(bc2);
        for (int i = 0; i < n; i++)
        {
            float gi = g[i] * s.GradScale;
            m[i] = s.Beta1 * m[i] + (1f - s.Beta1) * gi;
            v[i] = s.Beta2 * v[i] + (1f - s.Beta2) * gi * gi;
            p[i] = p[i] * decay - stepSize * m[i] / (MathF.Sqrt(v[i]) / sqrtBc2 + s.Epsilon);
            e[i] = emaDecay * e[i] + (1f - emaDecay) * p[i];
        }
        Assert.Equal(p, Down(views[0]));
        Assert.Equal(m, Down(views[2]));
        Assert.Equal(v, Down(views[3]));
        Assert.Equal(e, Down(views[4]));
    }
}
