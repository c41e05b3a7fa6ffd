using System.Numerics.Tensors;

namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void SubsCrossEntropy(FloatView logits, IntView targets, FloatView weights, FloatView loss, int rows, int vocab, int maskId, float gradScale, bool writeGrad)
    {
        var Lg = Storage(logits); var T = Storage(targets); var Wt = Storage(weights); var Ls = Storage(loss);
        int lo = logits.Offset, to = targets.Offset, wo = weights.Offset, so = loss.Offset;
        ParallelRanges(rows, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                var row = new Span<float>(Lg, lo + r * vocab, vocab);
                float w = Wt[wo + r];
                if (w == 0f)
                {
                    Ls[so + r] = 0f;
                    if (writeGrad) row.Clear();
                    continue;
                }
                // SUBS: the mask logit is -inf, i.e. excluded from the normaliser.
                bool hasMask = (uint)maskId < (uint)vocab;
                float saved = hasMask ? row[maskId] : 0f;
                if (hasMask) row[maskId] = float.NegativeInfinity;
                float max = TensorPrimitives.Max(row);
                double sum = 0;
                for (int j = 0; j < vocab; j++) sum += MathF.Exp(row[j] - max);
                float lse = max + (float)Math.Log(sum);
                int target = T[to + r];
                Ls[so + r] = w * (lse - row[target]);
                if (writeGrad)
                {
                    float s = gradScale * w;
                    TensorPrimitives.Subtract(row, lse, row);
                    TensorPrimitives.Exp(row, row);
                    TensorPrimitives.Multiply(row, s, row);
                    row[target] -= s;
                    if (hasMask) row[maskId] = 0f;
                }
                else if (hasMask) row[maskId] = saved;
            }
        }, 4);
    }
}
