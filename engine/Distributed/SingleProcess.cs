using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Distributed;

/// <summary>The world of one process: every collective is a no-op (an average of one buffer is itself).</summary>
public sealed class SingleProcess : ICollective
{
    public static readonly SingleProcess Instance = new();

    public int Rank => 0;
    public int Size => 1;
    public string Description => "single process";
    public TimeSpan Timeout => System.Threading.Timeout.InfiniteTimeSpan;

    public void AllReduce(IBackend backend, FloatView buffer, ReduceOp op) { }
    public void AllReduce(Span<double> values, ReduceOp op) { }
    public void Broadcast(Span<byte> data, int root)
    {
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), $"root {root} outside a world of 1");
    }
    public void Barrier() { }
    public void Abort(string message, int exitCode) => throw new InvalidOperationException(message);
    public void Dispose() { }
}
