namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void AdamW(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep s)
    {
        var P = Storage(param); var G = Storage(grad); var M = Storage(m); var V = Storage(v);
        int po = param.Offset, go = grad.Offset, mo = m.Offset, vo = v.Offset;
        float bc1 = 1f - MathF.Pow(s.Beta1, s.Step), bc2 = 1f - MathF.Pow(s.Beta2, s.Step);
        float decay = 1f - s.LearningRate * s.WeightDecay, stepSize = s.LearningRate / bc1, sqrtBc2 = MathF.Sqrt(bc2);
        ParallelRanges(param.Length, (i0, i1) =>
        {
            for (int i = i0; i < i1; i++)
            {
                float g = G[go + i] * s.GradScale;
                float mi = M[mo + i] = s.Beta1 * M[mo + i] + (1f - s.Beta1) * g;
                float vi = V[vo + i] = s.Beta2 * V[vo + i] + (1f - s.Beta2) * g * g;
                // PyTorch AdamW order: decoupled decay, then the bias-corrected step.
                P[po + i] = P[po + i] * decay - stepSize * mi / (MathF.Sqrt(vi) / sqrtBc2 + s.Epsilon);
            }
        }, 16384);
    }

    public void Ema(FloatView ema, FloatView param, float decay)
    {
        var E = Storage(ema); var P = Storage(param); int eo = ema.Offset, po = param.Offset;
        ParallelRanges(ema.Length, (i0, i1) =>
        {
            for (int i = i0; i < i1; i++) E[eo + i] = decay * E[eo + i] + (1f - decay) * P[po + i];
        }, 16384);
    }
}
