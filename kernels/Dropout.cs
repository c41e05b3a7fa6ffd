namespace FastBlockDiff.Kernels;

/// <summary>
/// Counter-based dropout: whether element <c>index</c> survives is a pure function of (seed, index), so the
/// backward recomputes the mask instead of storing it, and every backend draws the same mask.
/// </summary>
public static class Dropout
{
    public static ulong Mix(ulong seed, ulong index)
    {
        // splitmix64 finaliser over seed ⊕ golden-ratio-spaced index
        ulong z = seed + (index + 1) * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>True when the element is kept under drop probability p.</summary>
    public static bool Keep(ulong seed, ulong index, float p) =>
        p <= 0f || (Mix(seed, index) >> 40) * (1.0f / (1 << 24)) >= p;
}
