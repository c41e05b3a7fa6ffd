using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

public class Bd3MaskTests
{
    /// <summary>DESIGN.md 1.1, written out independently of Bd3Mask: x_full = x_noisy ⊕ x_clean, length 2L.</summary>
    static bool DesignRule(int l, int blockSize, int i, int j)
    {
        bool iNoisy = i < l, jNoisy = j < l;
        int iBlock = (i - (iNoisy ? 0 : l)) / blockSize;
        int jBlock = (j - (jNoisy ? 0 : l)) / blockSize;
        if (iNoisy && jNoisy) return iBlock == jBlock;      // block-diagonal inside the noisy half
        if (iNoisy && !jNoisy) return jBlock < iBlock;      // offset block-causal: earlier clean blocks
        if (!iNoisy && !jNoisy) return jBlock <= iBlock;    // block-causal inside the clean half
        return false;                                       // clean query never sees noisy keys
    }

    static IEnumerable<(MaskKind Kind, int SeqLen, int BlockSize)> Configs()
    {
        foreach (int l in new[] { 1, 2, 3, 4, 6, 8, 12, 16, 24, 40 })
            foreach (int bs in Enumerable.Range(1, l).Where(d => l % d == 0))
            {
                yield return (MaskKind.Bd3, 2 * l, bs);
                yield return (MaskKind.BlockCausal, l, bs);
            }
        foreach (int t in new[] { 1, 2, 5, 17, 40 })
        {
            yield return (MaskKind.Causal, t, 1);
            yield return (MaskKind.Full, t, 1);
        }
    }

    [Fact]
    public void AllowedMatchesDesignRules()
    {
        foreach (int l in new[] { 1, 4, 12, 30 })
            foreach (int bs in Enumerable.Range(1, l).Where(d => l % d == 0))
                for (int i = 0; i < 2 * l; i++)
                    for (int j = 0; j < 2 * l; j++)
                        Assert.True(DesignRule(l, bs, i, j) == Bd3Mask.Allowed(MaskKind.Bd3, 2 * l, bs, i, j),
                            $"L={l} L'={bs} i={i} j={j}");
    }

    [Fact]
    public void OtherMasksMatchTheirDefinitions()
    {
        for (int i = 0; i < 24; i++)
            for (int j = 0; j < 24; j++)
            {
                Assert.True(Bd3Mask.Allowed(MaskKind.Full, 24, 1, i, j));
                Assert.Equal(j <= i, Bd3Mask.Allowed(MaskKind.Causal, 24, 1, i, j));
                foreach (int bs in new[] { 1, 2, 3, 4, 6, 8, 12, 24 })
                    Assert.Equal(j / bs <= i / bs, Bd3Mask.Allowed(MaskKind.BlockCausal, 24, bs, i, j));
            }
    }

    static void CheckTile(MaskKind kind, int n, int bs, int q0, int q1, int k0, int k1)
    {
        int allowed = 0;
        for (int i = q0; i < q1; i++)
            for (int j = k0; j < k1; j++)
                if (Bd3Mask.Allowed(kind, n, bs, i, j)) allowed++;
        int total = (q1 - q0) * (k1 - k0);
        var expected = allowed == 0 ? TileKind.Empty : allowed == total ? TileKind.Full : TileKind.Partial;
        var got = Bd3Mask.ClassifyTile(kind, n, bs, q0, q1, k0, k1);
        Assert.True(expected == got, $"{kind} T={n} L'={bs} q[{q0},{q1}) k[{k0},{k1}): {got}, exact is {expected} ({allowed}/{total})");
    }

    [Fact]
    public void ClassifyTileIsExactOnTileGrids()
    {
        int[] tiles = [1, 2, 3, 4, 5, 7, 8, 16, 32, 64];
        foreach (var (kind, n, bs) in Configs())
            foreach (int qt in tiles)
                foreach (int kt in tiles)
                    for (int q0 = 0; q0 < n; q0 += qt)
                        for (int k0 = 0; k0 < n; k0 += kt)
                            CheckTile(kind, n, bs, q0, Math.Min(n, q0 + qt), k0, Math.Min(n, k0 + kt));
    }

    [Fact]
    public void ClassifyTileIsExactOnArbitraryRanges()
    {
        var rng = new Random(11);
        foreach (var (kind, n, bs) in Configs())
            for (int trial = 0; trial < 300; trial++)
            {
                int q0 = rng.Next(n), q1 = rng.Next(q0 + 1, n + 1);
                int k0 = rng.Next(n), k1 = rng.Next(k0 + 1, n + 1);
                CheckTile(kind, n, bs, q0, q1, k0, k1);
            }
    }

    [Fact]
    public void ClassifyTileFindsEveryKindOnTheBd3Mask()
    {
        // L = 64, L' = 4, 16×16 tiles: all three kinds must occur (the test above would pass vacuously otherwise).
        var seen = new HashSet<TileKind>();
        for (int q0 = 0; q0 < 128; q0 += 16)
            for (int k0 = 0; k0 < 128; k0 += 16)
                seen.Add(Bd3Mask.ClassifyTile(MaskKind.Bd3, 128, 4, q0, q0 + 16, k0, k0 + 16));
        Assert.Equal(3, seen.Count);
    }

    [Theory]
    [InlineData(1024, 4)]
    [InlineData(1024, 16)]
    [InlineData(512, 1)]
    [InlineData(256, 8)]
    public void Bd3DensityIsAboutAQuarter(int l, int bs)
    {
        long allowed = 0;
        for (int i = 0; i < 2 * l; i++)
        {
            CpuAttention.KeyRanges(MaskKind.Bd3, 2 * l, bs, i, out int a0, out int a1, out int b0, out int b1);
            allowed += Math.Max(0, a1 - a0) + Math.Max(0, b1 - b0);
        }
        double density = allowed / (4.0 * l * l);
        // exact: (L·L' + L²) / (2L)² = 1/4 + L'/(4L)
        Assert.Equal(0.25 + bs / (4.0 * l), density, 12);
        Assert.InRange(density, 0.25, 0.26);
        // and by brute force over the formula for a smaller one
        int small = 64, sb = 4, count = 0;
        for (int i = 0; i < 2 * small; i++)
            for (int j = 0; j < 2 * small; j++)
                if (Bd3Mask.Allowed(MaskKind.Bd3, 2 * small, sb, i, j)) count++;
        Assert.Equal(small * sb + small * small, count);
    }

    [Fact]
    public void KeyRangesAgreeWithAllowed()
    {
        foreach (var (kind, n, bs) in Configs())
            for (int i = 0; i < n; i++)
            {
                CpuAttention.KeyRanges(kind, n, bs, i, out int a0, out int a1, out int b0, out int b1);
                Assert.True(a0 >= 0 && b0 >= 0 && a1 <= n && b1 <= n);
                if (a1 > a0 && b1 > b0) Assert.True(a1 <= b0, "ranges must be ascending and disjoint");
                for (int j = 0; j < n; j++)
                {
                    bool inRanges = (j >= a0 && j < a1) || (j >= b0 && j < b1);
                    Assert.True(inRanges == Bd3Mask.Allowed(kind, n, bs, i, j), $"{kind} T={n} L'={bs} i={i} j={j}");
                }
            }
    }
}
