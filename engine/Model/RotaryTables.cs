using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Model;

/// <summary>
/// cos/sin tables [positions, headDim/2] of the half-split rotary embedding (base 10000). Angles are formed
/// in double precision so that positions far beyond the training length stay exact.
/// Safe for concurrent use: a grown table is filled completely before it is published, in one reference
/// (<see cref="Current"/>), so a reader sees either the old table or the whole new one.
/// </summary>
public sealed class RotaryTables
{
    /// <summary>One complete, immutable table.</summary>
    public sealed record Table(int Positions, FloatView Cos, FloatView Sin);

    readonly IBackend _backend;
    readonly int _headDim;
    readonly object _growLock = new();
    Table _current;

    public RotaryTables(IBackend backend, int headDim, int positions)
    {
        _backend = backend; _headDim = headDim;
        _current = Build(positions);
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
            // Older tables stay valid: a concurrent forward pass may still be reading one.
            Volatile.Write(ref _current, Build((int)Math.Min(int.MaxValue, Math.Max(n, 2L * have))));
        }
    }

    Table Build(int positions)
    {
        int half = _headDim / 2;
        var cos = new float[(long)positions * half];
        var sin = new float[(long)positions * half];
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
        var cosView = _backend.AllocFloat(cos.Length); _backend.Upload(cosView, cos);
        var sinView = _backend.AllocFloat(sin.Length); _backend.Upload(sinView, sin);
        return new Table(positions, cosView, sinView);
    }
}
