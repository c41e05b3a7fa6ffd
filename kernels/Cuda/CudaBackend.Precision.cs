namespace FastBlockDiff.Kernels.Cuda;

/// <summary>
/// bf16 mode: GEMMs read bf16 operands through cuBLASLt (fp32 accumulation and output) and attention uses the bf16
/// tensor-core kernels. The weight buffer named by <see cref="KeepBf16Copy"/> has a persistent bf16 copy: AdamW writes
/// it in the same pass as the fp32 master weights, any other write to the weights marks it stale and the next GEMM
/// refreshes it once; other operands (activations) are converted per GEMM, except a LayerNorm's output read by the GEMM
/// right after it: the LayerNorm kernel writes its bf16 twin in the same pass.
/// </summary>
public sealed partial class CudaBackend
{
    FloatView? mirrored;
    CudaStorage? mirror16;
    bool mirrorStale = true;

    /// <summary>Fp32 by default when constructed directly (the test mode); the backend selector picks bf16 for CUDA.</summary>
    public Precision Precision
    {
        get => Bf16Gemm ? Precision.Bf16 : Precision.Fp32;
        set { Bf16Gemm = Bf16Attention = value == Precision.Bf16; }
    }

    /// <summary>Bytes of the bf16 weight copy (0 until a bf16 GEMM needed it).</summary>
    public long Bf16CopyBytes => mirror16 is { } m ? (long)m.Length * m.ElementSize : 0;

    public void KeepBf16Copy(FloatView weights)
    {
        S(weights.Storage);   // a buffer of this backend
        mirror16?.Dispose();
        mirror16 = null;
        mirrored = weights;
        mirrorStale = true;
    }

    static bool Overlaps(FloatView a, FloatView b) =>
        ReferenceEquals(a.Storage, b.Storage) && a.Offset < b.Offset + b.Length && b.Offset < a.Offset + a.Length;

    /// <summary>Every op that writes a FloatView outside AdamW reports it here: a write into the weights makes the copy stale.</summary>
    void Wrote(FloatView dst)
    {
        ops++;
        if (mirrored is { } w && Overlaps(w, dst)) mirrorStale = true;
    }

    // The bf16 twin of the last LayerNorm output, written by the LayerNorm kernel in the same pass. It stands for that
    // view only while no other op ran since (ops counts launches and reported writes), i.e. for the GEMM right after the
    // LayerNorm, the one that reads its output; later readers convert as usual.
    CudaStorage? twin16;
    FloatView twinOf;
    long ops, twinStamp = -1;

    /// <summary>Activation operands a bf16 GEMM took from the LayerNorm's twin instead of converting (for tests).</summary>
    public long Bf16TwinReads { get; private set; }

    ulong LayerNormTwin(FloatView output)
    {
        if (twin16 == null || (long)twin16.Length * twin16.ElementSize < output.Length * 2L)
        {
            if (twin16 != null) { stream.Synchronize(); twin16.Dispose(); }
            twin16 = AllocRaw((output.Length + 1) / 2, 4);
        }
        twinOf = output;
        return twin16.Pointer;
    }

    /// <summary>
    /// The bf16 copy's address for view v when v lies inside the mirrored weights and the mode is bf16, else 0.
    /// Reading: a stale copy is refreshed first. Writing (AdamW over the whole buffer): the caller writes the copy, which
    /// is then current; a partial write marks it stale and gets 0.
    /// </summary>
    ulong Bf16CopyFor(FloatView v, bool writing)
    {
        if (mirrored is not { } w || !Overlaps(w, v)) return 0;
        bool inside = v.Offset >= w.Offset && v.Offset + v.Length <= w.Offset + w.Length;
        if (!Bf16Gemm || !inside || (writing && v != w)) { if (writing) mirrorStale = true; return 0; }
        if (mirror16 == null) { mirror16 = AllocRaw((w.Length + 1) / 2, 4); mirrorStale = true; }
        if (writing) mirrorStale = false;
        else if (mirrorStale)
        {
            Flat(EW, "fbd_to_bf16", w.Length, Ptr(w), mirror16.Pointer, w.Length);
            mirrorStale = false;
        }
        return mirror16.Pointer + (ulong)(v.Offset - w.Offset) * 2;
    }

    /// <summary>A bf16 operand for a GEMM: the persistent weight copy when v is a weight, else v converted into scratch.</summary>
    ulong Bf16Operand(FloatView v, string scratchName)
    {
        if (twin16 != null && twinStamp == ops && v == twinOf) { Bf16TwinReads++; return twin16.Pointer; }
        ulong p = Bf16CopyFor(v, writing: false);
        if (p != 0) return p;
        ulong s = Scratch(scratchName, v.Length * 2L);
        Flat(EW, "fbd_to_bf16", v.Length, Ptr(v), s, v.Length);
        return s;
    }
}
