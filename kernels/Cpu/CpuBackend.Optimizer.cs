using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void AdamW(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep s) =>
        AdamWThenEma(param, grad, m, v, null, s, 0f);

    public void AdamWEma(FloatView param, FloatView grad, FloatView m, FloatView v, FloatView ema, AdamWStep s, float emaDecay) =>
        AdamWThenEma(param, grad, m, v, ema, s, emaDecay);

    /// <summary>
    /// One pass over the flat buffers: the AdamW update of each element (its gradient scaled first by GradScale, which
    /// carries the clip factor), then (with an EMA buffer) the EMA of the element just updated: param, m, v and ema read
    /// once and written once. Vectorised on 16 lanes with the scalar's order of operations (no FMA contraction), so every
    /// element rounds as the scalar does, whatever the vector width.
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
            int i = i0;
            var vb1 = Vector512.Create(b1); var vb2 = Vector512.Create(b2); var vc1 = Vector512.Create(c1); var vc2 = Vector512.Create(c2);
            var vScale = Vector512.Create(scale); var vDecay = Vector512.Create(decay); var vStep = Vector512.Create(stepSize);
            var vSqrtBc2 = Vector512.Create(sqrtBc2); var vEps = Vector512.Create(eps);
            var vEd = Vector512.Create(emaDecay); var vCe = Vector512.Create(ce);
            for (; i + Lanes <= i1; i += Lanes)
            {
                var g = LoadLanes(G, go + i) * vScale;
                var mi = vb1 * LoadLanes(M, mo + i) + vc1 * g;
                var vi = vb2 * LoadLanes(V, vo + i) + vc2 * g * g;
                // PyTorch AdamW order: decoupled decay, then the bias-corrected step.
                var pi = LoadLanes(P, po + i) * vDecay - vStep * mi / (Vector512.Sqrt(vi) / vSqrtBc2 + vEps);
                StoreLanes(mi, M, mo + i); StoreLanes(vi, V, vo + i); StoreLanes(pi, P, po + i);
                if (E != null) StoreLanes(vEd * LoadLanes(E, eo + i) + vCe * pi, E, eo + i);
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
            int i = i0;
            var vd = Vector512.Create(decay); var vc = Vector512.Create(c);
            for (; i + Lanes <= i1; i += Lanes) StoreLanes(vd * LoadLanes(E, eo + i) + vc * LoadLanes(P, po + i), E, eo + i);
            for (; i < i1; i++) E[eo + i] = decay * E[eo + i] + c * P[po + i];
        }, 16384);
    }

    const int Lanes = 16;   // Vector512<float>.Count

    // a[i..i+16) as one vector, unchecked: the loops above stay inside the views
    static Vector512<float> LoadLanes(float[] a, int i) => Vector512.LoadUnsafe(ref MemoryMarshal.GetArrayDataReference(a), (nuint)i);
    static void StoreLanes(Vector512<float> x, float[] a, int i) => x.StoreUnsafe(ref MemoryMarshal.GetArrayDataReference(a), (nuint)i);
}
