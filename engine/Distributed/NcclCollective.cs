using FastBlockDiff.Interop;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cuda;

namespace FastBlockDiff.Engine.Distributed;

/// <summary>
/// NCCL all-reduce of the CUDA backend's device buffers, one GPU per rank; everything else (host values, broadcasts,
/// barriers, the arrival checks that name a missing rank) goes through the MPI world that bootstrapped it: rank 0
/// makes the ncclUniqueId and broadcasts it over MPI, then every rank joins with ncclCommInitRank. The all-reduce
/// runs on its own stream after the backend's queued work, and is polled against the same timeout as MPI; a
/// timed-out communicator is aborted (ncclCommAbort) so no rank waits forever.
/// </summary>
public sealed class NcclCollective : ICollective
{
    readonly ICollective _host;
    readonly CudaBackend _cuda;
    readonly CudaStream _stream;
    readonly CudaEvent _backendDone;
    nint _comm;
    bool _broken;

    public int Rank => _host.Rank;
    public int Size => _host.Size;
    public TimeSpan Timeout => _host.Timeout;
    public string Description { get; }

    /// <summary>
    /// Forms the NCCL communicator of <paramref name="host"/>'s ranks on <paramref name="cuda"/>'s device (collective:
    /// every rank calls it). The caller keeps ownership of <paramref name="host"/>.
    /// </summary>
    public NcclCollective(ICollective host, CudaBackend cuda)
    {
        _host = host; _cuda = cuda;
        try { CollectiveLibraries.Require(CollectiveLibrary.Nccl); }
        catch (CollectiveLibraryMissingException e) { throw new UserInputException($"{e.Message}; or pass --collective mpi to all-reduce through host memory"); }
        var id = host.Rank == 0 ? Nccl.UniqueId() : default;
        unsafe
        {
            host.Broadcast(new Span<byte>(id.Bytes, NcclUniqueId.Size), 0);
        }
        _stream = CudaStream.Create(nonBlocking: true);
        _backendDone = CudaEvent.Create(timing: false);
        _comm = Nccl.CommInitRank(host.Size, id, host.Rank);
        Description = $"NCCL {FormatVersion(Nccl.Version())} on {cuda.DeviceName} (bootstrapped by {host.Description})";
    }

    static string FormatVersion(int v) => v >= 10000 ? $"{v / 10000}.{v / 100 % 100}.{v % 100}" : $"{v / 1000}.{v / 100 % 10}.{v % 100}";

    public void AllReduce(IBackend backend, FloatView buffer, ReduceOp op)
    {
        if (buffer.Storage is not CudaStorage || !ReferenceEquals(backend, _cuda)) { _host.AllReduce(backend, buffer, op); return; }
        CheckArrival(buffer.Length);
        _cuda.Synchronize(); // the gradients are written on the backend's stream
        Enqueue(buffer, op);
        WaitQueued($"NCCL all-reduce of {buffer.Length:N0} floats");
    }

    /// <summary>
    /// On this collective's GPU: each bucket's ncclAllReduce is queued on the communication stream behind an event
    /// recorded on the backend's stream when the bucket is started, so it runs while the backward kernels queued after
    /// it (earlier layers) run on the backend's stream. Other backends go to the bootstrapping world.
    /// </summary>
    public IBucketedAllReduce OpenBuckets(IBackend backend) =>
        ReferenceEquals(backend, _cuda) ? new NcclBucketedAllReduce(this) : _host.OpenBuckets(backend);

    /// <summary>The arrival check over MPI, which names a rank that never came (NCCL itself would only wait).</summary>
    internal void CheckArrival(int length)
    {
        if (_broken) throw new CollectiveFailedException($"rank {Rank}: an earlier NCCL all-reduce failed; the job cannot continue");
        Span<double> arrival = [length];
        _host.AllReduce(arrival, ReduceOp.Sum);
        if (arrival[0] != (double)length * Size)
            throw new CollectiveFailedException($"rank {Rank}: ranks disagree on the all-reduce size ({length:N0} floats here)");
    }

    /// <summary>Queues the in-place all-reduce of a device buffer on the communication stream (after what that stream already waits for).</summary>
    internal void Enqueue(FloatView buffer, ReduceOp op)
    {
        if (_broken) throw new CollectiveFailedException($"rank {Rank}: an earlier NCCL all-reduce failed; the job cannot continue");
        ulong p = CudaBackend.Ptr(buffer);
        Nccl.Check(NcclNative.ncclAllReduce(p, p, (nuint)buffer.Length, (int)NcclDataType.Float32,
            (int)(op == ReduceOp.Average ? NcclReduceOp.Avg : NcclReduceOp.Sum), _comm, _stream.Handle), "ncclAllReduce");
    }

    /// <summary>Makes the communication stream wait for the work queued so far on the backend's stream (a bucket's gradient kernels).</summary>
    internal void AfterBackendWork()
    {
        _cuda.RecordEvent(_backendDone);
        _stream.Wait(_backendDone);
    }

    /// <summary>Waits (polling, within the timeout) for everything queued on the communication stream; aborts the communicator when it does not finish.</summary>
    internal void WaitQueued(string what)
    {
        if (Nccl.WaitWithin(_comm, _stream.Handle, Timeout, what)) return;
        _broken = true;
        NcclNative.ncclCommAbort(_comm);
        _comm = 0;
        throw new CollectiveFailedException($"rank {Rank}: {what} did not complete within {Timeout.TotalSeconds:0.#} s; every rank arrived, so a peer hangs inside it or the link failed");
    }

    public void AllReduce(Span<double> values, ReduceOp op) => _host.AllReduce(values, op);
    public void Broadcast(Span<byte> data, int root) => _host.Broadcast(data, root);
    public void Barrier() => _host.Barrier();
    public void Abort(string message, int exitCode)
    {
        if (_comm != 0) { NcclNative.ncclCommAbort(_comm); _comm = 0; }
        _host.Abort(message, exitCode);
    }

    public void Dispose()
    {
        if (_comm != 0 && !_broken) NcclNative.ncclCommDestroy(_comm);
        _comm = 0;
        _backendDone.Dispose();
        _stream.Dispose();
    }
}
