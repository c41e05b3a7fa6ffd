namespace FastBlockDiff.Engine.Training;

/// <summary>
/// The linear masking schedule α_t = 1 - t (mask rate t) and its clipped variant: the mask rate is drawn from
/// U[β, ω] instead of U[0, 1]. The NELBO weight of a masked token is |α'_t| / (1 - α_t) = 1/t.
/// </summary>
public readonly record struct NoiseSchedule(float Min, float Max)
{
    /// <summary>The full-range schedule evaluation uses (t ∈ [1e-3, 1], as bd3lms reports perplexity).</summary>
    public static readonly NoiseSchedule Eval = new(1e-3f, 1f);
    public static readonly NoiseSchedule Linear = new(0f, 1f);
    /// <summary>Every block fully masked (t = 1, weight 1): with L' = 1 the NELBO is exactly the autoregressive NLL.</summary>
    public static readonly NoiseSchedule Autoregressive = Fixed(1f);

    /// <summary>A degenerate schedule: every block is noised at mask rate <paramref name="t"/>; only t = 1 validates.</summary>
    public static NoiseSchedule Fixed(float t) => new(t, t);

    /// <summary>β = ω: the mask rate is not drawn but fixed.</summary>
    public bool IsFixed => Min == Max;

    public void Validate()
    {
        // β = ω is an error except β = ω = 1, the autoregressive special case (every token masked, weight 1)
        if (!(Min >= 0f && Max <= 1f && (Min < Max || (Min == 1f && Max == 1f))))
            throw new UserInputException($"noise schedule needs 0 ≤ β < ω ≤ 1 (or β = ω = 1 for autoregressive training), got β={Min}, ω={Max}");
    }

    /// <summary>Maps a uniform u ∈ [0,1) to a mask rate in [β, ω], never exactly 0 (the weight 1/t must stay finite).</summary>
    public float MaskRate(double u) => (float)Math.Max(Min + (Max - Min) * u, 1e-4);

    /// <summary>The ε the reference draws t from [ε, 1] with; a lower bound at or below it is no bound (no re-masking).</summary>
    public const float Epsilon = 1e-3f;

    /// <summary>Whether re-masking enforces β: not at 0 nor at ε, which the reference treats as no bound.</summary>
    public bool HasLowerBound => Min > Epsilon * 1.0001f;
    /// <summary>Whether re-masking enforces ω: not at 1.</summary>
    public bool HasUpperBound => Max < 1f;
    /// <summary>β &gt; 0.5: the reference weighs every masked token 1 instead of 1/t.</summary>
    public bool UnitWeight => Min > 0.5f;

    /// <summary>NELBO weight α'/(α-1) of a masked token at mask rate t.</summary>
    public static float Weight(float t) => 1f / t;

    public override string ToString() => Min == 0f && Max == 1f ? "linear"
        : IsFixed ? (Max == 1f ? "fixed t=1 (autoregressive)" : $"fixed t={Max:0.###}")
        : $"clipped U[{Min:0.###}, {Max:0.###}]";
}
