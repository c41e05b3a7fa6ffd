namespace FastBlockDiff.Engine.Data;

/// <summary>
/// SplitMix64: a tiny, fast, platform-independent PRNG and hash. Used wherever data order must be
/// reproducible across runs and .NET versions (System.Random gives no such promise).
/// </summary>
public struct SplitMix64
{
    public ulong State;
    public SplitMix64(ulong seed) { State = seed; }

    public ulong Next()
    {
        ulong z = State += 0x9E3779B97F4A7C15UL;
        return Mix(z);
    }

    /// <summary>Uniform integer in [0, n) (Lemire's multiply-shift with rejection).</summary>
    public int NextInt(int n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n));
        ulong threshold = (0UL - (ulong)n) % (ulong)n;
        while (true)
        {
            ulong r = Next();
            UInt128 m = (UInt128)r * (ulong)n;
            if ((ulong)m >= threshold) return (int)(m >> 64);
        }
    }

    /// <summary>Uniform double in [0, 1).</summary>
    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

    /// <summary>The SplitMix64 finaliser: a good 64-bit mixing function.</summary>
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Hash of (seed, index), uniform over 64 bits.</summary>
    public static ulong Hash(ulong seed, ulong index) => Mix(Mix(seed + 0x9E3779B97F4A7C15UL) ^ (index * 0xD1B54A32D192ED03UL + 1));
}
