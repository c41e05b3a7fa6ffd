using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Distributed;

/// <summary>How <see cref="ICollective.AllReduce"/> combines the ranks' buffers.</summary>
public enum ReduceOp { Sum, Average }

/// <summary>
/// The collectives of data-parallel training (DESIGN.md section 7): every rank calls the same operations in the same
/// order. Implementations: <see cref="SingleProcess"/> (size 1, free), <see cref="MpiCollective"/> (Open MPI, host
/// memory; processes on one machine or many) and <see cref="NcclCollective"/> (NCCL on the CUDA backend's device
/// buffers, bootstrapped through MPI). A peer that dies or stops answering turns into a
/// <see cref="CollectiveFailedException"/> naming it within <see cref="Timeout"/>, never a silent hang.
/// </summary>
public interface ICollective : IDisposable
{
    int Rank { get; }
    int Size { get; }
    /// <summary>What carries the collectives, e.g. "MPI (Open MPI v4.1.4), 2 ranks".</summary>
    string Description { get; }
    /// <summary>How long one collective may wait for the slowest rank before the job is declared broken.</summary>
    TimeSpan Timeout { get; }

    /// <summary>In-place all-reduce of a backend buffer (the flat gradient buffer), on every rank.</summary>
    void AllReduce(IBackend backend, FloatView buffer, ReduceOp op);
    /// <summary>
    /// The bucketed gradient all-reduce on <paramref name="backend"/>'s buffers, overlapped with the caller's work where
    /// this transport allows (MPI on the CPU backend's arrays: a communication thread; NCCL: a communication stream).
    /// The default sums each bucket as it is started. The caller owns the result.
    /// </summary>
    IBucketedAllReduce OpenBuckets(IBackend backend) => new BlockingBucketedAllReduce(this, backend);
    /// <summary>In-place all-reduce (sum or average) of a few host values: losses, flags.</summary>
    void AllReduce(Span<double> values, ReduceOp op);
    /// <summary>Replaces every rank's <paramref name="data"/> with rank <paramref name="root"/>'s; lengths must agree.</summary>
    void Broadcast(Span<byte> data, int root);
    void Barrier();
    /// <summary>
    /// Ends every rank of the job after printing <paramref name="message"/> (prefixed by this rank) to stderr. For
    /// failures that leave the ranks out of step: an error on one rank, a collective that timed out.
    /// </summary>
    void Abort(string message, int exitCode);
}
