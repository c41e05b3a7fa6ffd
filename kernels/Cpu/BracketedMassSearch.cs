using System.Numerics;
using System.Runtime.Intrinsics;

namespace FastBlockDiff.Kernels.Cpu;

/// <summary>
/// The crossings of <see cref="DescendingMassSearch"/> (the first element, in descending order of p with ties by id,
/// whose running mass exceeds a target), found with one vector pass over a long row instead of several scalar ones.
/// A sorted stride sample of the row estimates which values the crossing lies between; one pass sums, exactly in
/// double, the mass above that bracket and gathers the bracket's members; when the crossing is inside, only those
/// members are searched. When the estimate missed (rare: the bracket spans three standard deviations of the
/// sample's rank), the exact search over the whole row answers. The answer is the same either way.
/// </summary>
sealed class BracketedMassSearch
{
    const int SampleSize = 512;
    readonly float[] _sample = new float[SampleSize];
    readonly DescendingMassSearch _exact;
    int[] _members;
    double _total;
    bool _sampled;

    public BracketedMassSearch(int vocab)
    {
        _exact = new DescendingMassSearch(vocab);
        _members = new int[vocab];
    }

    /// <summary>Takes the row's sample; once per row, before its <see cref="FirstAbove"/> calls. <paramref name="total"/>: the row's mass.</summary>
    public void Prepare(ReadOnlySpan<float> p, double total)
    {
        _total = total;
        _sampled = p.Length >= 16 * SampleSize; // shorter rows: the exact search is as quick
        if (!_sampled) return;
        for (int i = 0; i < SampleSize; i++) _sample[i] = p[(int)((2L * i + 1) * p.Length / (2 * SampleSize))];
        _sample.AsSpan().Sort();
    }

    /// <summary>As <see cref="DescendingMassSearch.FirstAbove"/> on the row given to <see cref="Prepare"/>.</summary>
    public int FirstAbove(ReadOnlySpan<float> p, double target, out double before)
    {
        if (_sampled && Bracket(p.Length, target, out float lo, out float hi))
        {
            int n = Split(p, lo, hi, out double above, out double inside);
            if (above <= target && target < above + inside)
            {
                before = above;
                int at = _exact.FirstAboveAmong(p, _members.AsSpan(0, n), target, ref before);
                if (at >= 0) return at;
            }
        }
        return _exact.FirstAbove(p, target, _total, out before);
    }

    /// <summary>
    /// The values the crossing likely lies between: each sample value stands for length/SampleSize elements, so the
    /// ascending sample's running mass estimates the mass below each value; total − target must lie below the
    /// crossing. The bracket spans three standard deviations of the estimated rank on each side. false: it would
    /// hold the whole row.
    /// </summary>
    bool Bracket(int length, double target, out float lo, out float hi)
    {
        double weight = (double)length / SampleSize, below = _total - target, acc = 0;
        int k = 0;
        while (k < SampleSize - 1 && acc + weight * _sample[k] < below) acc += weight * _sample[k++];
        int d = (int)(3 * Math.Sqrt(k * (1.0 - (double)k / SampleSize))) + 2;
        lo = k - d <= 0 ? float.Epsilon : Math.Max(_sample[k - d], float.Epsilon);
        hi = k + d >= SampleSize ? float.PositiveInfinity : _sample[k + d];
        return lo > float.Epsilon || hi < float.PositiveInfinity;
    }

    /// <summary>
    /// One pass: the mass of the elements above <paramref name="hi"/>, and the members (ids in ascending order) and
    /// mass of the positive elements in [lo, hi]; returns how many members.
    /// </summary>
    int Split(ReadOnlySpan<float> p, float lo, float hi, out double above, out double inside)
    {
        if (_members.Length < p.Length) _members = new int[p.Length];
        var members = _members;
        int n = 0, j = 0;
        above = 0; inside = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var vlo = Vector256.Create(lo); var vhi = Vector256.Create(hi);
            Vector256<double> up0 = default, up1 = default, in0 = default, in1 = default;
            for (; j + Vector256<float>.Count <= p.Length; j += Vector256<float>.Count)
            {
                var v = Vector256.Create(p.Slice(j, Vector256<float>.Count));
                var isUp = Vector256.GreaterThan(v, vhi);
                var isIn = Vector256.AndNot(Vector256.GreaterThanOrEqual(v, vlo), isUp);
                var u = v & isUp; var w = v & isIn;
                up0 += Vector256.WidenLower(u); up1 += Vector256.WidenUpper(u);
                in0 += Vector256.WidenLower(w); in1 += Vector256.WidenUpper(w);
                uint bits = isIn.ExtractMostSignificantBits();
                while (bits != 0)
                {
                    members[n++] = j + BitOperations.TrailingZeroCount(bits);
                    bits &= bits - 1;
                }
            }
            above = Vector256.Sum(up0 + up1); inside = Vector256.Sum(in0 + in1);
        }
        for (; j < p.Length; j++)
        {
            if (p[j] > hi) above += p[j];
            else if (p[j] >= lo) { inside += p[j]; members[n++] = j; }
        }
        return n;
    }
}
