namespace FastBlockDiff.Interop;

/// <summary>A CUDA driver, NVRTC or cuBLASLt call failed. The message names the call and the library's error string.</summary>
public class CudaException(string call, string library, int code, string errorName, string errorText, string? detail = null)
    : Exception($"{call} failed: {errorName} ({code}): {errorText}{(detail is null ? "" : "\n" + detail)}")
{
    public string Call { get; } = call;
    public string LibraryName { get; } = library;
    public int Code { get; } = code;
    public string ErrorName { get; } = errorName;
}

/// <summary>A native CUDA library could not be found or loaded; the message lists what was tried.</summary>
public sealed class CudaLibraryMissingException(LibraryProbe probe)
    : Exception($"CUDA library {probe.Library} unavailable: {probe.Reason}" +
        (probe.Attempts.Count > 0 ? $" [tried: {string.Join("; ", probe.Attempts)}]" : ""))
{
    public LibraryProbe Probe { get; } = probe;
}
