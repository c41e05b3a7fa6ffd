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

    public static (IBackend Backend, string Reason) Create(string name)
    {
        try { return BackendSelector.Select(name, IlgpuDevice); }
        catch (BackendUnavailableException e) { throw new UserInputException(e.Message); }
        catch (ArgumentException e) { throw new UserInputException(e.Message.Split(" (Parameter")[0]); }
    }

    /// <summary>One line per backend: available or why not.</summary>
    public static IEnumerable<string> Describe() => BackendSelector.Describe().Split('\n');
}
