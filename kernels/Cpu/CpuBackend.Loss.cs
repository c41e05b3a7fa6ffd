using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    /// <summary>
    /// Row by row, each row read from memory once: a max pass, one SIMD exp-and-sum pass (<see cref="SimdExp"/>) that
    /// keeps the exponentials in place when the gradient is wanted and prefetches the next row into L2 meanwhile, and
    /// the gradient as one scaling of those exponentials while the row is still in cache.
    /// </summary>
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
                var next = r + 1 < r1 ? new ReadOnlySpan<float>(Lg, lo + (r + 1) * vocab, vocab) : default;
                // one pass: exp(x - max) summed, and kept in place when the gradient is wanted
                double sum = ExpShiftedSum(row, max, writeGrad, next);
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

    /// <summary>
    /// Σ exp(x - max) over the row (16 float lanes, flushed to double every 1024 elements); with store, x becomes
    /// exp(x - max). Each cache line of <paramref name="prefetch"/> (the next row) is asked into L2 while the same
    /// offset of this row is computed, so that the next row's passes find it there instead of in memory.
    /// </summary>
    static unsafe double ExpShiftedSum(Span<float> row, float max, bool store, ReadOnlySpan<float> prefetch)
    {
        const int Flush = 1024, W = 16;   // Vector512<float>.Count: one 64-byte cache line
        var vmax = Vector512.Create(max);
        double sum = 0;
        int j = 0;
        bool ahead = Sse.IsSupported && prefetch.Length > 0;
        fixed (float* x = row)
        fixed (float* next = prefetch)
        {
            while (j + W <= row.Length)
            {
                var acc = Vector512<float>.Zero;
                for (int end = Math.Min(row.Length, j + Flush); j + W <= end; j += W)
                {
                    if (ahead && j < prefetch.Length) Sse.Prefetch1(next + j);
                    var e = SimdExp.Exp(Vector512.Load(x + j) - vmax);
                    if (store) e.Store(x + j);
                    acc += e;
                }
                sum += Vector512.Sum(acc);
            }
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
