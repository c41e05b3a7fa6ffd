namespace FastBlockDiff.Engine.Training;

/// <summary>
/// xoshiro256** with a state that can be saved and restored, so that a resumed run draws the same numbers
/// as an uninterrupted one (System.Random cannot be serialised).
/// </summary>
public sealed class Rng
{
    ulong _s0, _s1, _s2, _s3;

    public Rng(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix(ref x); _s1 = SplitMix(ref x); _s2 = SplitMix(ref x); _s3 = SplitMix(ref x);
    }

    static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9, t = _s1 << 17;
        _s2 ^= _s0; _s3 ^= _s1; _s1 ^= _s2; _s0 ^= _s3; _s2 ^= t; _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));
    public float NextFloat() => (float)((NextUInt64() >> 40) * (1.0 / (1UL << 24)));
    public int NextInt(int maxExclusive) => (int)((NextUInt64() >> 33) % (ulong)maxExclusive);

    public ulong[] State
    {
        get => [_s0, _s1, _s2, _s3];
        set { if (value.Length != 4) throw new ArgumentException("RNG state has 4 words"); (_s0, _s1, _s2, _s3) = (value[0], value[1], value[2], value[3]); }
    }
}
