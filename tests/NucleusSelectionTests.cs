using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// The CPU sampler's fused path (one max pass, one exp+sum pass with the temperature folded
/// in, then one division; the nucleus found by a bracketed selection) against the straightforward one (the whole row
/// sorted): the same token for the same uniform, on rows of the GPT-2 vocabulary that are flat,
/// peaked, dominated by one token, full of ties, or ordered by id (where a stride sample is least representative).
/// </summary>
public class NucleusSelectionTests
{
    const int Vocab = 50258, MaskId = 50257;

    /// <summary>
    /// The straightforward path on the op's probabilities (<see cref="CpuBackend.SoftMaxWithout"/>, checked against
    /// double precision below): the whole row sorted (descending, ties by id), the nucleus as the longest prefix with
    /// cumsum ≤ topP (at least one token), the draw by inverse CDF in that order (topP = 1: in id order), sums in double.
    /// </summary>
    static (int Token, double Prob) Straightforward(ReadOnlySpan<float> row, float temperature, float topP, double u)
    {
        var q = new float[row.Length];
        CpuBackend.SoftMaxWithout(row, 1f / temperature, MaskId, q);
        return NucleusReference.DrawBySort(q, topP, u);
    }

    /// <summary>Rows of one kind: logits of the given spread; "ties" rounds them, "ordered" sorts each row by id, "dominant" gives one token most of the mass.</summary>
    static float[] Rows(string kind, double spread, int rows, int seed)
    {
        var rnd = new Random(seed);
        var logits = new float[(long)rows * Vocab];
        for (int r = 0; r < rows; r++)
        {
            var row = logits.AsSpan(r * Vocab, Vocab);
            for (int j = 0; j < Vocab; j++)
                row[j] = (float)(spread * Math.Sqrt(-2 * Math.Log(1 - rnd.NextDouble())) * Math.Cos(2 * Math.PI * rnd.NextDouble()));
            if (kind == "ties") for (int j = 0; j < Vocab; j++) row[j] = MathF.Round(row[j]);
            if (kind == "ordered") row.Sort();
            if (kind == "dominant") row[rnd.Next(Vocab - 1)] = 14f;
            row[MaskId] = 30f;   // the mask logit would dominate: it must be left out
        }
        return logits;
    }

    [Theory]
    [InlineData("flat", 0.05, 1f, 0.9f)]       // a random-weight model: nearly the whole vocabulary is in the nucleus
    [InlineData("flat", 0.3, 0.8f, 0.9f)]
    [InlineData("peaked", 3.0, 1f, 0.9f)]     // a few hundred tokens in the nucleus
    [InlineData("peaked", 2.0, 0.7f, 0.5f)]
    [InlineData("dominant", 1.0, 1f, 0.9f)]   // one token alone crosses topP, or nearly
    [InlineData("dominant", 1.0, 1.3f, 0.95f)]
    [InlineData("ties", 2.0, 1f, 0.7f)]       // many exactly equal probabilities: ties by id
    [InlineData("ties", 0.6, 1f, 0.95f)]
    [InlineData("ordered", 1.0, 1f, 0.9f)]    // logits ascending with the id
    [InlineData("flat", 0.3, 1f, 1f)]         // no nucleus: inverse CDF in id order
    public void FusedDrawEqualsTheStraightforwardOne(string kind, double spread, float temperature, float topP)
    {
        const int rows = 16;
        var logits = Rows(kind, spread, rows, seed: kind.Length * 31 + (int)(spread * 10));
        var rnd = new Random(5);
        var u = Enumerable.Range(0, rows).Select(i => i == 0 ? 0f : i == 1 ? 0.99999f : i == 2 ? 0.5f : rnd.NextSingle()).ToArray();
        var be = new CpuBackend();
        var lv = be.AllocFloat(logits.Length); be.Upload(lv, logits);
        var uv = be.AllocFloat(rows); be.Upload(uv, u);
        var tokens = be.AllocInt(rows); var probs = be.AllocFloat(rows);
        be.SampleCategorical(lv, rows, Vocab, MaskId, temperature, topP, uv, tokens, probs);
        for (int r = 0; r < rows; r++)
        {
            var (token, prob) = Straightforward(logits.AsSpan(r * Vocab, Vocab), temperature, topP, u[r]);
            Assert.True(token == CpuBackend.Span(tokens)[r], $"{kind} row {r}, u = {u[r]}: drew {CpuBackend.Span(tokens)[r]}, the sorted row gives {token}");
            Assert.Equal(prob, CpuBackend.Span(probs)[r], 5);
        }
        // a second call reuses the per-thread buffers: the same draws
        var again = be.AllocInt(rows);
        be.SampleCategorical(lv, rows, Vocab, MaskId, temperature, topP, uv, again, probs);
        Assert.Equal(CpuBackend.Span(tokens).ToArray(), CpuBackend.Span(again).ToArray());
    }

    [Fact]
    public void ExpShiftedIsTheSoftmaxBeforeItsDivision()
    {
        var row = Rows("peaked", 3.0, 1, seed: 2);
        var e = new float[Vocab]; var q = new float[Vocab];
        double sum = CpuBackend.ExpShifted(row, 1f / 0.8f, MaskId, e);
        CpuBackend.SoftMaxWithout(row, 1f / 0.8f, MaskId, q);
        Assert.Equal(0f, e[MaskId]);
        Assert.Equal(1.0, e.Max(), 6);                    // the max is subtracted: the top token's value is exp(0)
        double exact = e.Sum(x => (double)x);
        Assert.True(Math.Abs(exact - sum) <= 1e-6 * exact, $"sum {sum} vs {exact}");
        double max = row.Where((_, j) => j != MaskId).Max() / 0.8, s = row.Where((_, j) => j != MaskId).Sum(x => Math.Exp(x / 0.8 - max));
        for (int j = 0; j < Vocab; j += 97)
            if (j != MaskId) Assert.Equal(Math.Exp(row[j] / 0.8 - max) / s, q[j], 6);
    }
}
