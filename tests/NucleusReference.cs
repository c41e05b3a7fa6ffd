namespace FastBlockDiff.Tests;

/// <summary>The sampling draw computed the slow, obvious way, as the tests' reference for SampleCategorical.</summary>
static class NucleusReference
{
    /// <summary>
    /// With topP &lt; 1: the nucleus by a full sort of the row (descending, ties by id; running mass in double, kept while
    /// ≤ topP, the top token always) and the draw by inverse CDF in that order. With topP ≥ 1 (no nucleus): the draw
    /// by inverse CDF in vocabulary order. Returns the token and its probability within what was kept.
    /// </summary>
    public static (int Token, double Prob) DrawBySort(float[] q, double topP, double u)
    {
        var positive = Enumerable.Range(0, q.Length).Where(j => q[j] > 0);
        var order = (topP < 1 ? positive.OrderByDescending(j => q[j]).ThenBy(j => j) : positive).ToArray();
        double total = q[order[0]]; int kept = 1;
        if (topP < 1) while (kept < order.Length && total + q[order[kept]] <= topP) total += q[order[kept++]];
        else { total = 1; kept = order.Length; }
        double target = u * total, acc = 0;
        for (int i = 0; i < kept; i++)
        {
            acc += q[order[i]];
            if (target < acc) return (order[i], q[order[i]] / total);
        }
        return (order[kept - 1], q[order[kept - 1]] / total);
    }
}
