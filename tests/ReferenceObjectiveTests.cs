using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Tests;

/// <summary>
/// The training and evaluation procedure around the network as bd3lms does it: ignore_bos, ε bounds that are no
/// bounds, weight 1 above β = 0.5, and the clipped-schedule search's grid and statistic.
/// </summary>
public class ReferenceObjectiveTests
{
    const int MaskId = 12;

    static int[] Clean(int batch, int length) => TinyModels.Tokens(batch * length, MaskId, 5);

    [Fact]
    public void PositionZeroIsNeverMaskedUnderIgnoreBos()
    {
        var b = new Bd3Batch(16, 8, 2);
        var clean = Clean(16, 8);
        for (int rep = 0; rep < 20; rep++)
        {
            b.Noise(clean, NoiseSchedule.Autoregressive, MaskId, new Rng((ulong)rep), resample: true);   // t = 1: every other token masked
            for (int s = 0; s < 16; s++)
            {
                Assert.Equal(clean[s * 8], b.Noisy[s * 8]);
                Assert.Equal(0f, b.Weights[s * 8]);
                Assert.All(Enumerable.Range(1, 7), i => Assert.Equal(MaskId, b.Noisy[s * 8 + i]));
            }
        }
        // without ignore_bos (the network tests), position 0 is masked like any other
        b.Noise(clean, NoiseSchedule.Autoregressive, MaskId, new Rng(1), ignoreBos: false);
        Assert.Equal(MaskId, b.Noisy[0]);
    }

    [Fact]
    public void EvaluationLeavesPositionZeroOutOfTheMean()
    {
        // L' = 1 at t = 1 is the exact autoregressive NLL: its mean over L - 1 positions equals the per-token losses
        // summed over positions 1..L-1 divided by L - 1, and position 0 adds nothing
        var c = TinyModels.Config(length: 8, blockSize: 1);
        var model = TinyModels.Random(c, 3);
        var rows = Enumerable.Range(0, 3).Select(i => TinyModels.Tokens(8, c.VocabSize - 1, 10 + i)).ToList();
        var r = new Evaluator(model).Evaluate(rows, batchSize: 3, NoiseSchedule.Autoregressive);

        var batch = new Bd3Batch(3, 8, 1);
        batch.Noise(rows.SelectMany(x => x).ToArray(), NoiseSchedule.Autoregressive, c.MaskId, new Rng(1234));
        var obj = new Bd3Objective(model);
        obj.Run(batch, backward: false);
        var loss = obj.TokenLosses();
        double sum = 0;
        for (int s = 0; s < 3; s++)
        {
            Assert.Equal(0f, loss[s * 8]);
            for (int i = 1; i < 8; i++) sum += loss[s * 8 + i];
        }
        Assert.Equal(sum / (3 * 7), r.Nelbo, 5);
        Assert.Equal(3 * 7, r.Tokens);
    }

    [Fact]
    public void AnEpsilonLowerBoundReMasksNoBlock()
    {
        // β = 1e-3 (every published sampling_eps_min): blocks drawn at tiny t keep their few or zero masks
        var b = new Bd3Batch(64, 16, 4);
        var clean = Clean(64, 16);
        var sched = new NoiseSchedule(NoiseSchedule.Epsilon, 1f);
        int small = 0, unmasked = 0;
        for (int rep = 0; rep < 20; rep++)
        {
            b.Noise(clean, sched, MaskId, new Rng((ulong)rep), resample: true, ignoreBos: false);
            for (int blk = 0; blk < b.Rates.Length; blk++)
            {
                if (b.Rates[blk] >= 0.05f) continue;
                small++;
                if (b.Noisy.AsSpan(blk * 4, 4).IndexOf(MaskId) < 0) unmasked++;
            }
        }
        // P(no mask | t < 0.05) ≥ 0.95^4 ≈ 0.81 (about 0.9 on average): the reference leaves most such blocks clean;
        // enforcing β = 1e-3 as a bound would force a mask into every one of them
        Assert.True(small > 50, $"only {small} blocks drawn at t < 0.05");
        Assert.True(unmasked > 0.7 * small, $"{unmasked} of {small} blocks drawn at t < 0.05 without a mask");

        // a real lower bound (β = 0.3) still re-masks: no block under 30% masked when that is reachable
        var real = new NoiseSchedule(0.3f, 0.8f);
        b.Noise(clean, real, MaskId, new Rng(3), resample: true, ignoreBos: false);
        for (int blk = 0; blk < b.Rates.Length; blk++)
        {
            int masked = 0;
            for (int i = 0; i < 4; i++) masked += b.Noisy[blk * 4 + i] == MaskId ? 1 : 0;
            Assert.InRange(masked / 4.0, 0.3, 0.8);
        }
        Assert.False(new NoiseSchedule(NoiseSchedule.Epsilon, 1f).HasLowerBound);
        Assert.False(new NoiseSchedule(0f, 1f).HasUpperBound);
        Assert.True(real.HasLowerBound && real.HasUpperBound);
    }

    [Fact]
    public void MaskedTokensWeighOneAboveBetaOneHalf()
    {
        var b = new Bd3Batch(8, 16, 4);
        var clean = Clean(8, 16);
        b.Noise(clean, new NoiseSchedule(0.6f, 0.9f), MaskId, new Rng(2), ignoreBos: false);
        for (int i = 0; i < b.Weights.Length; i++)
            Assert.Equal(b.Noisy[i] == MaskId ? 1f : 0f, b.Weights[i]);
        b.Noise(clean, new NoiseSchedule(0.3f, 0.9f), MaskId, new Rng(2), ignoreBos: false);
        for (int i = 0; i < b.Weights.Length; i++)
            Assert.Equal(b.Noisy[i] == MaskId ? 1f / b.Rates[i / 4] : 0f, b.Weights[i], 5);
    }

    [Fact]
    public void SearchGridIsTheReferences()
    {
        var grid = ScheduleSearch.DefaultGrid(4);
        // (ε, 1) plus widths 0.5..0.9 slid by 0.05: 11 + 9 + 7 + 5 + 3 cells
        Assert.Equal(1 + 11 + 9 + 7 + 5 + 3, grid.Count);
        Assert.Equal((NoiseSchedule.Epsilon, 1f), grid[0]);
        Assert.Contains((NoiseSchedule.Epsilon, 0.5f), grid);   // i = 0 is clamped to ε
        Assert.Contains((0.5f, 1f), grid);
        Assert.Contains((0.05f, 0.95f), grid);
        Assert.All(grid, g => Assert.True(g.Item2 - g.Item1 >= 0.5f - NoiseSchedule.Epsilon - 1e-5f && g.Item2 <= 1f, $"cell {g}"));
        Assert.Equal(grid.Count, grid.Distinct().Count());
        Assert.Equal([(NoiseSchedule.Epsilon, 1f), (1f, 1f)], ScheduleSearch.DefaultGrid(1));
    }

    [Fact]
    public void SearchStatisticIsTheVarianceOfPerBlockMeans()
    {
        var c = TinyModels.Config(length: 8, blockSize: 2);
        var model = TinyModels.Random(c, 4);
        var rows = Enumerable.Range(0, 4).Select(i => TinyModels.Tokens(8, c.VocabSize - 1, 20 + i)).ToList();
        var sched = new NoiseSchedule(0.3f, 0.8f);
        var r = new Evaluator(model).Evaluate(rows, batchSize: 4, sched, seed: 77, resample: true);

        // the same fixed batch by hand: per (sequence, block) mean of the weighted token losses, unbiased variance
        var batch = new Bd3Batch(4, 8, 2);
        batch.Noise(rows.SelectMany(x => x).ToArray(), sched, c.MaskId, new Rng(77), resample: true);
        var obj = new Bd3Objective(model);
        obj.Run(batch, backward: false);
        var loss = obj.TokenLosses();
        var means = Enumerable.Range(0, 16).Select(k => (loss[2 * k] + (double)loss[2 * k + 1]) / 2).ToArray();
        double m = means.Average(), v = means.Sum(x => (x - m) * (x - m)) / 15;
        Assert.Equal(v, r.BlockVariance, 8);
        Assert.NotEqual(r.Variance, r.BlockVariance);   // not the per-sequence spread

        var (best, cells) = ScheduleSearch.Run(model, rows, 4, [(0.3f, 0.8f), (NoiseSchedule.Epsilon, 1f)], seed: 77);
        Assert.Equal(v, cells[0].Variance, 8);
        Assert.Equal(cells.MinBy(x => x.Variance), best);
    }
}
