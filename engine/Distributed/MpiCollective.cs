using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using FastBlockDiff.Interop;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Engine.Distributed;

/// <summary>
/// Collectives over Open MPI's MPI_COMM_WORLD, on host memory (the CPU backend's arrays in place; other backends'
/// buffers through a host copy). Every collective is non-blocking underneath and polled against a deadline, and is
/// preceded by an arrival check: each rank sends (collective number, kind, size) to its right neighbour and waits for
/// its left neighbour's, so a rank that died, hangs or runs a different collective is named by its neighbour instead
/// of leaving the job waiting forever. Only one thread calls into MPI at a time (MPI_THREAD_SERIALIZED).
/// </summary>
public sealed unsafe class MpiCollective : ICollective
{
    const int ArrivalTag = 0x0FBD;
    const int ChunkBytes = 1 << 30; // MPI counts are int: large broadcasts go in 1 GiB pieces

    enum Kind { AllReduceBuffer = 1, AllReduceValues = 2, Broadcast = 3, Barrier = 4 }

    readonly nint _comm;
    readonly object _gate = new();
    // buffers MPI may still write after a timed-out request: on the pinned heap, referenced until the process ends
    readonly long[] _sent = GC.AllocateArray<long>(3, pinned: true), _heard = GC.AllocateArray<long>(3, pinned: true);
    readonly List<object> _abandoned = [];
    float[] _host = [];
    long _collectives;
    bool _broken, _disposed;

    public int Rank { get; }
    public int Size { get; }
    public TimeSpan Timeout { get; }
    public string Description { get; }
    /// <summary>The MPI library's own version line (e.g. "Open MPI v4.1.4").</summary>
    public string Library { get; }
    /// <summary>What MPI_Init_thread provided: a communication thread needs at least <see cref="MpiThreadLevel.Serialized"/>.</summary>
    public MpiThreadLevel ThreadLevel { get; }

    MpiCollective(TimeSpan timeout)
    {
        if (Mpi.Initialized()) throw new InvalidOperationException("MPI is already initialised in this process");
        var level = ThreadLevel = Mpi.InitThread(MpiThreadLevel.Serialized);
        _comm = Mpi.CommWorld;
        Rank = Mpi.Rank(_comm);
        Size = Mpi.Size(_comm);
        Timeout = timeout;
        Library = CollectiveLibraries.Probe(CollectiveLibrary.Mpi).Version ?? "MPI";
        Description = $"MPI ({Library}, thread level {level}), {Size} ranks";
    }

    /// <summary>MPI_Init_thread on MPI_COMM_WORLD; a missing libmpi is a <see cref="UserInputException"/> saying how to install it.</summary>
    public static MpiCollective Join(TimeSpan timeout)
    {
        if (timeout <= TimeSpan.Zero) throw new UserInputException($"--collective-timeout must be positive, got {timeout.TotalSeconds} s");
        try { return new MpiCollective(timeout); }
        catch (CollectiveLibraryMissingException e)
        {
            throw new UserInputException($"this process was started as one rank of a data-parallel job, but {e.Message}");
        }
    }

    int Left => (Rank + Size - 1) % Size;
    int Right => (Rank + 1) % Size;

    public void AllReduce(IBackend backend, FloatView buffer, ReduceOp op)
    {
        lock (_gate)
        {
            if (buffer.Storage is CpuStorage<float> cpu)
            {
                // the CPU backend's array itself: pinned for as long as MPI may touch it
                var pin = GCHandle.Alloc(cpu.Data, GCHandleType.Pinned);
                var span = cpu.Data.AsSpan(buffer.Offset, buffer.Length);
                nint p = pin.AddrOfPinnedObject() + (nint)buffer.Offset * sizeof(float);
                if (Reduce(p, buffer.Length, Mpi.Float, Kind.AllReduceBuffer, pin)) pin.Free();
                if (op == ReduceOp.Average) TensorPrimitives.Multiply(span, 1f / Size, span);
                return;
            }
            if (_host.Length < buffer.Length) _host = GC.AllocateArray<float>(buffer.Length, pinned: true);
            var host = _host.AsSpan(0, buffer.Length);
            backend.Download(buffer, host);
            fixed (float* p = host) Reduce((nint)p, buffer.Length, Mpi.Float, Kind.AllReduceBuffer, _host);
            if (op == ReduceOp.Average) TensorPrimitives.Multiply(host, 1f / Size, host);
            backend.Upload(buffer, host);
        }
    }

    /// <summary>
    /// On the CPU backend a communication thread sums the buckets while the backward pass goes on (the arrays are host
    /// memory MPI reads in place; Open MPI has no progress thread of its own, so the thread's polling drives the
    /// transfer). Other backends' buffers go through host copies on the backend's own thread, and an MPI that gives less
    /// than MPI_THREAD_SERIALIZED allows no second thread: there each bucket is summed as it is started.
    /// </summary>
    public IBucketedAllReduce OpenBuckets(IBackend backend) =>
        backend is CpuBackend && ThreadLevel >= MpiThreadLevel.Serialized
            ? new ThreadedBucketedAllReduce(this, backend) : new BlockingBucketedAllReduce(this, backend);

    public void AllReduce(Span<double> values, ReduceOp op)
    {
        lock (_gate)
        {
            var scratch = GC.AllocateArray<double>(values.Length, pinned: true);
            values.CopyTo(scratch);
            fixed (double* p = scratch) Reduce((nint)p, values.Length, Mpi.Double, Kind.AllReduceValues, scratch);
            for (int i = 0; i < values.Length; i++) values[i] = op == ReduceOp.Average ? scratch[i] / Size : scratch[i];
        }
    }

    public void Broadcast(Span<byte> data, int root)
    {
        if ((uint)root >= (uint)Size) throw new ArgumentOutOfRangeException(nameof(root), $"root {root} outside a world of {Size}");
        lock (_gate)
        {
            var scratch = GC.AllocateArray<byte>(Math.Max(1, Math.Min(data.Length, ChunkBytes)), pinned: true);
            int done = 0;
            do
            {
                int n = Math.Min(ChunkBytes, data.Length - done);
                var piece = data.Slice(done, n);
                if (Rank == root) piece.CopyTo(scratch);
                Arrive(Kind.Broadcast, n);
                nint p = Marshal.UnsafeAddrOfPinnedArrayElement(scratch, 0);
                Mpi.Check(MpiNative.MPI_Ibcast((void*)p, n, Mpi.Byte, root, _comm, out var request), "MPI_Ibcast");
                Finish(ref request, $"broadcast of {n:N0} bytes from rank {root}", scratch);
                if (Rank != root) scratch.AsSpan(0, n).CopyTo(piece);
                done += n;
            } while (done < data.Length);
        }
    }

    public void Barrier()
    {
        lock (_gate)
        {
            Arrive(Kind.Barrier, 0);
            Mpi.Check(MpiNative.MPI_Barrier(_comm), "MPI_Barrier");
        }
    }

    /// <summary>Arrival check, then MPI_Iallreduce(MPI_IN_PLACE, sum) polled against the deadline. False when it timed out.</summary>
    bool Reduce(nint buffer, int count, nint datatype, Kind kind, object keepAlive)
    {
        Arrive(kind, count);
        Mpi.Check(MpiNative.MPI_Iallreduce(Mpi.InPlace, (void*)buffer, count, datatype, Mpi.Sum, _comm, out var request), "MPI_Iallreduce");
        return Finish(ref request, $"all-reduce of {count:N0} values", keepAlive);
    }

    bool Finish(ref nint request, string what, object keepAlive)
    {
        // the arrival check already waited up to Timeout for the slowest neighbour; the transfer itself gets as long again
        if (Mpi.WaitWithin(ref request, Timeout, what)) return true;
        _broken = true;
        _abandoned.Add(keepAlive);
        // every rank arrived, so a peer stopped inside the collective; with two ranks that can only be the other one
        int? culprit = Size == 2 ? 1 - Rank : null;
        throw new CollectiveFailedException($"rank {Rank}: {what} (collective #{_collectives}) did not complete within {Seconds(Timeout)}; every rank arrived, so " +
            (culprit is { } c ? $"rank {c} hangs inside it or the transport failed" : "a peer hangs inside it or the transport failed"), culprit);
    }

    /// <summary>
    /// Tells the right neighbour that this rank reached collective number n (of this kind and size) and waits for the
    /// left neighbour to say the same. With one rank per neighbour pair, the rank that never arrives is named.
    /// </summary>
    void Arrive(Kind kind, long count)
    {
        _collectives++;
        if (Size == 1) return;
        if (_broken) throw new CollectiveFailedException($"rank {Rank}: an earlier collective failed; the job cannot continue");
        _sent[0] = _collectives; _sent[1] = (long)kind; _sent[2] = count;
        fixed (long* s = _sent, h = _heard)
        {
            Mpi.Check(MpiNative.MPI_Irecv(h, 3, Mpi.Int64, Left, ArrivalTag, _comm, out var heard), "MPI_Irecv");
            Mpi.Check(MpiNative.MPI_Isend(s, 3, Mpi.Int64, Right, ArrivalTag, _comm, out var sent), "MPI_Isend");
            if (!Mpi.WaitWithin(ref heard, Timeout, "MPI_Irecv"))
            {
                _broken = true;
                throw new CollectiveFailedException($"rank {Left} did not arrive at collective #{_collectives} ({Describe(kind, count)}) within {Seconds(Timeout)}: " +
                    $"it died, hangs, or is busy for longer than the collective timeout allows (rank {Rank} waited for it)", Left);
            }
            if (_heard[0] != _collectives || _heard[1] != (long)kind || _heard[2] != count)
            {
                _broken = true;
                throw new CollectiveFailedException($"rank {Left} is out of step: it is at collective #{_heard[0]} ({Describe((Kind)_heard[1], _heard[2])}) " +
                    $"while rank {Rank} is at #{_collectives} ({Describe(kind, count)})", Left);
            }
            if (!Mpi.WaitWithin(ref sent, Timeout, "MPI_Isend"))
            {
                _broken = true;
                throw new CollectiveFailedException($"rank {Right} did not take rank {Rank}'s arrival at collective #{_collectives} within {Seconds(Timeout)}", Right);
            }
        }
    }

    static string Describe(Kind kind, long count) => kind switch
    {
        Kind.AllReduceBuffer => $"all-reduce of a {count:N0}-float buffer",
        Kind.AllReduceValues => $"all-reduce of {count} values",
        Kind.Broadcast => $"broadcast of {count:N0} bytes",
        Kind.Barrier => "barrier",
        _ => $"unknown collective {(int)kind}",
    };

    static string Seconds(TimeSpan t) => $"{t.TotalSeconds:0.#} s";

    public void Abort(string message, int exitCode)
    {
        Console.Out.Flush();
        Console.Error.WriteLine($"error: rank {Rank} of {Size}: {message}");
        Console.Error.WriteLine($"rank {Rank}: aborting all {Size} ranks (MPI_Abort)");
        Console.Error.Flush();
        // a communication thread may be polling a bucket's all-reduce: wait for it briefly, then abort regardless
        bool serialised = Monitor.TryEnter(_gate, TimeSpan.FromSeconds(1));
        Mpi.Abort(_comm, exitCode);
        if (serialised) Monitor.Exit(_gate);
        Environment.Exit(exitCode); // MPI_Abort does not return when it works
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            // after a failed collective, finalising would wait for the peer that is gone: the caller aborts instead
            if (!_broken && !Mpi.Finalized()) Mpi.Finalize();
        }
    }
}
