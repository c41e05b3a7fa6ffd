using System.Numerics.Tensors;

namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    const float GeluC = 0.7978845608028654f; // sqrt(2/π)
    const float GeluA = 0.044715f;
    const int Chunk = 1024;

    // tanh(√(2/π)·(x + 0.044715·x³)) for a chunk, vectorised through TensorPrimitives
    static void GeluTanh(ReadOnlySpan<float> x, Span<float> t, Span<float> tmp)
    {
        TensorPrimitives.Multiply(x, x, tmp);                 // x²
        Affine(tmp, GeluA, 1f, tmp);    // 1 + a·x²
        TensorPrimitives.Multiply(tmp, x, tmp);               // x + a·x³
        TensorPrimitives.Multiply(tmp, GeluC, tmp);
        TensorPrimitives.Tanh(tmp, t);
    }

    // dst = a·x + b
    static void Affine(ReadOnlySpan<float> x, float a, float b, Span<float> dst)
    {
        TensorPrimitives.Multiply(x, a, dst);
        TensorPrimitives.Add(dst, b, dst);
    }

    public void GeluForward(FloatView x, FloatView y)
    {
        var X = Storage(x); var Y = Storage(y); int xo = x.Offset, yo = y.Offset;
        ParallelRanges((x.Length + Chunk - 1) / Chunk, (c0, c1) =>
        {
            Span<float> t = stackalloc float[Chunk], tmp = stackalloc float[Chunk];
            for (int c = c0; c < c1; c++)
            {
                int start = c * Chunk, len = Math.Min(Chunk, x.Length - start);
                var xs = new ReadOnlySpan<float>(X, xo + start, len);
                var tt = t[..len];
                GeluTanh(xs, tt, tmp[..len]);
                Affine(tt, 0.5f, 0.5f, tt);              // (1+t)/2
                TensorPrimitives.Multiply(tt, xs, new Span<float>(Y, yo + start, len));
            }
        }, 4);
    }

    public void GeluBackward(FloatView x, FloatView dy, FloatView dx)
    {
        var X = Storage(x); var DY = Storage(dy); var DX = Storage(dx); int xo = x.Offset, dyo = dy.Offset, dxo = dx.Offset;
        ParallelRanges((x.Length + Chunk - 1) / Chunk, (c0, c1) =>
        {
            Span<float> t = stackalloc float[Chunk], tmp = stackalloc float[Chunk], d = stackalloc float[Chunk];
            for (int c = c0; c < c1; c++)
            {
                int start = c * Chunk, len = Math.Min(Chunk, x.Length - start);
                var xs = new ReadOnlySpan<float>(X, xo + start, len);
                var tt = t[..len]; var tm = tmp[..len]; var dd = d[..len];
                GeluTanh(xs, tt, tm);
                // d/dx = ½(1+t) + ½x(1-t²)·c·(1+3a·x²)
                TensorPrimitives.Multiply(xs, xs, tm);
                Affine(tm, 3f * GeluA * GeluC, GeluC, tm);   // c(1+3a x²)
                TensorPrimitives.Multiply(tm, xs, tm);
                TensorPrimitives.Multiply(tm, 0.5f, tm);                          // ½x·c(1+3a x²)
                TensorPrimitives.Multiply(tt, tt, dd);
                TensorPrimitives.Negate(dd, dd);
                TensorPrimitives.Add(dd, 1f, dd);                                 // 1-t²
                TensorPrimitives.Multiply(dd, tm, dd);
                Affine(tt, 0.5f, 0.5f, tt);
                TensorPrimitives.Add(dd, tt, dd);
                TensorPrimitives.Multiply(dd, new ReadOnlySpan<float>(DY, dyo + start, len), new Span<float>(DX, dxo + start, len));
            }
        }, 4);
    }

    public void SiluForward(FloatView x, FloatView y)
    {
        var X = Storage(x); var Y = Storage(y); int xo = x.Offset, yo = y.Offset;
        for (int i = 0; i < x.Length; i++) { float v = X[xo + i]; Y[yo + i] = v / (1f + MathF.Exp(-v)); }
    }

    public void SiluBackward(FloatView x, FloatView dy, FloatView dx)
    {
        var X = Storage(x); var DY = Storage(dy); var DX = Storage(dx); int xo = x.Offset, dyo = dy.Offset, dxo = dx.Offset;
        for (int i = 0; i < x.Length; i++)
        {
            float v = X[xo + i], s = 1f / (1f + MathF.Exp(-v));
            DX[dxo + i] = DY[dyo + i] * s * (1f + v * (1f - s));
        }
    }
}
