using FastBlockDiff.Interop;

namespace FastBlockDiff.Kernels.Cuda;

/// <summary>Ordering between this backend's stream and another (a collective's communication stream), without a host wait.</summary>
public sealed partial class CudaBackend
{
    /// <summary>Records <paramref name="e"/> after the work queued on this backend's stream so far; another stream can wait for it.</summary>
    public void RecordEvent(CudaEvent e) { Enter(); e.Record(stream); }

    /// <summary>Makes the work queued on this backend's stream from now on wait for <paramref name="e"/> (recorded on another stream).</summary>
    public void WaitEvent(CudaEvent e) { Enter(); stream.Wait(e); }
}
