using System.Buffers;
using System.Numerics.Tensors;

namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void SampleCategorical(FloatView logits, int rows, int vocab, int maskId, float temperature, float topP, FloatView uniforms, IntView tokens, FloatView probs)
    {
        var Lg = Storage(logits); var U = Storage(uniforms); var Tk = Storage(tokens); var Pr = Storage(probs);
        int lo = logits.Offset, uo = uniforms.Offset, tko = tokens.Offset, pro = probs.Offset;
        bool hasMask = (uint)maskId < (uint)vocab;
        ParallelRanges(rows, (r0, r1) =>
        {
            var p = ArrayPool<float>.Shared.Rent(vocab);
            using var search = topP < 1f && temperature > 0f ? new DescendingMassSearch(vocab) : null;
            try
            {
                for (int r = r0; r < r1; r++)
                {
                    var row = new ReadOnlySpan<float>(Lg, checked(lo + r * vocab), vocab);
                    if (temperature <= 0f)
                    {
                        Tk[tko + r] = ArgMaxWithout(row, hasMask ? maskId : -1); Pr[pro + r] = 1f;
                        continue;
                    }
                    var q = p.AsSpan(0, vocab);
                    SoftMaxWithout(row, 1f / temperature, hasMask ? maskId : -1, q);
                    double u = U[uo + r];
                    var (pick, total) = search == null ? (FirstAboveInIdOrder(q, u), 1.0) : DrawFromNucleus(search, q, topP, u);
                    Tk[tko + r] = pick;
                    Pr[pro + r] = (float)(q[pick] / total);
                }
            }
            finally { ArrayPool<float>.Shared.Return(p); }
        });
    }

    /// <summary>q = softmax(row·inv) with the mask column at 0; the max is subtracted first (TensorPrimitives.SoftMax does not, and overflows past 88).</summary>
    public static void SoftMaxWithout(ReadOnlySpan<float> row, float inv, int maskId, Span<float> q)
    {
        TensorPrimitives.Multiply(row, inv, q);
        if (maskId >= 0) q[maskId] = float.NegativeInfinity;
        TensorPrimitives.Subtract(q, TensorPrimitives.Max(q), q);
        TensorPrimitives.Exp(q, q);
        TensorPrimitives.Divide(q, TensorPrimitives.Sum(q), q);
    }

    /// <summary>The first index of the largest logit, the mask column excluded (as TensorPrimitives.IndexOfMax).</summary>
    static int ArgMaxWithout(ReadOnlySpan<float> row, int maskId)
    {
        if (maskId < 0) return TensorPrimitives.IndexOfMax(row);
        int a = maskId > 0 ? TensorPrimitives.IndexOfMax(row[..maskId]) : -1;
        int b = maskId < row.Length - 1 ? maskId + 1 + TensorPrimitives.IndexOfMax(row[(maskId + 1)..]) : -1;
        if (a < 0) return b;
        return b < 0 || row[a] >= row[b] ? a : b;
    }

    /// <summary>Inverse CDF in vocabulary order: the first positive entry where the running sum exceeds u (else the last positive one).</summary>
    static int FirstAboveInIdOrder(ReadOnlySpan<float> q, double u)
    {
        const int Chunk = 256;
        double acc = 0;
        int lastPositive = -1;
        for (int c0 = 0; c0 < q.Length; c0 += Chunk)
        {
            var chunk = q.Slice(c0, Math.Min(Chunk, q.Length - c0));
            float mass = TensorPrimitives.Sum(chunk);
            // whole chunks far below the target are skipped; the one that may hold the crossing is walked element by element
            if (acc + mass * (1 + 1e-5) <= u && c0 + Chunk < q.Length)
            {
                acc += mass;
                if (mass > 0) lastPositive = LastPositiveIn(chunk, c0);
                continue;
            }
            for (int j = 0; j < chunk.Length; j++)
            {
                if (chunk[j] <= 0) continue;
                lastPositive = c0 + j; // rounding may leave acc just below u: the last positive entry stands
                acc += chunk[j];
                if (u < acc) return lastPositive;
            }
        }
        return lastPositive;
    }

    static int LastPositiveIn(ReadOnlySpan<float> chunk, int offset)
    {
        for (int j = chunk.Length - 1; j >= 0; j--) if (chunk[j] > 0) return offset + j;
        return -1;
    }

    /// <summary>
    /// The nucleus as the reference keeps it: the tokens, in descending order of probability (ties by id), whose
    /// cumulative mass is ≤ topP; the top token always. Draws by inverse CDF in that order; returns the token and the nucleus mass.
    /// </summary>
    static (int Pick, double Total) DrawFromNucleus(DescendingMassSearch search, ReadOnlySpan<float> q, float topP, double u)
    {
        int end = search.FirstAbove(q, topP, 1.0, out double total); // the first token past the nucleus
        if (end >= 0 && total == 0) return (end, q[end]);           // the top token alone crosses topP: it alone is kept
        double target = u * total;
        int pick = search.FirstAbove(q, target, total, out _);
        if (pick < 0 || (end >= 0 && !Before(q, pick, end))) pick = LastOfNucleus(q, end); // rounding: the nucleus's last token stands
        return (pick, total);
    }

    /// <summary>Whether a precedes b in descending order of probability, ties by id.</summary>
    static bool Before(ReadOnlySpan<float> q, int a, int b) => q[a] > q[b] || (q[a] == q[b] && a < b);

    /// <summary>The last positive token before <paramref name="end"/> in descending order (ties by id); end -1: the last positive one.</summary>
    static int LastOfNucleus(ReadOnlySpan<float> q, int end)
    {
        int last = -1;
        for (int j = 0; j < q.Length; j++)
        {
            if (q[j] <= 0 || (end >= 0 && !Before(q, j, end))) continue;
            if (last < 0 || Before(q, last, j)) last = j;
        }
        return last;
    }
}
