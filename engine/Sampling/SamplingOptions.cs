namespace FastBlockDiff.Engine.Sampling;

/// <summary>How masked positions of a block are revealed.</summary>
public enum SamplerKind
{
    /// <summary>DDPM ancestral update: each masked token is revealed with probability (α_s-α_t)/(1-α_t) per step.</summary>
    Ddpm,
    /// <summary>One uniformly chosen masked token per step (the reference's default, and ours).</summary>
    FirstHitting,
    /// <summary>Every masked position whose sampled token has probability above a threshold, at least one per step.</summary>
    Confidence,
}

/// <summary>Options of <see cref="BlockSampler"/>.</summary>
public sealed record SamplingOptions
{
    /// <summary>Tokens to generate after the prompt (the hard length limit).</summary>
    public int MaxTokens { get; init; } = 256;
    /// <summary>Denoising steps T per block (DDPM; first-hitting always takes one step per masked token). 0 = the block size.</summary>
    public int StepsPerBlock { get; init; }
    public float Temperature { get; init; } = 1f;
    public float TopP { get; init; } = 0.9f;
    /// <summary>Reveal rule; first-hitting (one token per step) is the reference's default.</summary>
    public SamplerKind Kind { get; init; } = SamplerKind.FirstHitting;
    public float ConfidenceThreshold { get; init; } = 0.9f;
    public bool UseKvCache { get; init; } = true;
    public ulong Seed { get; init; } = 0;
    public int BatchSize { get; init; } = 1;
    /// <summary>true: the reference's variable-length mode (stop after the first generated EOS; on low entropy cut the
    /// last window off). false: its fixed-length mode (EOS does not stop; a low-entropy sample is regenerated).</summary>
    public bool StopOnEos { get; init; } = true;
    /// <summary>Fixed-length mode: how often a low-entropy sample is discarded and drawn again (the reference tries 10 times).</summary>
    public int MaxRegenerations { get; init; } = 10;
    /// <summary>Stop a sequence when the entropy (nats) of the token counts of its last EntropyWindow tokens falls below this. null = min(4, 0.4·ln V); 0 = never.</summary>
    public float? EntropyThreshold { get; init; }
    public int EntropyWindow { get; init; } = 256;

    public void Validate()
    {
        if (MaxTokens <= 0) throw new UserInputException($"--max-tokens must be positive, got {MaxTokens}");
        if (StepsPerBlock < 0) throw new UserInputException($"--steps must be ≥ 0, got {StepsPerBlock}");
        if (!(TopP > 0 && TopP <= 1)) throw new UserInputException($"--top-p must be in (0, 1], got {TopP}");
        if (Temperature < 0) throw new UserInputException($"--temperature must be ≥ 0, got {Temperature}");
        if (BatchSize <= 0) throw new UserInputException($"--batch must be positive, got {BatchSize}");
        if (MaxRegenerations < 0) throw new UserInputException($"--max-regenerations must be ≥ 0, got {MaxRegenerations}");
        if (ConfidenceThreshold is <= 0 or > 1) throw new UserInputException($"--confidence must be in (0, 1], got {ConfidenceThreshold}");
    }
}

/// <summary>Why a sequence stopped.</summary>
public enum StopReason { MaxTokens, Eos, LowEntropy, Cancelled }

/// <summary>Output of a sampling run.</summary>
public sealed record SampleResult(int[][] Tokens, StopReason[] Reasons, int Nfe, int CachePasses, int GeneratedTokens, TimeSpan Elapsed)
{
    public double TokensPerSecond => GeneratedTokens / Math.Max(1e-9, Elapsed.TotalSeconds);
}
