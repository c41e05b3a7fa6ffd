namespace FastBlockDiff.Engine.Training;

/// <summary>The reference's noise schedules (bd3lms noise_schedule.py, config noise.type); each maps a time t to a mask probability.</summary>
public enum NoiseKind
{
    /// <summary>"loglinear" in the reference: mask probability t, weight 1/t.</summary>
    Linear,
    /// <summary>"square": t², clamped below at ε.</summary>
    Square,
    /// <summary>"square_root": √t, clamped below at ε.</summary>
    SquareRoot,
    /// <summary>"log": log₂(1 + t).</summary>
    Log,
    /// <summary>"cosine": 1 − (1 − ε)·cos(πt/2).</summary>
    Cosine,
}

/// <summary>
/// A masking schedule: the time t is drawn from U[β, ω] (the clipped range; U[0, 1] unclipped) and each token of a
/// block is masked with probability 1 − α_t (the schedule's <see cref="NoiseKind"/>; linear: α_t = 1 − t). A masked
/// token's NELBO weight is −α'_t / (1 − α_t) (linear: 1/t). The re-masking bounds β, ω apply to the realised masked
/// fraction, as in the reference.
/// </summary>
public readonly record struct NoiseSchedule(float Min, float Max, NoiseKind Kind = NoiseKind.Linear)
{
    /// <summary>The full-range schedule evaluation uses (t ∈ [1e-3, 1], as bd3lms reports perplexity).</summary>
    public static readonly NoiseSchedule Eval = new(1e-3f, 1f);
    public static readonly NoiseSchedule Linear = new(0f, 1f);
    /// <summary>Every block fully masked (t = 1, weight 1): with L' = 1 the NELBO is exactly the autoregressive NLL.</summary>
    public static readonly NoiseSchedule Autoregressive = Fixed(1f);

    /// <summary>A degenerate schedule: every block is noised at mask rate <paramref name="t"/>; only t = 1 validates.</summary>
    public static NoiseSchedule Fixed(float t) => new(t, t);

    /// <summary>The evaluation range t ∈ [ε, 1] under <paramref name="kind"/>.</summary>
    public static NoiseSchedule EvalWith(NoiseKind kind) => Eval with { Kind = kind };

    /// <summary>β = ω: the mask rate is not drawn but fixed.</summary>
    public bool IsFixed => Min == Max;

    public void Validate()
    {
        // β = ω is an error except β = ω = 1, the autoregressive special case (every token masked, weight 1)
        if (!(Min >= 0f && Max <= 1f && (Min < Max || (Min == 1f && Max == 1f))))
            throw new UserInputException($"noise schedule needs 0 ≤ β < ω ≤ 1 (or β = ω = 1 for autoregressive training), got β={Min}, ω={Max}");
        if (!Enum.IsDefined(Kind)) throw new UserInputException($"unknown noise schedule {(int)Kind}");
    }

    /// <summary>Maps a uniform u ∈ [0,1) to a time in [β, ω], never exactly 0 (the weight must stay finite).</summary>
    public float MaskRate(double u) => (float)Math.Max(Min + (Max - Min) * u, 1e-4);

    /// <summary>The ε the reference draws t from [ε, 1] with; a lower bound at or below it is no bound (no re-masking).</summary>
    public const float Epsilon = 1e-3f;

    /// <summary>Whether re-masking enforces β: not at 0 nor at ε, which the reference treats as no bound.</summary>
    public bool HasLowerBound => Min > Epsilon * 1.0001f;
    /// <summary>Whether re-masking enforces ω: not at 1.</summary>
    public bool HasUpperBound => Max < 1f;
    /// <summary>β &gt; 0.5: the reference weighs every masked token 1 instead of 1/t.</summary>
    public bool UnitWeight => Min > 0.5f;

    /// <summary>Probability 1 − α_t that a token is masked at time t (the reference's move_chance).</summary>
    public float MaskProbability(float t) => (float)MaskProbability(Kind, t);

    /// <summary>NELBO weight −α'_t / (1 − α_t) of a masked token at time t (the reference's −loss_scaling).</summary>
    public float Weight(float t) => (float)Weight(Kind, t);

    /// <summary>The reference's ε of its schedules (clamp of square and square-root, margin of the cosine).</summary>
    const double ScheduleEpsilon = 1e-3;

    /// <summary>1 − α_t of <paramref name="kind"/> at t, as the reference computes it (ε = 1e-3 where it clamps).</summary>
    public static double MaskProbability(NoiseKind kind, double t) => kind switch
    {
        NoiseKind.Linear => t,
        NoiseKind.Square => Math.Max(t * t, ScheduleEpsilon),
        NoiseKind.SquareRoot => Math.Max(Math.Sqrt(t), ScheduleEpsilon),
        NoiseKind.Log => Math.Log(1 + t) / Math.Log(2),
        NoiseKind.Cosine => 1 - (1 - ScheduleEpsilon) * Math.Cos(t * Math.PI / 2),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary>d(1 − α_t)/dt = −α'_t, the derivative of <see cref="MaskProbability(NoiseKind, double)"/> where it is not clamped.</summary>
    public static double MaskProbabilityRate(NoiseKind kind, double t) => kind switch
    {
        NoiseKind.Linear => 1,
        NoiseKind.Square => 2 * t,
        NoiseKind.SquareRoot => 0.5 / Math.Sqrt(t),
        NoiseKind.Log => 1 / ((1 + t) * Math.Log(2)),
        NoiseKind.Cosine => (1 - ScheduleEpsilon) * Math.Sin(t * Math.PI / 2) * Math.PI / 2,
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary>
    /// The weight −α'_t / (1 − α_t) as the reference's loss_scaling: the clamped probability in the denominator of
    /// square and square-root, and 1 − α_t + ε in the cosine's.
    /// </summary>
    public static double Weight(NoiseKind kind, double t) => kind == NoiseKind.Cosine
        ? MaskProbabilityRate(kind, t) / (MaskProbability(kind, t) + ScheduleEpsilon)
        : MaskProbabilityRate(kind, t) / MaskProbability(kind, t);

    /// <summary>The names of <c>--noise-schedule</c> (ours; the reference's noise.type in parentheses of <see cref="ReferenceName"/>).</summary>
    public static readonly string[] Names = ["linear", "square", "sqrt", "log", "cosine"];

    public static string Name(NoiseKind kind) => Names[(int)kind];

    /// <summary>Parses a <c>--noise-schedule</c> value or a reference noise.type (loglinear, square_root).</summary>
    public static NoiseKind Parse(string name, string option = "--noise-schedule") => name.ToLowerInvariant() switch
    {
        "linear" or "loglinear" => NoiseKind.Linear,
        "square" => NoiseKind.Square,
        "sqrt" or "square_root" or "square-root" => NoiseKind.SquareRoot,
        "log" => NoiseKind.Log,
        "cosine" => NoiseKind.Cosine,
        _ => throw new UserInputException($"{option} must be one of {string.Join(", ", Names)}, got '{name}'"),
    };

    /// <summary>The reference's noise.type for <paramref name="kind"/>.</summary>
    public static string ReferenceName(NoiseKind kind) => kind switch
    {
        NoiseKind.Linear => "loglinear",
        NoiseKind.SquareRoot => "square_root",
        _ => Name(kind),
    };

    public override string ToString()
    {
        string range = Min == 0f && Max == 1f ? "linear"
            : IsFixed ? (Max == 1f ? "fixed t=1 (autoregressive)" : $"fixed t={Max:0.###}")
            : $"clipped U[{Min:0.###}, {Max:0.###}]";
        if (Kind == NoiseKind.Linear) return range;
        return Min == 0f && Max == 1f ? Name(Kind) : $"{Name(Kind)}, {range}";
    }
}
