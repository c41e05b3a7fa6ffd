using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Distributed;

/// <summary>
/// The gradient all-reduce of one optimiser step, bucket by bucket: <see cref="Start"/> is called (from the backward
/// pass) as soon as a bucket's gradients are final and may return before the bucket is reduced, so that its transfer
/// overlaps the backward of earlier layers; <see cref="Complete"/> returns when every started bucket holds the sum over
/// the ranks. Every rank starts the same buckets in the same order. Made by <see cref="ICollective.OpenBuckets"/>.
/// </summary>
public interface IBucketedAllReduce : IDisposable
{
    /// <summary>True when <see cref="Start"/> returns before the bucket is reduced (the transfer overlaps the caller's work).</summary>
    bool Overlaps { get; }
    /// <summary>Begins the in-place sum of <paramref name="bucket"/> (a slice of the gradient buffer) across the ranks.</summary>
    void Start(FloatView bucket);
    /// <summary>Waits until every started bucket is reduced; a failure of any of them is a <see cref="CollectiveFailedException"/> here.</summary>
    void Complete();
}

/// <summary>The fallback for collectives that cannot overlap: each bucket is summed before <see cref="Start"/> returns.</summary>
public sealed class BlockingBucketedAllReduce(ICollective world, IBackend backend) : IBucketedAllReduce
{
    public bool Overlaps => false;
    public void Start(FloatView bucket) => world.AllReduce(backend, bucket, ReduceOp.Sum);
    public void Complete() { }
    public void Dispose() { }
}
