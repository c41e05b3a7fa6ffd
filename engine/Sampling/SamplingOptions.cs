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
    /// <summary>Time the model (network and output head) and the sampler apart, into <see cref="SampleResult.ModelSeconds"/>
    /// and <see cref="SampleResult.SamplerSeconds"/>; synchronises the backend at every boundary (for benchmarks).</summary>
    public bool MeasureSplit { get; init; }

    public void Validate()
    {
        static void Require(bool ok, string message) { if (!ok) throw new UserInputException(message); }
        Require(MaxTokens > 0, $"--max-tokens must be positive, got {MaxTokens}");
        Require(StepsPerBlock >= 0, $"--steps must be ≥ 0 (0 = the block size), got {StepsPerBlock}");
        Require(TopP is > 0f and <= 1f, $"--top-p must be in (0, 1], got {TopP}");
        Require(float.IsFinite(Temperature) && Temperature >= 0, $"--temperature must be a number ≥ 0, got {Temperature}");
        Require(BatchSize > 0, $"--batch must be positive, got {BatchSize}");
        Require(MaxRegenerations >= 0, $"--max-regenerations must be ≥ 0, got {MaxRegenerations}");
        Require(ConfidenceThreshold is > 0f and <= 1f, $"--confidence must be in (0, 1], got {ConfidenceThreshold}");
        Require(EntropyThreshold is null || (float.IsFinite(EntropyThreshold.Value) && EntropyThreshold >= 0),
            $"--entropy-stop must be a number ≥ 0 nats (0 = never), got {EntropyThreshold}");
        Require(EntropyWindow > 0, $"entropy window must be positive, got {EntropyWindow}");
    }
}

/// <summary>Why a sequence stopped.</summary>
public enum StopReason { MaxTokens, Eos, LowEntropy, Cancelled }

/// <summary>Output of a sampling run.</summary>
public sealed record SampleResult(int[][] Tokens, StopReason[] Reasons, int Nfe, int CachePasses, int GeneratedTokens, TimeSpan Elapsed)
{
    /// <summary>With <see cref="SamplingOptions.MeasureSplit"/>: seconds in the network and its output head; else 0.</summary>
    public double ModelSeconds { get; init; }
    /// <summary>With <see cref="SamplingOptions.MeasureSplit"/>: seconds in everything else (drawing tokens, choosing positions, stop rules); else 0.</summary>
    public double SamplerSeconds { get; init; }

    public double TokensPerSecond => GeneratedTokens / Math.Max(1e-9, Elapsed.TotalSeconds);
}
