using System.Numerics.Tensors;

namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void LayerNormForward(FloatView x, FloatView weight, FloatView? bias, FloatView y, FloatView mean, FloatView rstd, int rows, int dim, float eps)
    {
        var X = Storage(x); var Y = Storage(y); var W = Storage(weight); var M = Storage(mean); var R = Storage(rstd);
        float[]? B = bias is { } bv ? Storage(bv) : null;
        int xo = x.Offset, yo = y.Offset, wo = weight.Offset, bo = bias?.Offset ?? 0, mo = mean.Offset, ro = rstd.Offset;
        ParallelRanges(rows, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                var xr = new ReadOnlySpan<float>(X, xo + r * dim, dim);
                var yr = new Span<float>(Y, yo + r * dim, dim);
                float mu = TensorPrimitives.Sum(xr) / dim;
                TensorPrimitives.Subtract(xr, mu, yr);
                float var = TensorPrimitives.SumOfSquares(yr) / dim;
                float rs = 1f / MathF.Sqrt(var + eps);
                M[mo + r] = mu; R[ro + r] = rs;
                TensorPrimitives.Multiply(yr, rs, yr);
                TensorPrimitives.Multiply(yr, new ReadOnlySpan<float>(W, wo, dim), yr);
                if (B != null) TensorPrimitives.Add(yr, new ReadOnlySpan<float>(B, bo, dim), yr);
            }
        }, 16);
    }

    public void LayerNormBackward(FloatView dy, FloatView x, FloatView weight, FloatView mean, FloatView rstd,
        FloatView dx, FloatView dWeight, FloatView? dBias, int rows, int dim)
    {
        var DY = Storage(dy); var X = Storage(x); var W = Storage(weight); var M = Storage(mean); var R = Storage(rstd); var DX = Storage(dx);
        int dyo = dy.Offset, xo = x.Offset, wo = weight.Offset, mo = mean.Offset, ro = rstd.Offset, dxo = dx.Offset;
        // Weight/bias gradients are reduced over rows: each worker keeps its own partial sums, merged afterwards.
        var partials = new List<(float[] dw, float[] db)>();
        ParallelRanges(rows, (r0, r1) =>
        {
            var dw = new float[dim]; var db = new float[dim];
            var xhat = new float[dim]; var g = new float[dim];
            for (int r = r0; r < r1; r++)
            {
                var dyr = new ReadOnlySpan<float>(DY, dyo + r * dim, dim);
                TensorPrimitives.Subtract(new ReadOnlySpan<float>(X, xo + r * dim, dim), M[mo + r], xhat);
                float rs = R[ro + r];
                TensorPrimitives.Multiply(xhat, rs, xhat);
                TensorPrimitives.MultiplyAdd(dyr, xhat, dw, dw);
                TensorPrimitives.Add(dyr, db, db);
                TensorPrimitives.Multiply(dyr, new ReadOnlySpan<float>(W, wo, dim), g);
                float meanG = TensorPrimitives.Sum(g) / dim;
                float meanGX = TensorPrimitives.Dot(g, xhat) / dim;
                // dx = rstd·(g - mean(g) - xhat·mean(g·xhat))
                TensorPrimitives.MultiplyAdd(xhat, -meanGX, g, g);
                TensorPrimitives.Subtract(g, meanG, g);
                var dxr = new Span<float>(DX, dxo + r * dim, dim);
                TensorPrimitives.MultiplyAdd(g, rs, dxr, dxr);
            }
            lock (partials) partials.Add((dw, db));
        }, 16);
        var dW = Span(dWeight).Slice(0, dim);
        foreach (var (dw, db) in partials)
        {
            TensorPrimitives.Add(dW, dw, dW);
            if (dBias is { } dbv) TensorPrimitives.Add(Span(dbv).Slice(0, dim), db, Span(dbv).Slice(0, dim));
        }
    }
}
