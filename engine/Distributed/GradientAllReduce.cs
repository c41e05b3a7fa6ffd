using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Distributed;

/// <summary>
/// The bucketed gradient all-reduce of a data-parallel trainer: the buckets of the flat gradient buffer
/// (<see cref="GradientBuckets.Plan"/>) started as the backward pass reports them final (<see cref="GradientsDoneFrom"/>,
/// handed to <c>Denoiser.Backward</c> on the last micro-batch of a step), then <see cref="Complete"/> before the optimiser
/// step. Buckets start in plan order on every rank, whatever the timing of the backward pass.
/// </summary>
public sealed class GradientAllReduce : IDisposable
{
    readonly IBucketedAllReduce _transport;
    readonly FloatView _grads;
    int _next;

    public IReadOnlyList<GradientBucket> Buckets { get; }
    /// <summary>Whether a started bucket's transfer runs while the backward pass goes on (see <see cref="ICollective.OpenBuckets"/>).</summary>
    public bool Overlaps => _transport.Overlaps;

    /// <summary>Owns the transport it opens on <paramref name="world"/>; <paramref name="buckets"/> must tile <paramref name="grads"/> in descending order.</summary>
    public GradientAllReduce(ICollective world, IBackend backend, FloatView grads, IReadOnlyList<GradientBucket> buckets)
    {
        int end = grads.Length;
        foreach (var b in buckets)
        {
            if (b.Length <= 0 || b.End != end) throw new ArgumentException($"bucket [{b.Offset}, {b.End}) does not continue the plan below offset {end}");
            end = b.Offset;
        }
        if (end != 0) throw new ArgumentException($"the buckets leave gradients [0, {end}) out");
        _grads = grads; Buckets = buckets;
        _transport = world.OpenBuckets(backend);
    }

    /// <summary>The backward pass wrote its last gradient at every offset ≥ <paramref name="offset"/>: starts the buckets that lie there.</summary>
    public void GradientsDoneFrom(int offset)
    {
        while (_next < Buckets.Count && Buckets[_next].Offset >= offset)
        {
            var b = Buckets[_next++];
            _transport.Start(_grads.Slice(b.Offset, b.Length));
        }
    }

    /// <summary>Starts the buckets not yet started and waits until every bucket holds the sum over the ranks.</summary>
    public void Complete()
    {
        try
        {
            GradientsDoneFrom(0);
            _transport.Complete();
        }
        finally { _next = 0; }
    }

    public void Dispose() => _transport.Dispose();
}
