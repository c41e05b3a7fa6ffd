namespace FastBlockDiff.Kernels.Ilgpu;

/// <summary>
/// Kernel-side twin of <see cref="Bd3Mask"/> and <see cref="Dropout"/>: plain static methods on ints (no enums
/// boxed, no IEnumerable, no recursion) so that ILGPU can compile them into kernels. Must agree with the host
/// versions exactly; a test checks every tile of several shapes.
/// Mask kinds are passed as the int value of <see cref="MaskKind"/>; tile kinds as the int value of <see cref="TileKind"/>.
/// </summary>
public static class IlgpuMask
{
    public const int KindBd3 = (int)MaskKind.Bd3, KindBlockCausal = (int)MaskKind.BlockCausal, KindCausal = (int)MaskKind.Causal, KindFull = (int)MaskKind.Full;
    public const int TileEmpty = (int)TileKind.Empty, TileFull = (int)TileKind.Full, TilePartial = (int)TileKind.Partial;

    public static bool Allowed(int kind, int seqLen, int blockSize, int i, int j)
    {
        if (kind == KindFull) return true;
        if (kind == KindCausal) return j <= i;
        if (kind == KindBlockCausal) return j / blockSize <= i / blockSize;
        int l = seqLen / 2;
        bool noisyI = i < l, noisyJ = j < l;
        int bi = (i % l) / blockSize, bj = (j % l) / blockSize;
        if (noisyI) return noisyJ ? bi == bj : bj < bi;
        return !noisyJ && bj <= bi;
    }

    /// <summary>Exact classification of queries [q0,q1) × keys [k0,k1), same contract as <see cref="Bd3Mask.ClassifyTile"/>.</summary>
    public static int ClassifyTile(int kind, int seqLen, int blockSize, int q0, int q1, int k0, int k1)
    {
        if (kind == KindFull) return TileFull;
        if (kind == KindCausal || kind == KindBlockCausal)
        {
            int bs = kind == KindCausal ? 1 : blockSize;
            if (k0 / bs > (q1 - 1) / bs) return TileEmpty;
            if ((k1 - 1) / bs <= q0 / bs) return TileFull;
            return TilePartial;
        }
        int l = seqLen / 2;
        // Split both ranges at the noisy/clean boundary into at most two parts each; each quadrant is monotone.
        int qa0 = q0, qa1 = q1, qb0 = 0, qb1 = 0, ka0 = k0, ka1 = k1, kb0 = 0, kb1 = 0;
        int nq = 1, nk = 1;
        if (q0 < l && q1 > l) { qa1 = l; qb0 = l; qb1 = q1; nq = 2; }
        if (k0 < l && k1 > l) { ka1 = l; kb0 = l; kb1 = k1; nk = 2; }
        bool any = false, all = true;
        for (int a = 0; a < nq; a++)
            for (int b = 0; b < nk; b++)
            {
                int t = ClassifyQuadrant(l, blockSize, a == 0 ? qa0 : qb0, a == 0 ? qa1 : qb1, b == 0 ? ka0 : kb0, b == 0 ? ka1 : kb1);
                any |= t != TileEmpty;
                all &= t == TileFull;
            }
        return !any ? TileEmpty : all ? TileFull : TilePartial;
    }

    static int ClassifyQuadrant(int l, int blockSize, int q0, int q1, int k0, int k1)
    {
        bool noisyQ = q0 < l, noisyK = k0 < l;
        int qb0 = (q0 % l) / blockSize, qb1 = ((q1 - 1) % l) / blockSize;
        int kb0 = (k0 % l) / blockSize, kb1 = ((k1 - 1) % l) / blockSize;
        if (!noisyQ && noisyK) return TileEmpty;
        if (noisyQ && noisyK)
        {
            if (kb1 < qb0 || kb0 > qb1) return TileEmpty;
            return qb0 == qb1 && kb0 == kb1 && qb0 == kb0 ? TileFull : TilePartial;
        }
        if (noisyQ)
        {
            if (kb0 >= qb1) return TileEmpty;
            return kb1 < qb0 ? TileFull : TilePartial;
        }
        if (kb0 > qb1) return TileEmpty;
        return kb1 <= qb0 ? TileFull : TilePartial;
    }

    /// <summary>Same as <see cref="Dropout.Keep"/>, written out for kernels.</summary>
    public static bool Keep(ulong seed, ulong index, float p)
    {
        if (p <= 0f) return true;
        ulong z = seed + (index + 1UL) * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (z >> 40) * (1.0f / (1 << 24)) >= p;
    }
}
