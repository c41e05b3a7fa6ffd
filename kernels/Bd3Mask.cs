namespace FastBlockDiff.Kernels;

/// <summary>How a query×key tile relates to the mask: skipped, computed without per-element masking, or masked.</summary>
public enum TileKind { Empty, Full, Partial }

/// <summary>
/// The attention masks as formulas (no mask tensor anywhere). Every backend classifies tiles with
/// <see cref="ClassifyTile"/>, so tile skipping is decided in one place and tested once.
/// </summary>
public static class Bd3Mask
{
    /// <summary>Whether query <paramref name="i"/> may attend key <paramref name="j"/>.</summary>
    public static bool Allowed(MaskKind kind, int seqLen, int blockSize, int i, int j)
    {
        switch (kind)
        {
            case MaskKind.Full: return true;
            case MaskKind.Causal: return j <= i;
            case MaskKind.BlockCausal: return j / blockSize <= i / blockSize;
            default:
                int l = seqLen / 2;
                bool noisyI = i < l, noisyJ = j < l;
                int bi = (i % l) / blockSize, bj = (j % l) / blockSize;
                if (noisyI) return noisyJ ? bi == bj : bj < bi;
                return !noisyJ && bj <= bi;
        }
    }

    /// <summary>
    /// Classifies the tile of queries [q0, q1) × keys [k0, k1). Exact: Full means every pair is allowed,
    /// Empty means none is; Partial may be returned only when the tile is truly mixed.
    /// </summary>
    public static TileKind ClassifyTile(MaskKind kind, int seqLen, int blockSize, int q0, int q1, int k0, int k1)
    {
        if (kind == MaskKind.Full) return TileKind.Full;
        if (kind == MaskKind.Causal) blockSize = 1;
        if (kind is MaskKind.Causal or MaskKind.BlockCausal)
        {
            // allowed iff blk(j) <= blk(i): monotone in both, so corners decide.
            if ((k0 / blockSize) > ((q1 - 1) / blockSize)) return TileKind.Empty;
            if (((k1 - 1) / blockSize) <= (q0 / blockSize)) return TileKind.Full;
            return TileKind.Partial;
        }
        int l = seqLen / 2;
        // Split at the noisy/clean boundary: each quadrant is a monotone block relation.
        if (q0 < l && q1 > l || k0 < l && k1 > l)
        {
            bool any = false, all = true;
            foreach (var (a0, a1) in Split(q0, q1, l))
            foreach (var (b0, b1) in Split(k0, k1, l))
            {
                var t = ClassifyTile(kind, seqLen, blockSize, a0, a1, b0, b1);
                any |= t != TileKind.Empty;
                all &= t == TileKind.Full;
            }
            return !any ? TileKind.Empty : all ? TileKind.Full : TileKind.Partial;
        }
        bool noisyQ = q0 < l, noisyK = k0 < l;
        int qb0 = (q0 % l) / blockSize, qb1 = ((q1 - 1) % l) / blockSize;
        int kb0 = (k0 % l) / blockSize, kb1 = ((k1 - 1) % l) / blockSize;
        if (!noisyQ && noisyK) return TileKind.Empty;
        if (noisyQ && noisyK) // same block only
        {
            if (kb1 < qb0 || kb0 > qb1) return TileKind.Empty;
            return qb0 == qb1 && kb0 == kb1 && qb0 == kb0 ? TileKind.Full : TileKind.Partial;
        }
        if (noisyQ) // noisy query, clean key: strictly earlier blocks
        {
            if (kb0 >= qb1) return TileKind.Empty;
            return kb1 < qb0 ? TileKind.Full : TileKind.Partial;
        }
        // clean→clean block-causal
        if (kb0 > qb1) return TileKind.Empty;
        return kb1 <= qb0 ? TileKind.Full : TileKind.Partial;
    }

    static IEnumerable<(int, int)> Split(int a0, int a1, int at)
    {
        if (a0 < at && a1 > at) { yield return (a0, at); yield return (at, a1); }
        else yield return (a0, a1);
    }
}
