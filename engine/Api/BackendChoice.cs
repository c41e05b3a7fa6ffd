using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine;

/// <summary>Creates the backend a user asked for and says why (DESIGN.md section 3), through <see cref="BackendSelector"/>.</summary>
public static class BackendChoice
{
    /// <summary>
    /// The ILGPU accelerator for <c>--backend ilgpu</c> (and for auto's ILGPU step): auto, cuda, opencl or cpu.
    /// Set by the CLI's <c>--ilgpu-device</c>; defaults to FASTBLOCKDIFF_ILGPU_DEVICE or auto.
    /// </summary>
    public static string IlgpuDevice { get; set; } = Environment.GetEnvironmentVariable("FASTBLOCKDIFF_ILGPU_DEVICE") is { Length: > 0 } d ? d : "auto";

    /// <summary>
    /// Arithmetic: auto (bf16 on CUDA, fp32 on CPU/ILGPU, which have no bf16 path), bf16 or fp32. Set by the CLI's
    /// <c>--precision</c>; defaults to FASTBLOCKDIFF_PRECISION or auto. A request's own precision overrides it.
    /// </summary>
    public static string Precision { get; set; } = Environment.GetEnvironmentVariable("FASTBLOCKDIFF_PRECISION") is { Length: > 0 } p ? p : "auto";

    public static (IBackend Backend, string Reason) Create(string name, string? precision = null)
    {
        try { return BackendSelector.Select(name, IlgpuDevice, precision ?? Precision); }
        catch (BackendUnavailableException e) { throw new UserInputException(e.Message); }
        catch (ArgumentException e) { throw new UserInputException(e.Message.Split(" (Parameter")[0]); }
    }

    /// <summary>One line per backend: available or why not.</summary>
    public static IEnumerable<string> Describe() => BackendSelector.Describe().Split('\n');
}
