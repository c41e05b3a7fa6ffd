namespace FastBlockDiff.Engine.Checkpoints;

/// <summary>
/// Finds NaN and ±Inf in weights and optimiser state. Loading refuses them unless the caller allows it
/// (--allow-nonfinite); saving always refuses them, so a diverged run never overwrites a good checkpoint.
/// </summary>
public static class NonFiniteValues
{
    /// <summary>How many values are not finite, and the index and value of the first (-1 when none).</summary>
    public static (long Count, long FirstIndex, float First) Find(ReadOnlySpan<float> values)
    {
        long count = 0, first = -1;
        for (int i = 0; i < values.Length; i++)
        {
            if (float.IsFinite(values[i])) continue;
            if (count++ == 0) first = i;
        }
        return (count, first, first >= 0 ? values[(int)first] : 0f);
    }

    /// <summary>Throws a <see cref="UserInputException"/> naming <paramref name="what"/> when <paramref name="values"/> holds a NaN or ±Inf.</summary>
    public static void Refuse(ReadOnlySpan<float> values, string what, string advice)
    {
        var (count, index, value) = Find(values);
        if (count > 0)
            throw new UserInputException($"{what} holds {count:N0} non-finite value{(count == 1 ? "" : "s")} (first: {value} at index {index:N0}); {advice}");
    }
}
