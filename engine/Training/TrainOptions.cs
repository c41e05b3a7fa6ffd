namespace FastBlockDiff.Engine.Training;

/// <summary>Optimisation settings. Defaults follow bd3lms where they make sense at small scale.</summary>
public sealed record TrainOptions
{
    public int Steps { get; init; } = 1000;
    public int BatchSize { get; init; } = 8;
    public float LearningRate { get; init; } = 3e-4f;
    public int WarmupSteps { get; init; } = 100;
    /// <summary>"constant" (bd3lms) or "cosine" (decays to MinLearningRate at Steps).</summary>
    public string LrSchedule { get; init; } = "constant";
    public float MinLearningRate { get; init; } = 3e-5f;
    public float Beta1 { get; init; } = 0.9f;
    public float Beta2 { get; init; } = 0.999f;
    public float Epsilon { get; init; } = 1e-8f;
    public float WeightDecay { get; init; } = 0f;
    public float GradClip { get; init; } = 1f;
    /// <summary>Upper bound of the EMA decay; early steps use (1+s)/(10+s) so short runs still get a useful average.</summary>
    public float EmaDecay { get; init; } = 0.9999f;
    public ulong Seed { get; init; } = 1;
    public int EvalEvery { get; init; } = 0;
    public int EvalBatches { get; init; } = 4;
    /// <summary>Validation rows scored by the final evaluation (0 = the whole validation split).</summary>
    public int FinalEvalSequences { get; init; } = 256;
    public int CheckpointEvery { get; init; } = 0;
    /// <summary>Re-run the (β, ω) variance search every N steps (0 = never).</summary>
    public int ScheduleSearchEvery { get; init; } = 0;
    public bool Dropout { get; init; } = true;
    /// <summary>
    /// Read loss and gradient norm back from the device every N steps (the step itself never waits for the host);
    /// progress callbacks then arrive N at a time. 1 reads after every step.
    /// </summary>
    public int ReadbackEvery { get; init; } = 1;

    public void Validate()
    {
        if (Steps <= 0) throw new UserInputException($"--steps must be positive, got {Steps}");
        if (BatchSize <= 0) throw new UserInputException($"--batch-size must be positive, got {BatchSize}");
        if (!(LearningRate > 0)) throw new UserInputException($"--lr must be positive, got {LearningRate}");
        if (LrSchedule is not ("constant" or "cosine")) throw new UserInputException($"--lr-schedule must be constant or cosine, got '{LrSchedule}'");
        if (GradClip < 0) throw new UserInputException($"--grad-clip must be ≥ 0, got {GradClip}");
        if (EmaDecay is < 0 or >= 1) throw new UserInputException($"--ema must be in [0, 1), got {EmaDecay}");
        if (ReadbackEvery is < 1 or > Trainer.MaxPendingSteps) throw new UserInputException($"read-back interval must be in [1, {Trainer.MaxPendingSteps}], got {ReadbackEvery}");
    }

    public float LearningRateAt(int step)
    {
        if (step < WarmupSteps) return LearningRate * (step + 1) / WarmupSteps;
        if (LrSchedule == "constant") return LearningRate;
        double progress = Math.Clamp((double)(step - WarmupSteps) / Math.Max(1, Steps - WarmupSteps), 0, 1);
        return (float)(MinLearningRate + 0.5 * (LearningRate - MinLearningRate) * (1 + Math.Cos(Math.PI * progress)));
    }

    public float EmaDecayAt(int step) => Math.Min(EmaDecay, (1f + step) / (10f + step));
}
