namespace FastBlockDiff.Kernels;

/// <summary>Which key positions a query may see.</summary>
public enum MaskKind
{
    /// <summary>BD3 training mask over x_noisy ⊕ x_clean (SeqLen = 2L), see DESIGN.md 1.1.</summary>
    Bd3,
    /// <summary>Query in block i sees keys in blocks ≤ i (blocks of BlockSize tokens).</summary>
    BlockCausal,
    /// <summary>Token-causal: BlockCausal with BlockSize = 1.</summary>
    Causal,
    /// <summary>Every query sees every key.</summary>
    Full,
}

/// <summary>
/// Shape of a training/prefill attention call. qkv is laid out [Batch, SeqLen, 3, Heads, HeadDim]
/// (the bd3lms attn_qkv output, no transpose), the output [Batch, SeqLen, Heads, HeadDim] and the
/// saved logsumexp [Batch, Heads, SeqLen].
/// </summary>
public readonly record struct AttentionShape(int Batch, int Heads, int HeadDim, int SeqLen, MaskKind Mask, int BlockSize)
{
    public int ModelDim => Heads * HeadDim;
    public int QkvRowStride => 3 * Heads * HeadDim;

    public void Validate()
    {
        if (Batch <= 0 || Heads <= 0 || HeadDim <= 0 || SeqLen <= 0)
            throw new ArgumentException($"attention shape must be positive: {this}");
        if (Mask is MaskKind.Bd3 or MaskKind.BlockCausal)
        {
            int l = Mask == MaskKind.Bd3 ? SeqLen / 2 : SeqLen;
            if (Mask == MaskKind.Bd3 && SeqLen % 2 != 0)
                throw new ArgumentException($"BD3 attention needs an even SeqLen (2L), got {SeqLen}");
            if (BlockSize <= 0 || l % BlockSize != 0)
                throw new ArgumentException($"sequence length {l} is not divisible by block size {BlockSize}");
        }
    }
}

/// <summary>
/// Shape of a sampling-time attention call: BlockLen queries (qkv laid out [Batch, BlockLen, 3, Heads, HeadDim])
/// attend to the first CacheLen rows of a K/V cache ([Batch, CacheCapacity, Heads*HeadDim], keys already
/// rotated) and to all BlockLen keys of the block itself. Output [Batch, BlockLen, Heads*HeadDim].
/// </summary>
public readonly record struct DecodeShape(int Batch, int Heads, int HeadDim, int BlockLen, int CacheLen, int CacheCapacity)
{
    public int ModelDim => Heads * HeadDim;
}
