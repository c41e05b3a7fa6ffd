using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace FastBlockDiff.Kernels.Ilgpu;

/// <summary>What ILGPU can see on this machine, and why a GPU accelerator is missing when it is.</summary>
public static class IlgpuProbe
{
    /// <summary>Count of devices of one ILGPU accelerator type, with any enumeration error.</summary>
    public static int Count(AcceleratorType type, out string? error)
    {
        error = null;
        try
        {
            using var ctx = Context.Create(b => { if (type == AcceleratorType.Cuda) b.Cuda(); else b.OpenCL(); });
            return ctx.Devices.Count(d => d.AcceleratorType == type);
        }
        catch (Exception e)
        {
            error = $"{e.GetType().Name}: {e.Message}";
            return 0;
        }
    }

    /// <summary>The missing piece when ILGPU finds no CUDA device.</summary>
    public static string WhyNoCuda()
    {
        string[] names = OperatingSystem.IsWindows() ? ["nvcuda.dll"] : ["libcuda.so.1", "libcuda.so"];
        if (!names.Any(CanLoad))
            return $"the NVIDIA driver library ({string.Join(" or ", names)}) is not installed or not on the loader path";
        return "the NVIDIA driver library loads but reports no CUDA device ILGPU 1.5 supports (no GPU visible, or its compute capability is unsupported)";
    }

    /// <summary>The missing piece when ILGPU finds no OpenCL device.</summary>
    public static string WhyNoOpenCl()
    {
        string[] names = OperatingSystem.IsWindows() ? ["OpenCL.dll"] : ["libOpenCL.so.1", "libOpenCL.so"];
        if (!names.Any(CanLoad))
            return $"no OpenCL ICD loader ({string.Join(" or ", names)}) is installed";
        return "the OpenCL loader is present but no platform offers a device ILGPU supports (OpenCL 2.0+ with the required extensions)";
    }

    static bool CanLoad(string name)
    {
        if (!NativeLibrary.TryLoad(name, out var h)) return false;
        NativeLibrary.Free(h);
        return true;
    }
}
