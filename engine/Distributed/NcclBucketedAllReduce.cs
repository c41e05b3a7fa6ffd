using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Distributed;

/// <summary>
/// The bucketed gradient all-reduce of <see cref="NcclCollective"/>: one arrival check over MPI per step (at its first
/// bucket), then per bucket an event on the backend's stream, the communication stream waiting for it, and an
/// ncclAllReduce there; <see cref="Complete"/> polls the communication stream against the timeout. No host wait
/// between buckets, so the transfers run beside the backward kernels of earlier layers.
/// </summary>
public sealed class NcclBucketedAllReduce(NcclCollective nccl) : IBucketedAllReduce
{
    int _started, _floats;

    public bool Overlaps => true;

    public void Start(FloatView bucket)
    {
        if (_started == 0) nccl.CheckArrival(bucket.Length);
        nccl.AfterBackendWork();
        nccl.Enqueue(bucket, ReduceOp.Sum);
        _started++;
        _floats += bucket.Length;
    }

    public void Complete()
    {
        if (_started == 0) return;
        string what = $"NCCL all-reduce of {_started} buckets ({_floats:N0} floats)";
        _started = 0; _floats = 0;
        nccl.WaitQueued(what);
    }

    public void Dispose() { }
}
