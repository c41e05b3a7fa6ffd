using System.Numerics.Tensors;

namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void SampleCategorical(FloatView logits, int rows, int vocab, int maskId, float temperature, float topP, FloatView uniforms, IntView tokens, FloatView probs)
    {
        var Lg = Storage(logits); var U = Storage(uniforms); var Tk = Storage(tokens); var Pr = Storage(probs);
        int lo = logits.Offset, uo = uniforms.Offset, tko = tokens.Offset, pro = probs.Offset;
        int mask = (uint)maskId < (uint)vocab ? maskId : -1;
        ParallelRanges(rows, (r0, r1) =>
        {
            var q = temperature > 0f ? RowScratch(vocab) : default;
            var search = topP < 1f && temperature > 0f ? Search(vocab) : null;
            for (int r = r0; r < r1; r++)
            {
                var row = new ReadOnlySpan<float>(Lg, checked(lo + r * vocab), vocab);
                if (temperature <= 0f)
                {
                    Tk[tko + r] = ArgMaxWithout(row, mask); Pr[pro + r] = 1f;
                    continue;
                }
                SoftMaxWithout(row, 1f / temperature, mask, q);
                double u = U[uo + r];
                var (pick, total) = search == null ? (FirstAboveInIdOrder(q, u), 1.0) : DrawFromNucleus(search, q, topP, u);
                Tk[tko + r] = pick;
                Pr[pro + r] = (float)(q[pick] / total);
            }
        });
    }

    // per thread, kept between calls: a step allocates nothing
    [ThreadStatic] static float[]? t_row;
    [ThreadStatic] static BracketedMassSearch? t_search;

    static Span<float> RowScratch(int vocab)
    {
        if (t_row == null || t_row.Length < vocab) t_row = new float[vocab];
        return t_row.AsSpan(0, vocab);
    }

    static BracketedMassSearch Search(int vocab) => t_search ??= new BracketedMassSearch(vocab);

    /// <summary>
    /// q = softmax(row·inv) with the mask column at 0 (the max subtracted first): <see cref="ExpShifted"/> divided by its
    /// sum, three passes over the row in all. The nucleus is then searched on exactly these floats.
    /// </summary>
    public static void SoftMaxWithout(ReadOnlySpan<float> row, float inv, int maskId, Span<float> q)
    {
        double sum = ExpShifted(row, inv, maskId, q);
        TensorPrimitives.Divide(q, (float)sum, q);
    }

    /// <summary>
    /// e = exp(row·inv − max(row·inv)) with the mask column at 0 (maskId −1: none); returns Σe. One pass finds the
    /// max; the scaling, shift, exp and sum then run a chunk at a time, so the row is read once more and written once.
    /// </summary>
    public static double ExpShifted(ReadOnlySpan<float> row, float inv, int maskId, Span<float> e)
    {
        const int Chunk = 2048;
        // a positive scale keeps the order, so the max of the scaled row is the scaled max
        float max = MaxWithout(row, maskId) * inv;
        double sum = 0;
        for (int c = 0; c < row.Length; c += Chunk)
        {
            int n = Math.Min(Chunk, row.Length - c);
            var chunk = e.Slice(c, n);
            TensorPrimitives.Multiply(row.Slice(c, n), inv, chunk);
            TensorPrimitives.Subtract(chunk, max, chunk);
            TensorPrimitives.Exp(chunk, chunk);
            if ((uint)(maskId - c) < (uint)n) chunk[maskId - c] = 0f;
            sum += TensorPrimitives.Sum(chunk);
        }
        return sum;
    }

    static float MaxWithout(ReadOnlySpan<float> row, int maskId)
    {
        if (maskId < 0) return TensorPrimitives.Max(row);
        float max = float.NegativeInfinity;
        if (maskId > 0) max = TensorPrimitives.Max(row[..maskId]);
        if (maskId < row.Length - 1) max = Math.Max(max, TensorPrimitives.Max(row[(maskId + 1)..]));
        return max;
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
    static (int Pick, double Total) DrawFromNucleus(BracketedMassSearch search, ReadOnlySpan<float> q, float topP, double u)
    {
        search.Prepare(q, 1.0);
        int end = search.FirstAbove(q, topP, out double total);    // the first token past the nucleus
        if (end >= 0 && total == 0) return (end, q[end]);           // the top token alone crosses topP: it alone is kept
        int pick = search.FirstAbove(q, u * total, out _);
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
