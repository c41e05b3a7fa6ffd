namespace FastBlockDiff.Interop;

/// <summary>One device as the driver reports it.</summary>
public sealed record CudaDeviceInfo(int Ordinal, string Name, int Major, int Minor, int MultiprocessorCount, long TotalMemory)
{
    public override string ToString() => $"#{Ordinal} {Name}, sm_{Major}{Minor}, {MultiprocessorCount} SMs, {TotalMemory / (1 << 20)} MiB";
}

/// <summary>What <c>fastblockdiff info</c> prints: each library found or not (with the file or the reason) and the devices.</summary>
public sealed record CudaAvailabilityReport(LibraryProbe Driver, LibraryProbe Nvrtc, LibraryProbe CublasLt,
    IReadOnlyList<CudaDeviceInfo> Devices, string? DeviceError)
{
    /// <summary>All three libraries load and at least one device exists.</summary>
    public bool Usable => Driver.Found && Nvrtc.Found && CublasLt.Found && Devices.Count > 0;

    /// <summary>Why the CUDA backend cannot start, or null when it can.</summary>
    public string? WhyNot => Usable ? null : string.Join("; ", new[]
    {
        Driver.Found ? null : Driver.ToString(),
        Nvrtc.Found ? null : Nvrtc.ToString(),
        CublasLt.Found ? null : CublasLt.ToString(),
        Driver.Found && Devices.Count == 0 ? $"no CUDA device ({DeviceError ?? "device count is 0"})" : null,
    }.Where(s => s != null));

    public override string ToString()
    {
        var lines = new List<string> { Driver.ToString(), Nvrtc.ToString(), CublasLt.ToString() };
        if (DeviceError != null) lines.Add($"devices: {DeviceError}");
        lines.AddRange(Devices.Select(d => $"device {d}"));
        return string.Join(Environment.NewLine, lines);
    }
}

public static class CudaAvailability
{
    /// <summary>Probes the libraries and enumerates devices. Never throws.</summary>
    public static CudaAvailabilityReport Probe()
    {
        var drv = CudaLibraries.Probe(CudaLibrary.Driver);
        var nvrtc = CudaLibraries.Probe(CudaLibrary.Nvrtc);
        var lt = CudaLibraries.Probe(CudaLibrary.CublasLt);
        var devices = new List<CudaDeviceInfo>();
        string? error = null;
        if (drv.Found)
        {
            try
            {
                int n = Cu.DeviceCount();
                for (int i = 0; i < n; i++)
                {
                    int d = Cu.DeviceGet(i);
                    var (ma, mi) = Cu.ComputeCapability(d);
                    devices.Add(new CudaDeviceInfo(i, Cu.DeviceName(d), ma, mi, Cu.Attribute(d, CuDeviceAttribute.MultiprocessorCount), Cu.TotalMemory(d)));
                }
            }
            catch (Exception e) { error = e.Message; }
        }
        else error = "driver not loaded";
        return new CudaAvailabilityReport(drv, nvrtc, lt, devices, error);
    }
}
