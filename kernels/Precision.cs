namespace FastBlockDiff.Kernels;

/// <summary>
/// Arithmetic of a backend (DESIGN.md section 3). Fp32: every op in fp32, the reference mode. Bf16 (CUDA only): GEMM
/// operands and attention q/k/v in bf16 on tensor cores with fp32 accumulation, persistent bf16 weight copies written
/// by AdamW; master weights, Adam moments, LayerNorm, softmax statistics and the loss stay fp32.
/// </summary>
public enum Precision { Fp32, Bf16 }

/// <summary>The --precision values: auto (bf16 on CUDA, fp32 elsewhere), bf16, fp32.</summary>
public static class PrecisionChoice
{
    /// <summary>Parses auto/bf16/fp32; null for auto.</summary>
    public static Precision? Parse(string? text) => (text ?? "auto").Trim().ToLowerInvariant() switch
    {
        "auto" or "" => null,
        "bf16" => Precision.Bf16,
        "fp32" => Precision.Fp32,
        var other => throw new ArgumentException($"unknown precision '{other}' (expected auto, bf16 or fp32)"),
    };
}
