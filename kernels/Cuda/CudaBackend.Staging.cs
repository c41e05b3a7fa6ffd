using FastBlockDiff.Interop;

namespace FastBlockDiff.Kernels.Cuda;

/// <summary>
/// Uploads without waiting: the bytes are copied into a pinned host ring and cuMemcpyHtoDAsync takes them from there in
/// stream order, so the caller may reuse its span at once and the host never waits for the device. The ring is a byte
/// ring of <see cref="StagingBytes"/>: each upload takes the next free range and records an event behind its copy; a
/// range is written again only once the events of the copies that read it are done, which they are unless the host runs
/// more than a ring's worth of uploads ahead (16 MiB: a few hundred token batches of the small model). Uploads larger
/// than <see cref="StagingLargest"/> copy from the caller's memory and synchronise.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    const long StagingBytes = 16 << 20, StagingLargest = 2 << 20, StagingAlign = 256;
    PinnedHostMemory? staging;
    long stagingHead;
    // the copies still reading the ring, oldest first: their byte range and the event behind each
    readonly Queue<(long Start, long End, CudaEvent Done)> stagingInFlight = new();
    readonly Stack<CudaEvent> stagingEvents = new();

    /// <summary>Uploads that went through the pinned ring (for tests).</summary>
    public long AsyncUploads { get; private set; }
    /// <summary>Ring uploads that found their range still being read by an earlier copy and waited for it (normally none).</summary>
    public long StagingWaits { get; private set; }

    void UploadBytes(ulong dst, ReadOnlySpan<byte> src, long capacity)
    {
        if (src.Length > capacity) throw new ArgumentException($"upload of {src.Length} bytes into a view of {capacity}");
        if (src.Length == 0) return;
        Enter();
        if (src.Length <= StagingLargest)
        {
            staging ??= PinnedHostMemory.Allocate(StagingBytes);
            long start = (stagingHead + StagingAlign - 1) / StagingAlign * StagingAlign, skipped = StagingBytes;
            if (start + src.Length > StagingBytes) { skipped = stagingHead; start = 0; }   // wrap: the tail [head, end) is passed over
            long end = start + src.Length;
            ReleaseStaging(start, end, skipped);
            byte* p = staging.Pointer + start;
            src.CopyTo(new Span<byte>(p, src.Length));
            Cu.CopyHtoDAsync(dst, p, src.Length, stream);
            var done = stagingEvents.Count > 0 ? stagingEvents.Pop() : CudaEvent.Create(timing: false);
            done.Record(stream);
            stagingInFlight.Enqueue((start, end, done));
            stagingHead = end;
            AsyncUploads++;
            return;
        }
        fixed (byte* p = src) { Cu.CopyHtoDAsync(dst, p, src.Length, stream); stream.Synchronize(); }
    }

    /// <summary>
    /// Frees the ring's bytes [start, end) for writing: the copies reading them must be done (waits only if not). The
    /// copies sit in the ring in queue order, oldest first from just past the head, so the ones in the way are at the
    /// front of the queue; after a wrap the ones in the passed-over tail [skipped, end of ring) come first.
    /// </summary>
    void ReleaseStaging(long start, long end, long skipped)
    {
        while (stagingInFlight.TryPeek(out var f))
        {
            bool overlaps = (f.Start < end && start < f.End) || f.End > skipped;
            // copies are released oldest first; a finished one is released even when it does not overlap (keeps the queue short)
            if (!overlaps && !f.Done.IsDone()) break;
            if (overlaps && !f.Done.IsDone()) { f.Done.Synchronize(); StagingWaits++; }
            stagingInFlight.Dequeue();
            stagingEvents.Push(f.Done);
        }
    }

    void DisposeStaging()
    {
        while (stagingInFlight.TryDequeue(out var f)) f.Done.Dispose();
        while (stagingEvents.TryPop(out var e)) e.Dispose();
        staging?.Dispose();
        staging = null;
    }
}
