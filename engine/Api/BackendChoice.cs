using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Engine;

/// <summary>Creates the backend a user asked for and says why (DESIGN.md section 3).</summary>
public static class BackendChoice
{
    public static (IBackend Backend, string Reason) Create(string name)
    {
        switch (name.ToLowerInvariant())
        {
            case "cpu": return (new CpuBackend(), "cpu: forced by --backend cpu");
            case "auto": return (new CpuBackend(), "cpu: auto (no GPU backend is built into this version)");
            case "cuda": case "ilgpu":
                throw new UserInputException($"backend '{name}' is not available in this build");
            default: throw new UserInputException($"unknown backend '{name}': use auto, cpu, cuda or ilgpu");
        }
    }

    /// <summary>One line per backend: available or why not.</summary>
    public static IEnumerable<string> Describe()
    {
        yield return $"cpu:   available ({new CpuBackend().Description})";
        yield return "cuda:  not built into this version";
        yield return "ilgpu: not built into this version";
    }
}
