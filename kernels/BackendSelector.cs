using System.Text;
using FastBlockDiff.Kernels.Cpu;
using FastBlockDiff.Kernels.Ilgpu;
using ILGPU.Runtime;

namespace FastBlockDiff.Kernels;

/// <summary>
/// Picks the backend (DESIGN.md section 3): auto = CUDA if it starts, else ILGPU on a GPU accelerator, else CPU.
/// A forced backend that cannot start throws <see cref="BackendUnavailableException"/> naming the missing piece.
/// </summary>
public static class BackendSelector
{
    /// <param name="kind">auto, cpu, cuda or ilgpu.</param>
    /// <param name="ilgpuDevice">auto, cuda, opencl or cpu: the ILGPU accelerator when kind is ilgpu.</param>
    /// <param name="precision">auto (bf16 on CUDA, fp32 elsewhere), bf16 (CUDA only) or fp32.</param>
    /// <returns>The started backend and one line saying why it was chosen (and why the others were not).</returns>
    public static (IBackend backend, string reason) Select(string kind = "auto", string ilgpuDevice = "auto", string precision = "auto")
    {
        var wanted = PrecisionChoice.Parse(precision);
        var (backend, reason) = SelectBackend(kind, ilgpuDevice);
        if (backend is Cuda.CudaBackend cuda)
        {
            cuda.Precision = wanted ?? Precision.Bf16;
            return (backend, reason + (wanted == null ? "; precision bf16 (the CUDA default; --precision fp32 for the reference arithmetic)" : $"; precision {cuda.Precision.ToString().ToLowerInvariant()}"));
        }
        if (wanted == Precision.Bf16)
        {
            backend.Dispose();
            throw new BackendUnavailableException($"--precision bf16 needs the cuda backend; {backend.Name} computes in fp32 only (use --precision fp32 or auto)");
        }
        return (backend, reason + $"; precision fp32 ({backend.Name} has no bf16 path)");
    }

    static (IBackend backend, string reason) SelectBackend(string kind, string ilgpuDevice)
    {
        kind = (kind ?? "auto").Trim().ToLowerInvariant();
        ilgpuDevice = (ilgpuDevice ?? "auto").Trim().ToLowerInvariant();
        if (ilgpuDevice is not ("auto" or "cuda" or "opencl" or "cpu"))
            throw new ArgumentException($"unknown ILGPU device '{ilgpuDevice}' (expected auto, cuda, opencl or cpu)", nameof(ilgpuDevice));
        switch (kind)
        {
            case "cpu":
                return (new CpuBackend(), "cpu: forced with --backend cpu");
            case "cuda":
            {
                var (be, why) = TryCuda();
                return be != null ? (be, "cuda: forced with --backend cuda")
                    : throw new BackendUnavailableException($"--backend cuda cannot start: {why}");
            }
            case "ilgpu":
            {
                try
                {
                    var be = new IlgpuBackend(ilgpuDevice);
                    return (be, $"ilgpu: forced with --backend ilgpu ({be.Description})");
                }
                catch (Exception e) when (e is not BackendUnavailableException)
                {
                    throw new BackendUnavailableException($"--backend ilgpu --ilgpu-device {ilgpuDevice} cannot start: {e.Message}", e);
                }
            }
            case "auto":
            {
                var (cuda, whyNotCuda) = TryCuda();
                if (cuda != null) return (cuda, "cuda: auto picked the native CUDA backend (driver, NVRTC and cuBLASLt found)");
                string whyNotIlgpu = "";
                try
                {
                    var dev = ilgpuDevice == "auto" ? GpuIlgpuDevice(out whyNotIlgpu) : ilgpuDevice;
                    if (dev != null)
                    {
                        var be = new IlgpuBackend(dev);
                        if (be.AcceleratorType != AcceleratorType.CPU || ilgpuDevice == "cpu")
                            return (be, $"ilgpu: auto picked ILGPU ({be.Description}); cuda not used: {whyNotCuda}");
                        be.Dispose();
                        whyNotIlgpu = "ILGPU has no GPU accelerator";
                    }
                }
                catch (Exception e) { whyNotIlgpu = $"ILGPU failed to start: {e.Message}"; }
                return (new CpuBackend(), $"cpu: auto fell back to the managed CPU backend; cuda not used: {whyNotCuda}; ilgpu not used: {whyNotIlgpu}");
            }
            default:
                throw new ArgumentException($"unknown backend '{kind}' (expected auto, cpu, cuda or ilgpu)", nameof(kind));
        }
    }

    /// <summary>Starts the native CUDA backend, or says why it cannot (driver, NVRTC, cuBLASLt, no device...).</summary>
    static (IBackend? backend, string whyNot) TryCuda()
    {
        if (Cuda.CudaBackend.Unavailable() is { } why) return (null, why);
        try { return (new Cuda.CudaBackend(), ""); }
        catch (Exception e) { return (null, $"{e.GetType().Name}: {e.Message}"); }
    }

    /// <summary>"cuda" or "opencl" when ILGPU finds such a device, else null with the reason.</summary>
    static string? GpuIlgpuDevice(out string whyNot)
    {
        int nCuda = IlgpuProbe.Count(AcceleratorType.Cuda, out var eCuda);
        if (nCuda > 0) { whyNot = ""; return "cuda"; }
        int nCl = IlgpuProbe.Count(AcceleratorType.OpenCL, out var eCl);
        if (nCl > 0) { whyNot = ""; return "opencl"; }
        whyNot = $"no GPU accelerator: CUDA: {eCuda ?? IlgpuProbe.WhyNoCuda()}; OpenCL: {eCl ?? IlgpuProbe.WhyNoOpenCl()}";
        return null;
    }

    /// <summary>Every backend with found / not found and why, for <c>fastblockdiff info</c>.</summary>
    public static string Describe()
    {
        var sb = new StringBuilder();
        var (be, why) = TryCuda();
        if (be != null) { sb.AppendLine($"cuda:  found: {be.Description}"); be.Dispose(); }
        else sb.AppendLine("cuda:  not found:");
        foreach (var line in FastBlockDiff.Interop.CudaAvailability.Probe().ToString().Split(Environment.NewLine))
            sb.AppendLine($"       {line}");
        int nCuda = IlgpuProbe.Count(AcceleratorType.Cuda, out var eCuda);
        sb.AppendLine(nCuda > 0 ? $"ilgpu-cuda:   found: {nCuda} device(s)"
            : $"ilgpu-cuda:   not found: {eCuda ?? IlgpuProbe.WhyNoCuda()}");
        int nCl = IlgpuProbe.Count(AcceleratorType.OpenCL, out var eCl);
        sb.AppendLine(nCl > 0 ? $"ilgpu-opencl: found: {nCl} device(s)"
            : $"ilgpu-opencl: not found: {eCl ?? IlgpuProbe.WhyNoOpenCl()}");
        sb.AppendLine("ilgpu-cpu:    found: ILGPU CPU accelerator (simulated GPU, for testing; slow)");
        sb.AppendLine($"cpu:   found: {new CpuBackend().Description}");
        return sb.ToString().TrimEnd();
    }
}

/// <summary>A backend that was asked for explicitly cannot start; the message names the missing piece.</summary>
public sealed class BackendUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
