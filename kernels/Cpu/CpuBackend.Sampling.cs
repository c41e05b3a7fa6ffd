using System.Numerics.Tensors;

namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void SampleCategorical(FloatView logits, int rows, int vocab, int maskId, float temperature, float topP, FloatView uniforms, IntView tokens, FloatView probs)
    {
        var Lg = Storage(logits); var U = Storage(uniforms); var Tk = Storage(tokens); var Pr = Storage(probs);
        int lo = logits.Offset, uo = uniforms.Offset, tko = tokens.Offset, pro = probs.Offset;
        ParallelRanges(rows, (r0, r1) =>
        {
            var p = new float[vocab];
            var order = new int[vocab];
            for (int r = r0; r < r1; r++)
            {
                var row = new ReadOnlySpan<float>(Lg, lo + r * vocab, vocab);
                row.CopyTo(p);
                if ((uint)maskId < (uint)vocab) p[maskId] = float.NegativeInfinity;
                if (temperature <= 0f)
                {
                    int best = TensorPrimitives.IndexOfMax(p);
                    Tk[tko + r] = best; Pr[pro + r] = 1f;
                    continue;
                }
                TensorPrimitives.Multiply(p, 1f / temperature, p);
                TensorPrimitives.SoftMax(p, p);
                int n = vocab;
                for (int j = 0; j < vocab; j++) order[j] = j;
                double total = 1.0;
                if (topP < 1f)
                {
                    // Smallest prefix of the descending order whose mass reaches topP (ties broken by id).
                    var pp = p;
                    Array.Sort(order, (a, b) => pp[b] != pp[a] ? pp[b].CompareTo(pp[a]) : a.CompareTo(b));
                    double cum = 0; n = 0;
                    while (n < vocab && cum < topP) cum += p[order[n++]];
                    total = cum;
                }
                double target = U[uo + r] * total, acc = 0;
                int pick = -1;
                for (int j = 0; j < n; j++)
                {
                    float pj = p[order[j]];
                    if (pj <= 0) continue;
                    pick = order[j]; // rounding may leave acc just below target: the last positive entry stands
                    acc += pj;
                    if (target < acc) break;
                }
                Tk[tko + r] = pick;
                Pr[pro + r] = (float)(p[pick] / total);
            }
        });
    }
}
