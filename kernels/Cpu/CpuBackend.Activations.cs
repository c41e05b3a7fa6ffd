namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    const float GeluC = 0.7978845608028654f; // sqrt(2/π)
    const float GeluA = 0.044715f;

    public void GeluForward(FloatView x, FloatView y)
    {
        var X = Storage(x); var Y = Storage(y); int xo = x.Offset, yo = y.Offset;
        ParallelRanges(x.Length, (i0, i1) =>
        {
            for (int i = i0; i < i1; i++)
            {
                float v = X[xo + i];
                Y[yo + i] = 0.5f * v * (1f + MathF.Tanh(GeluC * (v + GeluA * v * v * v)));
            }
        }, 4096);
    }

    public void GeluBackward(FloatView x, FloatView dy, FloatView dx)
    {
        var X = Storage(x); var DY = Storage(dy); var DX = Storage(dx); int xo = x.Offset, dyo = dy.Offset, dxo = dx.Offset;
        ParallelRanges(x.Length, (i0, i1) =>
        {
            for (int i = i0; i < i1; i++)
            {
                float v = X[xo + i];
                float t = MathF.Tanh(GeluC * (v + GeluA * v * v * v));
                float d = 0.5f * (1f + t) + 0.5f * v * (1f - t * t) * GeluC * (1f + 3f * GeluA * v * v);
                DX[dxo + i] = DY[dyo + i] * d;
            }
        }, 4096);
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
