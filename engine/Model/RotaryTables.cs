using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Model;

/// <summary>
/// cos/sin tables [positions, headDim/2] of the half-split rotary embedding (base 10000). Angles are formed
/// in double precision so that positions far beyond the training length stay exact.
/// Safe for concurrent use: a grown table is filled completely before it is published, in one reference
/// (<see cref="Current"/>), so a reader sees either the old table or the whole new one. Older tables stay allocated
/// (a concurrent forward pass may still read one) until <see cref="Dispose"/>; growth doubles, so they cost at most
/// as much as the current one.
/// </summary>
public sealed class RotaryTables : IDisposable
{
    /// <summary>One complete, immutable table.</summary>
    public sealed record Table(int Positions, FloatView Cos, FloatView Sin);

    readonly IBackend _backend;
    readonly OwnedBuffers _buffers;
    readonly int _headDim;
    readonly object _growLock = new();
    Table _current;

    public RotaryTables(IBackend backend, int headDim, int positions)
    {
        _backend = backend; _headDim = headDim;
        _buffers = new OwnedBuffers(backend);
        _current = Build(positions);
    }

    public void Dispose()
    {
        lock (_growLock) _buffers.Dispose();
    }

    /// <summary>The published table: read it once per use so that cos and sin come from the same table.</summary>
    public Table Current => Volatile.Read(ref _current);
    public int Positions => Current.Positions;
    public FloatView Cos => Current.Cos;
    public FloatView Sin => Current.Sin;

    /// <summary>Makes sure positions [0, n) are covered (sampling beyond L grows the table).</summary>
    public void EnsureCapacity(int n)
    {
        if (n <= Current.Positions) return;
        lock (_growLock)
        {
            int have = _current.Positions;
            if (n <= have) return;
            Volatile.Write(ref _current, Build((int)Math.Min(int.MaxValue, Math.Max(n, 2L * have))));
        }
    }

    Table Build(int positions)
    {
        int half = _headDim / 2;
        int n = OwnedBuffers.Elements("rotary table (positions × headDim/2)", positions, half);
        var cos = new float[n];
        var sin = new float[n];
        for (int i = 0; i < half; i++)
        {
            double invFreq = 1.0 / Math.Pow(10000.0, 2.0 * i / _headDim);
            for (int p = 0; p < positions; p++)
            {
                double a = p * invFreq;
                cos[(long)p * half + i] = (float)Math.Cos(a);
                sin[(long)p * half + i] = (float)Math.Sin(a);
            }
        }
        var cosView = _buffers.Float("rotary cos", n); _backend.Upload(cosView, cos);
        var sinView = _buffers.Float("rotary sin", n); _backend.Upload(sinView, sin);
        return new Table(positions, cosView, sinView);
    }
}
