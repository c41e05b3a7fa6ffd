using System.Numerics;
using System.Numerics.Tensors;

namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void SubsCrossEntropy(FloatView logits, IntView targets, FloatView weights, FloatView loss, int rows, int vocab, int maskId, float gradScale, bool writeGrad)
    {
        var Lg = Storage(logits); var T = Storage(targets); var Wt = Storage(weights); var Ls = Storage(loss);
        int lo = logits.Offset, to = targets.Offset, wo = weights.Offset, so = loss.Offset;
        bool hasMask = (uint)maskId < (uint)vocab;
        ParallelRanges(rows, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                var row = new Span<float>(Lg, checked(lo + r * vocab), vocab);
                float w = Wt[wo + r];
                if (w == 0f)
                {
                    Ls[so + r] = 0f;
                    if (writeGrad) row.Clear();
                    continue;
                }
                // SUBS: the mask logit is -inf, i.e. excluded from the normaliser.
                float saved = hasMask ? row[maskId] : 0f;
                if (hasMask) row[maskId] = float.NegativeInfinity;
                int target = T[to + r];
                float picked = row[target];
                float max = TensorPrimitives.Max(row);
                // one pass: exp(x - max) summed, and kept in place when the gradient is wanted
                double sum = ExpShiftedSum(row, max, writeGrad);
                float lse = max + (float)Math.Log(sum);
                Ls[so + r] = w * (lse - picked);
                if (writeGrad)
                {
                    // softmax·s - s·onehot(target), from the exponentials already in the row
                    float s = gradScale * w;
                    TensorPrimitives.Multiply(row, (float)(s / sum), row);
                    row[target] -= s;
                    if (hasMask) row[maskId] = 0f;
                }
                else if (hasMask) row[maskId] = saved;
            }
        }, 4);
    }

    /// <summary>Σ exp(x - max) over the row (SIMD exp, float lanes flushed to double every 1024 elements); with store, x becomes exp(x - max).</summary>
    static double ExpShiftedSum(Span<float> row, float max, bool store)
    {
        const int Flush = 1024;
        int w = Vector<float>.Count, j = 0;
        var vmax = new Vector<float>(max);
        double sum = 0;
        while (j + w <= row.Length)
        {
            var acc = Vector<float>.Zero;
            int end = Math.Min(row.Length - w, j + Flush);
            for (; j <= end; j += w)
            {
                var slot = row.Slice(j, w);
                var e = Vector.Exp(new Vector<float>(slot) - vmax);
                if (store) e.CopyTo(slot);
                acc += e;
            }
            sum += Vector.Sum(acc);
        }
        for (; j < row.Length; j++)
        {
            float e = MathF.Exp(row[j] - max);
            if (store) row[j] = e;
            sum += e;
        }
        return sum;
    }
}
