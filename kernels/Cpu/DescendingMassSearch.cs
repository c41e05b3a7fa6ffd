using System.Numerics;
using System.Runtime.Intrinsics;

namespace FastBlockDiff.Kernels.Cpu;

/// <summary>
/// Walks a row of probabilities in descending order (ties by id) without sorting it: finds the first element
/// whose running mass in that order exceeds a target. Elements too small to matter are dropped by a threshold
/// (their whole mass cannot reach the target), the rest are bucketed by their float bits (positive floats order
/// as their bits do; the buckets span the candidates' own range of bits) and only the bucket that holds the crossing
/// is refined, down to a few elements that are sorted.
/// Cost: a few passes over the row, whatever the size of the nucleus.
/// </summary>
sealed class DescendingMassSearch
{
    const int Bins = 1024, SortBelow = 64;
    int[] _candidates;
    readonly double[] _mass = new double[Bins];
    readonly int[] _count = new int[Bins];
    readonly long[] _keys = new long[SortBelow];

    public DescendingMassSearch(int vocab) => _candidates = new int[vocab];

    /// <summary>
    /// The first element, in descending order of p (ties by ascending id), whose inclusive running mass exceeds
    /// <paramref name="target"/>; <paramref name="before"/> is the mass of the elements before it. -1 when the
    /// positive entries' whole mass does not exceed the target (before is then that mass).
    /// <paramref name="total"/> is the row's mass (approximately): it sets the threshold below which elements are ignored.
    /// </summary>
    public int FirstAbove(ReadOnlySpan<float> p, double target, double total, out double before)
    {
        // Everything below theta together weighs less than half of (total - target): the crossing lies above it.
        double slack = total - target;
        float theta = slack > 1e-4 * total ? (float)(0.5 * slack / p.Length) : 0f;
        int n = Gather(p, theta);
        before = 0;
        return FirstAboveAmong(p, _candidates.AsSpan(0, n), target, ref before);
    }

    /// <summary>
    /// As <see cref="FirstAbove"/> over <paramref name="cand"/> alone (ids in ascending order; reordered in place):
    /// the first of them, in descending order of p, whose running mass, starting from <paramref name="before"/>,
    /// exceeds <paramref name="target"/>; <paramref name="before"/> then holds the mass before it. -1 when their mass
    /// does not reach past the target.
    /// </summary>
    public int FirstAboveAmong(ReadOnlySpan<float> p, Span<int> cand, double target, ref double before)
    {
        if (cand.IsEmpty) return -1;
        // bins over the candidates' own range of float bits: the first level already spreads them out
        int low = int.MaxValue, high = 0;
        foreach (int j in cand)
        {
            int bits = BitConverter.SingleToInt32Bits(p[j]);
            low = Math.Min(low, bits); high = Math.Max(high, bits);
        }
        int shift = 0;
        while ((high - low) >> shift >= Bins) shift++;
        for (int from = low; ; shift = Math.Max(0, shift - 10))
        {
            Array.Clear(_mass); Array.Clear(_count);
            foreach (int j in cand)
            {
                int b = (BitConverter.SingleToInt32Bits(p[j]) - from) >> shift;
                _mass[b] += p[j]; _count[b]++;
            }
            int bin = -1;
            for (int b = Bins - 1; b >= 0; b--)
            {
                if (_count[b] == 0) continue;
                if (before + _mass[b] > target) { bin = b; break; }
                before += _mass[b];
            }
            if (bin < 0) return -1;
            // keep the crossing bin's members, in id order
            int kept = 0;
            foreach (int j in cand)
                if ((BitConverter.SingleToInt32Bits(p[j]) - from) >> shift == bin) cand[kept++] = j;
            cand = cand[..kept];
            if (kept <= SortBelow || shift == 0) return WalkSorted(p, cand, target, ref before);
            from += bin << shift;
        }
    }

    /// <summary>Sorts the few candidates (descending p, ascending id) and walks them from <paramref name="before"/>.</summary>
    int WalkSorted(ReadOnlySpan<float> p, Span<int> cand, double target, ref double before)
    {
        if (cand.Length > SortBelow) // equal floats (shift 0): already in id order
            return Walk(p, cand, target, ref before);
        var keys = _keys.AsSpan(0, cand.Length);
        for (int i = 0; i < cand.Length; i++)
            keys[i] = ((long)(int.MaxValue - BitConverter.SingleToInt32Bits(p[cand[i]])) << 32) | (uint)cand[i];
        keys.Sort();
        for (int i = 0; i < cand.Length; i++) cand[i] = (int)(keys[i] & 0xFFFFFFFF);
        return Walk(p, cand, target, ref before);
    }

    static int Walk(ReadOnlySpan<float> p, ReadOnlySpan<int> ordered, double target, ref double before)
    {
        for (int i = 0; i < ordered.Length; i++)
        {
            float pj = p[ordered[i]];
            // the bin's mass said the crossing is here; summed in another order, rounding may leave it one short: the last one stands
            if (before + pj > target || i == ordered.Length - 1) return ordered[i];
            before += pj;
        }
        return -1;
    }

    /// <summary>Indices of the positive entries ≥ theta, in id order.</summary>
    int Gather(ReadOnlySpan<float> p, float theta)
    {
        if (p.Length > _candidates.Length) _candidates = new int[p.Length];
        var cand = _candidates;
        int n = 0, j = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var t = Vector256.Create(theta); var zero = Vector256<float>.Zero;
            for (; j + Vector256<float>.Count <= p.Length; j += Vector256<float>.Count)
            {
                var v = Vector256.Create(p.Slice(j, Vector256<float>.Count));
                uint bits = (Vector256.GreaterThanOrEqual(v, t) & Vector256.GreaterThan(v, zero)).ExtractMostSignificantBits();
                while (bits != 0)
                {
                    cand[n++] = j + BitOperations.TrailingZeroCount(bits);
                    bits &= bits - 1;
                }
            }
        }
        for (; j < p.Length; j++) if (p[j] >= theta && p[j] > 0f) cand[n++] = j;
        return n;
    }
}
