using FastBlockDiff.Interop;

namespace FastBlockDiff.Kernels.Cuda;

/// <summary>
/// Uploads without waiting: the bytes are copied into a slot of a pinned host ring and cuMemcpyHtoDAsync takes them
/// from there in stream order, so the caller may reuse its span at once and the host never waits for the device
/// (a slot is reused only after the event recorded behind its last copy, normally long done). Uploads larger than a
/// slot copy from the caller's memory and synchronise.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    const int StagingSlots = 8;
    const long StagingSlotBytes = 2 << 20;
    PinnedHostMemory? staging;
    readonly CudaEvent?[] stagingDone = new CudaEvent?[StagingSlots];
    int nextSlot;

    /// <summary>Uploads that went through the pinned ring without a host wait (for tests).</summary>
    public long AsyncUploads { get; private set; }

    void UploadBytes(ulong dst, ReadOnlySpan<byte> src, long capacity)
    {
        if (src.Length > capacity) throw new ArgumentException($"upload of {src.Length} bytes into a view of {capacity}");
        if (src.Length == 0) return;
        Enter();
        if (src.Length <= StagingSlotBytes)
        {
            staging ??= PinnedHostMemory.Allocate(StagingSlots * StagingSlotBytes);
            int slot = nextSlot;
            nextSlot = (nextSlot + 1) % StagingSlots;
            var done = stagingDone[slot] ??= CudaEvent.Create(timing: false);
            done.Synchronize();
            byte* p = staging.Pointer + slot * StagingSlotBytes;
            src.CopyTo(new Span<byte>(p, src.Length));
            Cu.CopyHtoDAsync(dst, p, src.Length, stream);
            done.Record(stream);
            AsyncUploads++;
            return;
        }
        fixed (byte* p = src) { Cu.CopyHtoDAsync(dst, p, src.Length, stream); stream.Synchronize(); }
    }

    void DisposeStaging()
    {
        for (int i = 0; i < StagingSlots; i++) { stagingDone[i]?.Dispose(); stagingDone[i] = null; }
        staging?.Dispose();
        staging = null;
    }
}
