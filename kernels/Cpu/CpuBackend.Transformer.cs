namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void Rotary(FloatView x, int rows, int rowStride, int heads, int headDim, IntView positions, FloatView cos, FloatView sin, bool inverse)
    {
        var X = Storage(x); var P = Storage(positions); var C = Storage(cos); var S = Storage(sin);
        int xo = x.Offset, po = positions.Offset, co = cos.Offset, so = sin.Offset, half = headDim / 2;
        float sign = inverse ? -1f : 1f;
        ParallelRanges(rows, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                int t = co + P[po + r] * half, ts = so + P[po + r] * half;
                for (int h = 0; h < heads; h++)
                {
                    int b = xo + r * rowStride + h * headDim;
                    for (int i = 0; i < half; i++)
                    {
                        float c = C[t + i], s = sign * S[ts + i];
                        float x1 = X[b + i], x2 = X[b + half + i];
                        X[b + i] = x1 * c - x2 * s;
                        X[b + half + i] = x2 * c + x1 * s;
                    }
                }
            }
        }, 8);
    }

    public void EmbeddingForward(IntView ids, FloatView table, FloatView output, int rows, int dim)
    {
        var I = Span(ids); var T = Span(table); var O = Span(output);
        for (int r = 0; r < rows; r++)
        {
            int id = I[r];
            if ((uint)id >= (uint)(T.Length / dim)) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} outside the embedding table of {T.Length / dim} rows");
            T.Slice(id * dim, dim).CopyTo(O.Slice(r * dim, dim));
        }
    }

    public void EmbeddingBackward(IntView ids, FloatView dOutput, FloatView dTable, int rows, int dim)
    {
        var I = Span(ids); var D = Span(dOutput); var T = Span(dTable);
        for (int r = 0; r < rows; r++)
        {
            var dst = T.Slice(I[r] * dim, dim);
            System.Numerics.Tensors.TensorPrimitives.Add(dst, D.Slice(r * dim, dim), dst);
        }
    }

    public void ResidualGatedForward(FloatView x, FloatView y, FloatView gate, int rows, int dim, float dropP, ulong seed)
    {
        var X = Storage(x); var Y = Storage(y); var G = Storage(gate);
        int xo = x.Offset, yo = y.Offset, go = gate.Offset;
        float keepScale = dropP > 0 ? 1f / (1f - dropP) : 1f;
        ParallelRanges(rows, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
                for (int c = 0; c < dim; c++)
                {
                    int i = r * dim + c;
                    if (Dropout.Keep(seed, (ulong)i, dropP)) X[xo + i] += G[go + c] * keepScale * Y[yo + i];
                }
        }, 16);
    }

    public void ResidualGatedBackward(FloatView dx, FloatView y, FloatView gate, FloatView dy, FloatView dGate, int rows, int dim, float dropP, ulong seed)
    {
        var DX = Storage(dx); var Y = Storage(y); var G = Storage(gate); var DY = Storage(dy);
        int dxo = dx.Offset, yo = y.Offset, go = gate.Offset, dyo = dy.Offset;
        float keepScale = dropP > 0 ? 1f / (1f - dropP) : 1f;
        var partials = new List<float[]>();
        ParallelRanges(rows, (r0, r1) =>
        {
            var dg = new float[dim];
            for (int r = r0; r < r1; r++)
                for (int c = 0; c < dim; c++)
                {
                    int i = r * dim + c;
                    float k = Dropout.Keep(seed, (ulong)i, dropP) ? keepScale : 0f;
                    float g = DX[dxo + i];
                    dg[c] += g * k * Y[yo + i];
                    DY[dyo + i] = g * G[go + c] * k;
                }
            lock (partials) partials.Add(dg);
        }, 16);
        var dG = Span(dGate).Slice(0, dim);
        foreach (var p in partials) System.Numerics.Tensors.TensorPrimitives.Add(dG, p, dG);
    }
}
