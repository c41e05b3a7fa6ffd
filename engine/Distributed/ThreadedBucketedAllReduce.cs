using System.Runtime.ExceptionServices;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Distributed;

/// <summary>
/// Bucketed all-reduce on a communication thread: <see cref="Start"/> queues the bucket and returns; the thread sums the
/// buckets one after another with the collective's blocking all-reduce (which polls MPI, and so progresses the transfer,
/// while the caller computes the backward of earlier layers). For host buffers that the caller no longer writes (the
/// CPU backend's gradient array, of which each bucket is a disjoint range). The collective serialises its MPI calls,
/// so MPI_THREAD_SERIALIZED suffices; the thread's collective stays bounded by the collective's timeout.
/// </summary>
public sealed class ThreadedBucketedAllReduce : IBucketedAllReduce
{
    readonly ICollective _world;
    readonly IBackend _backend;
    readonly Queue<FloatView> _queue = new();
    readonly object _gate = new();
    readonly Thread _thread;
    int _unfinished;
    bool _closed;
    ExceptionDispatchInfo? _failure;

    public ThreadedBucketedAllReduce(ICollective world, IBackend backend)
    {
        _world = world; _backend = backend;
        _thread = new Thread(Work) { IsBackground = true, Name = "gradient all-reduce" };
        _thread.Start();
    }

    public bool Overlaps => true;

    public void Start(FloatView bucket)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            _failure?.Throw();
            _queue.Enqueue(bucket);
            _unfinished++;
            Monitor.PulseAll(_gate);
        }
    }

    public void Complete()
    {
        lock (_gate)
        {
            while (_unfinished > 0) Monitor.Wait(_gate);
            _failure?.Throw();
        }
    }

    void Work()
    {
        while (true)
        {
            FloatView bucket;
            lock (_gate)
            {
                while (_queue.Count == 0 && !_closed) Monitor.Wait(_gate);
                if (_queue.Count == 0) return;
                bucket = _queue.Dequeue();
            }
            // after a failure the rest are not attempted: the ranks are out of step and the caller aborts the job
            ExceptionDispatchInfo? failed = null;
            if (_failure is null)
                try { _world.AllReduce(_backend, bucket, ReduceOp.Sum); }
                catch (Exception e) { failed = ExceptionDispatchInfo.Capture(e); }
            lock (_gate)
            {
                _failure ??= failed;
                _unfinished--;
                Monitor.PulseAll(_gate);
            }
        }
    }

    /// <summary>Lets the thread finish the queued buckets (each bounded by the collective's timeout) and end.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_closed) return;
            _closed = true;
            Monitor.PulseAll(_gate);
        }
        _thread.Join();
    }
}
