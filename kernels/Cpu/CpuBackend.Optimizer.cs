using System.Numerics;

namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void AdamW(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep s) =>
        AdamWThenEma(param, grad, m, v, null, s, 0f);

    public void AdamWEma(FloatView param, FloatView grad, FloatView m, FloatView v, FloatView ema, AdamWStep s, float emaDecay) =>
        AdamWThenEma(param, grad, m, v, ema, s, emaDecay);

    /// <summary>
    /// One pass over the flat buffers: the AdamW update of each element, then (with an EMA buffer) the EMA of the
    /// element just updated. Vectorised with the scalar's order of operations, so every element rounds as the scalar does.
    /// </summary>
    static void AdamWThenEma(FloatView param, FloatView grad, FloatView m, FloatView v, FloatView? ema, AdamWStep s, float emaDecay)
    {
        var P = Storage(param); var G = Storage(grad); var M = Storage(m); var V = Storage(v);
        var E = ema is { } e ? Storage(e) : null;
        int po = param.Offset, go = grad.Offset, mo = m.Offset, vo = v.Offset, eo = ema?.Offset ?? 0;
        float bc1 = 1f - MathF.Pow(s.Beta1, s.Step), bc2 = 1f - MathF.Pow(s.Beta2, s.Step);
        float decay = 1f - s.LearningRate * s.WeightDecay, stepSize = s.LearningRate / bc1, sqrtBc2 = MathF.Sqrt(bc2);
        float b1 = s.Beta1, b2 = s.Beta2, c1 = 1f - s.Beta1, c2 = 1f - s.Beta2, scale = s.GradScale, eps = s.Epsilon, ce = 1f - emaDecay;
        ParallelRanges(param.Length, (i0, i1) =>
        {
            int i = i0, w = Vector<float>.Count;
            var vb1 = new Vector<float>(b1); var vb2 = new Vector<float>(b2); var vc1 = new Vector<float>(c1); var vc2 = new Vector<float>(c2);
            var vScale = new Vector<float>(scale); var vDecay = new Vector<float>(decay); var vStep = new Vector<float>(stepSize);
            var vSqrtBc2 = new Vector<float>(sqrtBc2); var vEps = new Vector<float>(eps);
            var vEd = new Vector<float>(emaDecay); var vCe = new Vector<float>(ce);
            for (; i + w <= i1; i += w)
            {
                var g = new Vector<float>(G, go + i) * vScale;
                var mi = vb1 * new Vector<float>(M, mo + i) + vc1 * g;
                var vi = vb2 * new Vector<float>(V, vo + i) + vc2 * g * g;
                // PyTorch AdamW order: decoupled decay, then the bias-corrected step.
                var pi = new Vector<float>(P, po + i) * vDecay - vStep * mi / (Vector.SquareRoot(vi) / vSqrtBc2 + vEps);
                mi.CopyTo(M, mo + i); vi.CopyTo(V, vo + i); pi.CopyTo(P, po + i);
                if (E != null) (vEd * new Vector<float>(E, eo + i) + vCe * pi).CopyTo(E, eo + i);
            }
            for (; i < i1; i++)
            {
                float g = G[go + i] * scale;
                float mi = M[mo + i] = b1 * M[mo + i] + c1 * g;
                float vi = V[vo + i] = b2 * V[vo + i] + c2 * g * g;
                float pi = P[po + i] = P[po + i] * decay - stepSize * mi / (MathF.Sqrt(vi) / sqrtBc2 + eps);
                if (E != null) E[eo + i] = emaDecay * E[eo + i] + ce * pi;
            }
        }, 16384);
    }

    public void Ema(FloatView ema, FloatView param, float decay)
    {
        var E = Storage(ema); var P = Storage(param); int eo = ema.Offset, po = param.Offset;
        float c = 1f - decay;
        ParallelRanges(ema.Length, (i0, i1) =>
        {
            int i = i0, w = Vector<float>.Count;
            var vd = new Vector<float>(decay); var vc = new Vector<float>(c);
            for (; i + w <= i1; i += w) (vd * new Vector<float>(E, eo + i) + vc * new Vector<float>(P, po + i)).CopyTo(E, eo + i);
            for (; i < i1; i++) E[eo + i] = decay * E[eo + i] + c * P[po + i];
        }, 16384);
    }
}
