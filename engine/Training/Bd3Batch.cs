using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Training;

/// <summary>
/// One BD3 training batch on the host: the noised copy of each clean row, the per-(sequence, block) mask
/// rates and the per-token NELBO weights. Laid out for the vectorised pass over x_noisy ⊕ x_clean (DESIGN.md 1.1).
/// </summary>
public sealed class Bd3Batch
{
    public readonly int Batch, Length, BlockSize;
    public readonly int[] Clean, Noisy;
    /// <summary>Time t of each (sequence, block): the mask probability under the linear schedule.</summary>
    public readonly float[] Rates;
    /// <summary>The schedule's weight (linear: 1/t) where the token is masked, 0 where it is carried over.</summary>
    public readonly float[] Weights;

    public int Blocks => Length / BlockSize;

    public Bd3Batch(int batch, int length, int blockSize)
    {
        if (length % blockSize != 0) throw new UserInputException($"sequence length {length} is not divisible by block size {blockSize}");
        Batch = batch; Length = length; BlockSize = blockSize;
        Clean = new int[batch * length]; Noisy = new int[batch * length];
        Rates = new float[batch * (length / blockSize)]; Weights = new float[batch * length];
    }

    /// <summary>
    /// Draws one t per (sequence, block), stratified over the whole batch (low-discrepancy, as bd3lms), and masks
    /// each token with the schedule's probability 1 − α_t (linear: t). With a clipped range, a block whose realised mask fraction falls outside
    /// [β, ω] is re-masked (bounded retries) when <paramref name="resample"/> is set, as the reference does in
    /// training; a bound at ε (β ≤ 1e-3) or at ω = 1 is no bound, as there. Evaluation must not resample: forcing
    /// a mask into a block drawn at small t would bias the bound. With <paramref name="ignoreBos"/> (the reference's
    /// ignore_bos) position 0 of every row is never masked. A masked token weighs −α'_t/(1 − α_t) (linear: 1/t), or 1
    /// when β &gt; 0.5 (as the reference's loss for clipped ranges above one half).
    /// </summary>
    public void Noise(ReadOnlySpan<int> clean, NoiseSchedule schedule, int maskId, Rng rng, bool resample = false, bool stratified = true, bool ignoreBos = true)
    {
        clean.CopyTo(Clean);
        int n = Rates.Length;
        double offset = rng.NextDouble();
        for (int i = 0; i < n; i++)
        {
            double u = stratified ? (offset + (double)i / n) % 1.0 : rng.NextDouble();
            Rates[i] = schedule.MaskRate(u);
        }
        // shuffle the strata so a sequence's blocks are not ordered by t
        for (int i = n - 1; i > 0; i--) { int j = rng.NextInt(i + 1); (Rates[i], Rates[j]) = (Rates[j], Rates[i]); }
        bool clipped = resample && (schedule.HasLowerBound || schedule.HasUpperBound);
        for (int blk = 0; blk < n; blk++) NoiseBlock(blk, Rates[blk], schedule, maskId, rng, clipped, schedule.UnitWeight);
        if (ignoreBos)
            for (int s = 0; s < Batch; s++) { Noisy[s * Length] = Clean[s * Length]; Weights[s * Length] = 0f; }
    }

    /// <summary>Noises with given per-block rates under the linear schedule (tests, AR special case with t = 1).</summary>
    public void NoiseWithRates(ReadOnlySpan<int> clean, ReadOnlySpan<float> rates, int maskId, Rng rng)
    {
        clean.CopyTo(Clean);
        rates.CopyTo(Rates);
        for (int blk = 0; blk < Rates.Length; blk++) NoiseBlock(blk, Rates[blk], NoiseSchedule.Linear, maskId, rng, false, false);
    }

    void NoiseBlock(int blk, float t, NoiseSchedule schedule, int maskId, Rng rng, bool clip, bool unitWeight)
    {
        int start = blk * BlockSize;
        float weight = unitWeight ? 1f : schedule.Weight(t);
        double p = schedule.MaskProbability(t);
        for (int attempt = 0; ; attempt++)
        {
            int masked = 0;
            for (int i = start; i < start + BlockSize; i++)
            {
                bool m = rng.NextDouble() < p;
                Noisy[i] = m ? maskId : Clean[i];
                Weights[i] = m ? weight : 0f;
                masked += m ? 1 : 0;
            }
            if (!clip || attempt >= 64) return;
            var c = schedule;
            float frac = (float)masked / BlockSize;
            float lo = c.HasLowerBound ? c.Min : 0f, hi = c.HasUpperBound ? c.Max : 1f;
            // a fraction can only land in [β, ω] if some multiple of 1/L' does; otherwise accept the draw
            bool reachable = Math.Floor(hi * BlockSize) >= Math.Ceiling(lo * BlockSize);
            if (!reachable || (frac >= lo && frac <= hi)) return;
        }
    }

    /// <summary>Copies rows [firstRow, firstRow + Batch) of a larger batch of the same shape (a data-parallel rank's shard).</summary>
    public void CopyRows(Bd3Batch source, int firstRow)
    {
        if (source.Length != Length || source.BlockSize != BlockSize || firstRow < 0 || firstRow + Batch > source.Batch)
            throw new ArgumentException($"rows [{firstRow}, {firstRow + Batch}) of a {source.Batch}x{source.Length} batch (L'={source.BlockSize}) do not fit a {Batch}x{Length} shard (L'={BlockSize})");
        int tokens = Batch * Length, blocks = Batch * Blocks;
        source.Clean.AsSpan(firstRow * Length, tokens).CopyTo(Clean);
        source.Noisy.AsSpan(firstRow * Length, tokens).CopyTo(Noisy);
        source.Weights.AsSpan(firstRow * Length, tokens).CopyTo(Weights);
        source.Rates.AsSpan(firstRow * Blocks, blocks).CopyTo(Rates);
    }

    /// <summary>Token ids [Batch, 2L] = noisy ⊕ clean per sequence.</summary>
    public int[] FullIds()
    {
        var ids = new int[Batch * 2 * Length];
        for (int s = 0; s < Batch; s++)
        {
            Noisy.AsSpan(s * Length, Length).CopyTo(ids.AsSpan(s * 2 * Length));
            Clean.AsSpan(s * Length, Length).CopyTo(ids.AsSpan(s * 2 * Length + Length));
        }
        return ids;
    }

    /// <summary>Rotary positions of the 2L layout: both halves use 0..L-1.</summary>
    public int[] FullPositions()
    {
        var pos = new int[Batch * 2 * Length];
        for (int i = 0; i < pos.Length; i++) pos[i] = i % Length;
        return pos;
    }

    public AttentionShape Shape(Model.ModelConfig c) => new(Batch, c.Heads, c.HeadDim, 2 * Length, MaskKind.Bd3, BlockSize);
}
