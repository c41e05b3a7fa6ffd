namespace FastBlockDiff.Engine.Training;

/// <summary>Optimisation settings. Defaults follow bd3lms where they make sense at small scale.</summary>
public sealed record TrainOptions
{
    public int Steps { get; init; } = 1000;
    public int BatchSize { get; init; } = 8;
    /// <summary>Micro-batches of BatchSize rows whose gradients are averaged before each optimiser step (reaches the
    /// reference's batch of 512 on small memory).</summary>
    public int GradAccumulation { get; init; } = 1;
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
    /// <summary>Data-parallel gradient all-reduce in buckets of this many MB, each started as soon as the backward pass
    /// has finished its gradients (overlapping the rest of the pass); 0 = one all-reduce of the whole buffer after it.</summary>
    public double AllReduceBucketMb { get; init; } = Distributed.GradientBuckets.DefaultMegabytes;
    /// <summary>Steps between reads of loss and gradient norm from the device (0 = auto: every step on the CPU, 16 on a
    /// GPU, whose step then never waits for the device); a divergence is detected within this many steps.</summary>
    public int ReadBackEvery { get; init; } = 0;

    public void Validate()
    {
        static void Require(bool ok, string message) { if (!ok) throw new UserInputException(message); }
        Require(Steps > 0, $"--steps must be positive, got {Steps}");
        Require(BatchSize > 0, $"--batch-size must be positive, got {BatchSize}");
        Require(GradAccumulation > 0, $"--grad-accum must be positive, got {GradAccumulation}");
        Require(float.IsFinite(LearningRate) && LearningRate > 0, $"--lr must be a positive number, got {LearningRate}");
        Require(WarmupSteps >= 0, $"--warmup must be ≥ 0 steps, got {WarmupSteps}");
        Require(LrSchedule is "constant" or "cosine", $"--lr-schedule must be constant or cosine, got '{LrSchedule}'");
        Require(float.IsFinite(MinLearningRate) && MinLearningRate >= 0, $"minimum learning rate must be ≥ 0, got {MinLearningRate}");
        Require(Beta1 is >= 0f and < 1f && Beta2 is >= 0f and < 1f, $"Adam betas must be in [0, 1), got ({Beta1}, {Beta2})");
        Require(float.IsFinite(Epsilon) && Epsilon > 0, $"Adam epsilon must be positive, got {Epsilon}");
        Require(float.IsFinite(WeightDecay) && WeightDecay >= 0, $"--weight-decay must be a number ≥ 0, got {WeightDecay}");
        Require(float.IsFinite(GradClip) && GradClip >= 0, $"--grad-clip must be a number ≥ 0 (0 = no clipping), got {GradClip}");
        Require(EmaDecay is >= 0f and < 1f, $"--ema must be in [0, 1), got {EmaDecay}");
        Require(EvalEvery >= 0, $"--eval-every must be ≥ 0 steps (0 = only at the end), got {EvalEvery}");
        Require(EvalBatches > 0, $"evaluation batches must be positive, got {EvalBatches}");
        Require(FinalEvalSequences >= 0, $"final evaluation sequences must be ≥ 0 (0 = all), got {FinalEvalSequences}");
        Require(CheckpointEvery >= 0, $"--checkpoint-every must be ≥ 0 steps (0 = only at the end), got {CheckpointEvery}");
        Require(ReadBackEvery >= 0, $"read-back interval must be ≥ 0 steps (0 = auto), got {ReadBackEvery}");
        Require(ScheduleSearchEvery >= 0, $"--schedule-search-every must be ≥ 0 steps (0 = never), got {ScheduleSearchEvery}");
        Distributed.GradientBuckets.Validate(AllReduceBucketMb);
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
