using FastBlockDiff.Engine.Model;

namespace FastBlockDiff.Engine.Training;

/// <summary>Result of a NELBO evaluation: per-token NELBO in nats, its spread, and what it means as perplexity.</summary>
public sealed record EvalResult(double Nelbo, double Variance, int Sequences, long Tokens)
{
    public double Perplexity => Math.Exp(Nelbo);
    /// <summary>Bits per byte for byte-level models (one token = one byte; BOS/EOS counted as bytes).</summary>
    public double BitsPerToken => Nelbo / Math.Log(2);
}

/// <summary>
/// Validation NELBO with t ~ U[1e-3, 1] (full range: the bound stays valid whatever schedule training used),
/// and the mean/variance of the loss under any schedule, which the schedule search needs.
/// </summary>
public sealed class Evaluator(Denoiser model)
{
    readonly Bd3Objective _objective = new(model);

    /// <summary>Evaluates every row of <paramref name="rows"/> (each L tokens) in batches, with a fixed seed.</summary>
    /// <param name="resample">re-mask blocks outside [β, ω] as training does (the schedule search measures the training estimator).</param>
    /// <param name="cancel">checked before every batch; throws <see cref="OperationCanceledException"/>.</param>
    public EvalResult Evaluate(IReadOnlyList<int[]> rows, int batchSize, NoiseSchedule? schedule = null, ulong seed = 1234, bool resample = false,
        CancellationToken cancel = default)
    {
        if (rows.Count == 0) throw new UserInputException("no validation rows to evaluate (corpus too small for one sequence of L tokens?)");
        var sched = schedule ?? NoiseSchedule.Eval;
        var rng = new Rng(seed);
        int length = model.Config.ModelLength;
        var perSeq = new List<double>();
        for (int start = 0; start < rows.Count; start += batchSize)
        {
            cancel.ThrowIfCancellationRequested();
            int b = Math.Min(batchSize, rows.Count - start);
            var batch = new Bd3Batch(b, length, model.Config.BlockSize);
            var flat = new int[b * length];
            for (int i = 0; i < b; i++) rows[start + i].AsSpan(0, length).CopyTo(flat.AsSpan(i * length));
            batch.Noise(flat, sched, model.Config.MaskId, rng, resample);
            _objective.Run(batch, backward: false);
            perSeq.AddRange(_objective.PerSequenceLoss(batch));
        }
        double mean = perSeq.Average();
        double var = perSeq.Sum(x => (x - mean) * (x - mean)) / Math.Max(1, perSeq.Count - 1);
        return new EvalResult(mean, var, perSeq.Count, (long)perSeq.Count * length);
    }
}

/// <summary>One cell of the (β, ω) grid.</summary>
public sealed record ScheduleCell(float Min, float Max, double Mean, double Variance);

/// <summary>
/// The paper's data-driven clipped schedule: evaluate the training NELBO under each (β, ω) of a grid on
/// held-out rows and keep the cell whose estimate has the lowest variance.
/// </summary>
public static class ScheduleSearch
{
    public static IReadOnlyList<(float, float)> DefaultGrid()
    {
        float[] lows = [0f, 0.1f, 0.2f, 0.3f, 0.45f, 0.6f];
        float[] highs = [0.5f, 0.7f, 0.8f, 0.9f, 1f];
        return [.. from lo in lows from hi in highs where lo < hi select (lo, hi)];
    }

    public static (ScheduleCell Best, IReadOnlyList<ScheduleCell> Cells) Run(Denoiser model, IReadOnlyList<int[]> rows, int batchSize,
        IReadOnlyList<(float Min, float Max)>? grid = null, ulong seed = 99, Action<ScheduleCell>? onCell = null, CancellationToken cancel = default)
    {
        var eval = new Evaluator(model);
        var cells = new List<ScheduleCell>();
        foreach (var (lo, hi) in grid ?? DefaultGrid())
        {
            var s = new NoiseSchedule(lo, hi);
            s.Validate();
            var r = eval.Evaluate(rows, batchSize, s, seed, resample: true, cancel);
            var cell = new ScheduleCell(lo, hi, r.Nelbo, r.Variance);
            cells.Add(cell);
            onCell?.Invoke(cell);
        }
        return (cells.MinBy(c => c.Variance)!, cells);
    }
}
