using FastBlockDiff.Engine.Model;

namespace FastBlockDiff.Engine.Training;

/// <summary>
/// Result of a NELBO evaluation: per-token NELBO in nats, its spread, and what it means as perplexity.
/// <see cref="BlockVariance"/> is the schedule search's statistic: per batch, the (unbiased) variance over
/// (sequence, block) of the per-block mean loss, averaged over batches (bd3lms's metrics.valid_vars).
/// </summary>
public sealed record EvalResult(double Nelbo, double Variance, int Sequences, long Tokens)
{
    public double BlockVariance { get; init; }
    public double Perplexity => Math.Exp(Nelbo);
    /// <summary>Bits per byte for byte-level models (one token = one byte; BOS/EOS counted as bytes).</summary>
    public double BitsPerToken => Nelbo / Math.Log(2);
}

/// <summary>
/// Validation NELBO with t ~ U[1e-3, 1] (full range: the bound stays valid whatever schedule training used),
/// and the mean/variance of the loss under any schedule, which the schedule search needs. As the reference's
/// ignore_bos, position 0 of every row is never masked and is left out of the average.
/// </summary>
public sealed class Evaluator(Denoiser model) : IDisposable
{
    readonly Bd3Objective _objective = new(model);

    /// <summary>Device buffers held between evaluations (for tests of ownership).</summary>
    public int BufferCount => _objective.BufferCount;

    /// <summary>Frees the evaluation workspaces.</summary>
    public void Dispose() => _objective.Dispose();

    /// <summary>Evaluates every row of <paramref name="rows"/> (each L tokens) in batches, with a fixed seed.</summary>
    /// <param name="resample">re-mask blocks outside [β, ω] as training does (the schedule search measures the training estimator).</param>
    /// <param name="cancel">checked before every batch; throws <see cref="OperationCanceledException"/>.</param>
    public EvalResult Evaluate(IReadOnlyList<int[]> rows, int batchSize, NoiseSchedule? schedule = null, ulong seed = 1234, bool resample = false,
        CancellationToken cancel = default)
    {
        if (rows.Count == 0) throw new UserInputException("no validation rows to evaluate (corpus too small for one sequence of L tokens?)");
        var sched = schedule ?? NoiseSchedule.EvalWith(model.Config.Noise);
        var rng = new Rng(seed);
        int length = model.Config.ModelLength, lb = model.Config.BlockSize, counted = Math.Max(1, length - 1);
        var perSeq = new List<double>();
        var batchVariances = new List<double>();
        for (int start = 0; start < rows.Count; start += batchSize)
        {
            cancel.ThrowIfCancellationRequested();
            int b = Math.Min(batchSize, rows.Count - start);
            var batch = new Bd3Batch(b, length, lb);
            var flat = new int[b * length];
            for (int i = 0; i < b; i++) rows[start + i].AsSpan(0, length).CopyTo(flat.AsSpan(i * length));
            batch.Noise(flat, sched, model.Config.MaskId, rng, resample);
            _objective.Run(batch, backward: false);
            var loss = _objective.TokenLosses();
            var blockMeans = new double[b * batch.Blocks];
            for (int s = 0; s < b; s++)
            {
                double sum = 0;
                for (int i = 0; i < length; i++)
                {
                    sum += loss[s * length + i];
                    blockMeans[s * batch.Blocks + i / lb] += loss[s * length + i] / lb;
                }
                perSeq.Add(sum / counted);   // position 0 is never masked: it adds 0 and is not counted
            }
            batchVariances.Add(SampleVariance(blockMeans));
        }
        double mean = perSeq.Average();
        return new EvalResult(mean, SampleVariance(perSeq), perSeq.Count, (long)perSeq.Count * counted) { BlockVariance = batchVariances.Average() };
    }

    static double SampleVariance(IReadOnlyList<double> x)
    {
        if (x.Count < 2) return 0;
        double m = x.Average();
        return x.Sum(v => (v - m) * (v - m)) / (x.Count - 1);
    }
}

/// <summary>One cell of the (β, ω) grid; Variance is the search statistic (<see cref="EvalResult.BlockVariance"/>).</summary>
public sealed record ScheduleCell(float Min, float Max, double Mean, double Variance);

/// <summary>
/// The paper's data-driven clipped schedule: evaluate the training NELBO under each (β, ω) of a grid on
/// held-out rows and keep the cell whose per-block losses vary least (the reference's statistic).
/// </summary>
public static class ScheduleSearch
{
    /// <summary>The reference's clip_search_widths of its training scripts.</summary>
    public static readonly float[] ReferenceWidths = [0.5f, 0.6f, 0.7f, 0.8f, 0.9f];
    public const float ReferenceDelta = 0.05f;

    /// <summary>
    /// The reference's grid (bd3lms metrics.init_valid_vars): (ε, 1) and, for each width w, the cells
    /// (max(i, ε), i + w) for i = 0, δ, 2δ, … ≤ 1 - w. For L' = 1 only (ε, 1) and (1, 1).
    /// </summary>
    public static IReadOnlyList<(float, float)> DefaultGrid(int blockSize = 2)
    {
        float eps = NoiseSchedule.Epsilon;
        if (blockSize == 1) return [(eps, 1f), (1f, 1f)];
        var cells = new List<(float, float)> { (eps, 1f) };
        foreach (var w in ReferenceWidths)
        {
            int last = (int)Math.Round((1 - w) / ReferenceDelta);
            for (int k = 0; k <= last; k++)
            {
                float lo = (float)Math.Round(k * ReferenceDelta, 4), hi = (float)Math.Round(k * ReferenceDelta + w, 4);
                cells.Add((Math.Max(lo, eps), Math.Min(1f, hi)));
            }
        }
        return cells;
    }

    public static (ScheduleCell Best, IReadOnlyList<ScheduleCell> Cells) Run(Denoiser model, IReadOnlyList<int[]> rows, int batchSize,
        IReadOnlyList<(float Min, float Max)>? grid = null, ulong seed = 99, Action<ScheduleCell>? onCell = null, CancellationToken cancel = default)
    {
        using var eval = new Evaluator(model);
        var cells = new List<ScheduleCell>();
        foreach (var (lo, hi) in grid ?? DefaultGrid(model.Config.BlockSize))
        {
            var s = new NoiseSchedule(lo, hi, model.Config.Noise);
            s.Validate();
            var r = eval.Evaluate(rows, batchSize, s, seed, resample: true, cancel);
            var cell = new ScheduleCell(lo, hi, r.Nelbo, r.BlockVariance);
            cells.Add(cell);
            onCell?.Invoke(cell);
        }
        return (cells.MinBy(c => c.Variance)!, cells);
    }
}
