using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace FastBlockDiff.Interop;

/// <summary>cudaDataType_t values used for GEMM operands.</summary>
public enum CudaDataType { R32F = 0, R16F = 2, R16BF = 14 }

/// <summary>Raw cuBLASLt entry points (resolved through <see cref="CudaLibraries"/>). Return cublasStatus_t.</summary>
public static unsafe partial class CublasLtNative
{
    const string L = CudaLibraries.CublasLtName;
    public const int ComputeType32F = 68;      // CUBLAS_COMPUTE_32F
    public const int DescTransA = 3, DescTransB = 4, DescEpilogue = 7, DescBiasPointer = 8; // cublasLtMatmulDescAttributes_t
    public const int DescEpilogueAuxPointer = 11, DescEpilogueAuxLd = 12;
    public const int EpilogueDefault = 1, EpilogueBias = 4, EpilogueGeluAuxBias = 164, EpilogueDGelu = 192, EpilogueBGradB = 512;   // cublasLtEpilogue_t
    public const int LayoutOrder = 1, LayoutBatchCount = 5, LayoutStridedBatchOffset = 6;  // cublasLtMatrixLayoutAttribute_t
    public const int OrderCol = 0, OrderRow = 1;
    public const int PrefMaxWorkspaceBytes = 1;
    public const int PrefMinAlignmentA = 5, PrefMinAlignmentB = 6, PrefMinAlignmentC = 7, PrefMinAlignmentD = 8;   // uint32, default 256

    [StructLayout(LayoutKind.Sequential)]
    public struct HeuristicResult
    {
        public fixed ulong Algo[8];      // cublasLtMatmulAlgo_t
        public nuint WorkspaceSize;
        public int State;
        public float WavesCount;
        public fixed int Reserved[4];
    }

    [LibraryImport(L)] public static partial nuint cublasLtGetVersion();
    [LibraryImport(L)] public static partial int cublasLtCreate(out nint handle);
    [LibraryImport(L)] public static partial int cublasLtDestroy(nint handle);
    [LibraryImport(L)] public static partial int cublasLtMatmulDescCreate(out nint desc, int computeType, CudaDataType scaleType);
    [LibraryImport(L)] public static partial int cublasLtMatmulDescDestroy(nint desc);
    [LibraryImport(L)] public static partial int cublasLtMatmulDescSetAttribute(nint desc, int attr, void* buf, nuint size);
    [LibraryImport(L)] public static partial int cublasLtMatrixLayoutCreate(out nint layout, CudaDataType type, ulong rows, ulong cols, long ld);
    [LibraryImport(L)] public static partial int cublasLtMatrixLayoutDestroy(nint layout);
    [LibraryImport(L)] public static partial int cublasLtMatrixLayoutSetAttribute(nint layout, int attr, void* buf, nuint size);
    [LibraryImport(L)] public static partial int cublasLtMatmulPreferenceCreate(out nint pref);
    [LibraryImport(L)] public static partial int cublasLtMatmulPreferenceDestroy(nint pref);
    [LibraryImport(L)] public static partial int cublasLtMatmulPreferenceSetAttribute(nint pref, int attr, void* buf, nuint size);
    [LibraryImport(L)] public static partial int cublasLtMatmulAlgoGetHeuristic(nint handle, nint opDesc, nint aDesc, nint bDesc, nint cDesc, nint dDesc,
        nint pref, int requested, HeuristicResult* results, out int returned);
    [LibraryImport(L)] public static partial int cublasLtMatmul(nint handle, nint desc, void* alpha, ulong a, nint aDesc, ulong b, nint bDesc,
        void* beta, ulong c, nint cDesc, ulong d, nint dDesc, void* algo, ulong workspace, nuint workspaceSize, nint stream);
}

/// <summary>One column-major matrix operand as cuBLASLt sees it.</summary>
public readonly record struct LtOperand(CudaDataType Type, long Rows, long Cols, long Ld, bool Transpose, long BatchStride);

/// <summary>
/// What cuBLASLt does to the product before it stores D: nothing; + bias per row; + bias, then GELU (tanh), storing the
/// GELU's input in the aux matrix (the MLP's forward); × GELU'(aux) (the MLP's backward into the GELU's input); the
/// sums of op(B) over k written to the bias pointer, one per column of D (a linear layer's bias gradient, taken in the
/// weight-gradient GEMM instead of a second pass over the output gradient).
/// </summary>
public enum LtEpilogue { None, Bias, BiasGeluAux, DGelu, BGradB }

/// <summary>
/// The shape of one cuBLASLt call; the key of the plan cache. Alignment: the bytes every pointer of the call is aligned
/// to (a power of two up to 256). cuBLASLt assumes 256 unless told, and views into the flat parameter buffer are not.
/// AuxLd: the leading dimension of the aux matrix of the GELU epilogues (cuBLASLt wants a multiple of 8).
/// </summary>
public readonly record struct LtShape(LtOperand A, LtOperand B, LtOperand C, int Batch, LtEpilogue Epilogue, int Alignment = 256, long AuxLd = 0)
{
    public bool Bias => Epilogue is LtEpilogue.Bias or LtEpilogue.BiasGeluAux or LtEpilogue.BGradB;
    public bool Aux => Epilogue is LtEpilogue.BiasGeluAux or LtEpilogue.DGelu;

    /// <summary>The largest power of two (at most 256) dividing every non-zero address.</summary>
    public static int AlignmentOf(params ReadOnlySpan<ulong> pointers)
    {
        ulong a = 256;
        foreach (var p in pointers) if (p != 0) a = Math.Min(a, p & (~p + 1));
        return (int)a;
    }
}

/// <summary>
/// A cuBLASLt handle with a per-shape plan cache (descriptors + the heuristic's first algorithm). Column-major:
/// D = alpha·op(A)·op(B) + beta·C (+ bias per row of D), fp32 compute and scale. Row-major callers swap operands.
/// </summary>
public sealed unsafe class CublasLt : IDisposable
{
    nint handle;
    readonly ConcurrentDictionary<LtShape, Plan> plans = new();
    readonly DeviceMemory workspace;
    public long WorkspaceBytes { get; }

    sealed class Plan
    {
        public nint Desc, A, B, C;
        public CublasLtNative.HeuristicResult Algo;
    }

    public static string StatusName(int s) => s switch
    {
        0 => "CUBLAS_STATUS_SUCCESS", 1 => "CUBLAS_STATUS_NOT_INITIALIZED", 3 => "CUBLAS_STATUS_ALLOC_FAILED",
        7 => "CUBLAS_STATUS_INVALID_VALUE", 8 => "CUBLAS_STATUS_ARCH_MISMATCH", 11 => "CUBLAS_STATUS_MAPPING_ERROR",
        13 => "CUBLAS_STATUS_EXECUTION_FAILED", 14 => "CUBLAS_STATUS_INTERNAL_ERROR", 15 => "CUBLAS_STATUS_NOT_SUPPORTED",
        16 => "CUBLAS_STATUS_LICENSE_ERROR", _ => $"CUBLAS_STATUS_{s}",
    };

    static string StatusText(int s) => s switch
    {
        1 => "the library was not initialized", 3 => "resource allocation failed", 7 => "an unsupported value or parameter was passed",
        8 => "the device does not support this feature", 13 => "the GPU program failed to execute", 14 => "an internal cuBLAS operation failed",
        15 => "the functionality requested is not supported", _ => "cuBLAS error",
    };

    public static void Check(int status, string call, string? detail = null)
    {
        if (status != 0) throw new CudaException(call, "cublasLt", status, StatusName(status), StatusText(status), detail);
    }

    public CublasLt(long workspaceBytes = 32 << 20)
    {
        CudaLibraries.Require(CudaLibrary.CublasLt);
        Check(CublasLtNative.cublasLtCreate(out handle), "cublasLtCreate");
        WorkspaceBytes = workspaceBytes;
        workspace = DeviceMemory.Allocate(workspaceBytes);
    }

    public static string Version()
    {
        CudaLibraries.Require(CudaLibrary.CublasLt);
        ulong v = CublasLtNative.cublasLtGetVersion();
        return $"{v / 10000}.{v / 100 % 100}.{v % 100}";
    }

    static nint Layout(LtOperand o, int batch)
    {
        // The stored matrix: op(X) is Rows×Cols, so the stored one is transposed when Transpose is set.
        long r = o.Transpose ? o.Cols : o.Rows, c = o.Transpose ? o.Rows : o.Cols;
        Check(CublasLtNative.cublasLtMatrixLayoutCreate(out var l, o.Type, (ulong)r, (ulong)c, o.Ld), "cublasLtMatrixLayoutCreate", $"{o}");
        int order = CublasLtNative.OrderCol;
        Check(CublasLtNative.cublasLtMatrixLayoutSetAttribute(l, CublasLtNative.LayoutOrder, &order, 4), "cublasLtMatrixLayoutSetAttribute(ORDER)");
        if (batch > 1)
        {
            long stride = o.BatchStride;
            Check(CublasLtNative.cublasLtMatrixLayoutSetAttribute(l, CublasLtNative.LayoutBatchCount, &batch, 4), "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)");
            Check(CublasLtNative.cublasLtMatrixLayoutSetAttribute(l, CublasLtNative.LayoutStridedBatchOffset, &stride, 8), "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)");
        }
        return l;
    }

    Plan MakePlan(LtShape s, ulong bias, ulong aux)
    {
        var p = new Plan();
        Check(CublasLtNative.cublasLtMatmulDescCreate(out p.Desc, CublasLtNative.ComputeType32F, CudaDataType.R32F), "cublasLtMatmulDescCreate");
        int ta = s.A.Transpose ? 1 : 0, tb = s.B.Transpose ? 1 : 0;
        Check(CublasLtNative.cublasLtMatmulDescSetAttribute(p.Desc, CublasLtNative.DescTransA, &ta, 4), "cublasLtMatmulDescSetAttribute(TRANSA)");
        Check(CublasLtNative.cublasLtMatmulDescSetAttribute(p.Desc, CublasLtNative.DescTransB, &tb, 4), "cublasLtMatmulDescSetAttribute(TRANSB)");
        int epi = s.Epilogue switch
        {
            LtEpilogue.Bias => CublasLtNative.EpilogueBias,
            LtEpilogue.BiasGeluAux => CublasLtNative.EpilogueGeluAuxBias,
            LtEpilogue.DGelu => CublasLtNative.EpilogueDGelu,
            LtEpilogue.BGradB => CublasLtNative.EpilogueBGradB,
            _ => CublasLtNative.EpilogueDefault,
        };
        Check(CublasLtNative.cublasLtMatmulDescSetAttribute(p.Desc, CublasLtNative.DescEpilogue, &epi, 4), "cublasLtMatmulDescSetAttribute(EPILOGUE)");
        // the heuristic reads the epilogue pointers' values for their alignment: the first call's pointers stand for the shape's
        SetEpiloguePointers(p, s, bias, aux);
        if (s.Aux)
        {
            long auxLd = s.AuxLd;
            Check(CublasLtNative.cublasLtMatmulDescSetAttribute(p.Desc, CublasLtNative.DescEpilogueAuxLd, &auxLd, 8), "cublasLtMatmulDescSetAttribute(EPILOGUE_AUX_LD)");
        }
        p.A = Layout(s.A, s.Batch); p.B = Layout(s.B, s.Batch); p.C = Layout(s.C with { Transpose = false }, s.Batch);
        Check(CublasLtNative.cublasLtMatmulPreferenceCreate(out var pref), "cublasLtMatmulPreferenceCreate");
        try
        {
            ulong ws = (ulong)WorkspaceBytes;
            Check(CublasLtNative.cublasLtMatmulPreferenceSetAttribute(pref, CublasLtNative.PrefMaxWorkspaceBytes, &ws, 8), "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
            uint align = (uint)s.Alignment;
            foreach (int attr in (ReadOnlySpan<int>)[CublasLtNative.PrefMinAlignmentA, CublasLtNative.PrefMinAlignmentB, CublasLtNative.PrefMinAlignmentC, CublasLtNative.PrefMinAlignmentD])
                Check(CublasLtNative.cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, 4), $"cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT {attr})");
            CublasLtNative.HeuristicResult result;
            Check(CublasLtNative.cublasLtMatmulAlgoGetHeuristic(handle, p.Desc, p.A, p.B, p.C, p.C, pref, 1, &result, out int n), "cublasLtMatmulAlgoGetHeuristic", $"{s}");
            if (n == 0) throw new CudaException("cublasLtMatmulAlgoGetHeuristic", "cublasLt", 15, StatusName(15), "no algorithm for this shape", $"{s}");
            p.Algo = result;
        }
        finally { CublasLtNative.cublasLtMatmulPreferenceDestroy(pref); }
        return p;
    }

    static void SetEpiloguePointers(Plan p, LtShape s, ulong bias, ulong aux)
    {
        if (s.Bias)
            Check(CublasLtNative.cublasLtMatmulDescSetAttribute(p.Desc, CublasLtNative.DescBiasPointer, &bias, 8), "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
        if (s.Aux)
            Check(CublasLtNative.cublasLtMatmulDescSetAttribute(p.Desc, CublasLtNative.DescEpilogueAuxPointer, &aux, 8), "cublasLtMatmulDescSetAttribute(EPILOGUE_AUX_POINTER)");
    }

    /// <summary>
    /// Column-major D = C = epilogue(alpha·op(A)·op(B) + beta·C) on a stream: bias per row of D (written, one per column
    /// of D, by <see cref="LtEpilogue.BGradB"/>), aux the GELU input matrix (written by <see cref="LtEpilogue.BiasGeluAux"/>,
    /// read by <see cref="LtEpilogue.DGelu"/>). Device addresses.
    /// </summary>
    public void Matmul(LtShape shape, float alpha, ulong a, ulong b, float beta, ulong c, ulong bias, CudaStream stream, ulong aux = 0)
    {
        var p = plans.GetOrAdd(shape, s => MakePlan(s, bias, aux));
        lock (p)
        {
            SetEpiloguePointers(p, shape, bias, aux);
            var algo = p.Algo;
            Check(CublasLtNative.cublasLtMatmul(handle, p.Desc, &alpha, a, p.A, b, p.B, &beta, c, p.C, c, p.C, algo.Algo,
                workspace.Pointer, (nuint)WorkspaceBytes, stream.Handle), "cublasLtMatmul", $"{shape}");
        }
    }

    public int CachedPlans => plans.Count;

    public void Dispose()
    {
        foreach (var p in plans.Values)
        {
            CublasLtNative.cublasLtMatrixLayoutDestroy(p.A); CublasLtNative.cublasLtMatrixLayoutDestroy(p.B);
            CublasLtNative.cublasLtMatrixLayoutDestroy(p.C); CublasLtNative.cublasLtMatmulDescDestroy(p.Desc);
        }
        plans.Clear();
        if (handle != 0) { CublasLtNative.cublasLtDestroy(handle); handle = 0; }
        workspace.Dispose();
    }
}
