using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Model;

/// <summary>
/// cos/sin tables [positions, headDim/2] of the half-split rotary embedding (base 10000). Angles are formed
/// in double precision so that positions far beyond the training length stay exact.
/// </summary>
public sealed class RotaryTables : IDisposable
{
    public int Positions { get; private set; }
    public FloatView Cos { get; private set; }
    public FloatView Sin { get; private set; }
    readonly IBackend _backend;
    readonly OwnedBuffers _buffers;
    readonly int _headDim;

    public RotaryTables(IBackend backend, int headDim, int positions)
    {
        _backend = backend; _headDim = headDim;
        _buffers = new OwnedBuffers(backend);
        Grow(positions);
    }

    public void Dispose() => _buffers.Dispose();

    /// <summary>Makes sure positions [0, n) are covered (sampling beyond L grows the table).</summary>
    public void EnsureCapacity(int n)
    {
        if (n > Positions) Grow(Math.Max(n, 2 * Positions));
    }

    void Grow(int positions)
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
                cos[p * half + i] = (float)Math.Cos(a);
                sin[p * half + i] = (float)Math.Sin(a);
            }
        }
        if (Cos.Storage != null) { _buffers.Free(Cos.Storage); _buffers.Free(Sin.Storage); }
        Cos = _buffers.Float("rotary cos", n); _backend.Upload(Cos, cos);
        Sin = _buffers.Float("rotary sin", n); _backend.Upload(Sin, sin);
        Positions = positions;
    }
}
