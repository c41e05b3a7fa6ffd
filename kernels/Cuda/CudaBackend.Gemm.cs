using System.Collections.Concurrent;
using FastBlockDiff.Interop;

namespace FastBlockDiff.Kernels.Cuda;

/// <summary>
/// GEMMs through cuBLASLt, with the work that follows a product folded into its epilogue where cuBLASLt has an
/// algorithm for it: the bias, the MLP's bias + GELU (saving the GELU input for the backward), the GELU backward, and
/// a linear layer's bias gradient in its weight-gradient GEMM (BGRADB).
/// Where it has none (remembered per shape) the plain GEMM runs and our kernels do the rest.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    // shapes whose epilogue cuBLASLt had no algorithm for: they go straight to the plain GEMM and our kernels
    readonly ConcurrentDictionary<LtShape, bool> noEpilogue = new();

    /// <summary>GEMMs that ran with a fused epilogue beyond the bias (GELU forward or backward), for tests.</summary>
    public long FusedGeluGemms { get; private set; }

    /// <summary>Weight-gradient GEMMs that took the bias gradient in their epilogue (BGRADB), for tests.</summary>
    public long FusedBiasGradientGemms { get; private set; }

    /// <summary>The operands as cuBLASLt reads them: bf16 in bf16 mode (the persistent copy for weights, converted scratch for activations).</summary>
    (ulong A, ulong B, CudaDataType Type) Operands(FloatView a, FloatView b)
    {
        // whole views are converted, so strides and batches keep their meaning
        if (Bf16Gemm) return (Bf16Operand(a, "gemm.a16"), Bf16Operand(b, "gemm.b16"), CudaDataType.R16BF);
        return (Ptr(a), Ptr(b), CudaDataType.R32F);
    }

    // Row-major C[m,n] = op(A)·op(B) is column-major C^T[n,m] = op(B)^T·op(A)^T: the operands swap places.
    static LtShape Shape(CudaDataType type, bool transA, bool transB, int m, int n, int k, int lda, int ldb, int ldc, int batch,
        long strideA, long strideB, long strideC, LtEpilogue epilogue, int alignment) =>
        new(new LtOperand(type, n, k, ldb, transB, strideB),
            new LtOperand(type, k, m, lda, transA, strideA),
            new LtOperand(CudaDataType.R32F, n, m, ldc, false, strideC),
            batch, epilogue, alignment, epilogue is LtEpilogue.BiasGeluAux or LtEpilogue.DGelu ? ldc : 0);

    /// <summary>One cuBLASLt call with an epilogue; false (and remembered) when cuBLASLt has no algorithm for it.</summary>
    bool TryEpilogue(LtShape shape, float alpha, ulong a, ulong b, float beta, ulong c, ulong bias, ulong aux)
    {
        if (noEpilogue.ContainsKey(shape)) return false;
        try { lt.Matmul(shape, alpha, b, a, beta, c, bias, stream, aux); return true; }
        catch (CudaException) { noEpilogue[shape] = true; return false; }
    }

    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, FloatView a, int lda, FloatView b, int ldb,
        float beta, FloatView c, int ldc, FloatView? bias = null, int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0)
    {
        if (m <= 0 || n <= 0 || batch <= 0) return;
        Enter();
        if (k <= 0)
        {
            // C = beta·C (+ bias): nothing to multiply
            for (int p = 0; p < batch; p++)
                for (int r = 0; r < m; r++)
                {
                    var row = c.Slice((int)(p * strideC) + r * ldc, n);
                    if (beta == 0) Fill(row, 0); else ScaleShift(row, beta, 0);
                }
            if (bias is { } bv0) AddBias(c, ldc, bv0, m, n, strideC, batch);
            return;
        }
        var (pa, pb, type) = Operands(a, b);
        Wrote(c);
        if (bias is { } bv && batch == 1)
        {
            var fused = Shape(type, transA, transB, m, n, k, lda, ldb, ldc, 1, 0, 0, 0, LtEpilogue.Bias, LtShape.AlignmentOf(pa, pb, Ptr(c), Ptr(bv)));
            if (TryEpilogue(fused, alpha, pa, pb, beta, Ptr(c), Ptr(bv), 0)) return;
        }
        var plain = Shape(type, transA, transB, m, n, k, lda, ldb, ldc, batch, strideA, strideB, strideC, LtEpilogue.None, LtShape.AlignmentOf(pa, pb, Ptr(c)));
        lt.Matmul(plain, alpha, pb, pa, beta, Ptr(c), 0, stream);
        if (bias is { } b2) AddBias(c, ldc, b2, m, n, strideC, batch);
    }

    public void GemmBiasGelu(bool transA, bool transB, int m, int n, int k, FloatView a, int lda, FloatView b, int ldb, FloatView bias, FloatView preActivation, FloatView output)
    {
        if (m <= 0 || n <= 0) return;
        long cells = (long)m * n;
        if (preActivation.Length < cells || output.Length < cells)
            throw new ArgumentException($"GEMM+GELU of {m}×{n} into views of {preActivation.Length} and {output.Length}");
        var pre = preActivation.Slice(0, (int)cells);
        if (k > 0)
        {
            Enter();
            var (pa, pb, type) = Operands(a, b);
            Wrote(pre); Wrote(output);
            var fused = Shape(type, transA, transB, m, n, k, lda, ldb, n, 1, 0, 0, 0, LtEpilogue.BiasGeluAux,
                LtShape.AlignmentOf(pa, pb, Ptr(output), Ptr(bias), Ptr(pre)));
            if (TryEpilogue(fused, 1f, pa, pb, 0f, Ptr(output), Ptr(bias), Ptr(pre))) { FusedGeluGemms++; return; }
        }
        Gemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, pre, n, bias);
        GeluForward(pre, output.Slice(0, (int)cells));
    }

    public void GemmGeluBackward(bool transA, bool transB, int m, int n, int k, FloatView a, int lda, FloatView b, int ldb, FloatView preActivation, FloatView dPre)
    {
        if (m <= 0 || n <= 0) return;
        long cells = (long)m * n;
        if (preActivation.Length < cells || dPre.Length < cells)
            throw new ArgumentException($"GEMM+GELU backward of {m}×{n} with views of {preActivation.Length} and {dPre.Length}");
        var d = dPre.Slice(0, (int)cells);
        if (k > 0)
        {
            Enter();
            var (pa, pb, type) = Operands(a, b);
            Wrote(d);
            var fused = Shape(type, transA, transB, m, n, k, lda, ldb, n, 1, 0, 0, 0, LtEpilogue.DGelu,
                LtShape.AlignmentOf(pa, pb, Ptr(d), Ptr(preActivation)));
            if (TryEpilogue(fused, 1f, pa, pb, 0f, Ptr(d), 0, Ptr(preActivation))) { FusedGeluGemms++; return; }
        }
        Gemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, d, n);
        GeluBackward(preActivation.Slice(0, (int)cells), d, d);
    }

    public void LinearWeightGradients(FloatView dy, FloatView x, FloatView dWeight, FloatView? dBias, int rows, int inDim, int outDim)
    {
        if (dBias is { } db && rows > 0 && inDim > 0 && outDim > 0)
        {
            // dWᵀ[in, out] += xᵀ·dy column-major: cuBLASLt's B is dy, so BGRADB's sums over k are Σ_r dy[r, :]. It
            // writes them (no accumulate): into scratch, then added to dBias (outDim elements, not rows·outDim).
            Enter();
            var (pa, pb, type) = Operands(dy, x);
            ulong sums = Scratch("gemm.bgradb", outDim * 4L);
            Wrote(dWeight); Wrote(db);
            var fused = Shape(type, true, false, outDim, inDim, rows, outDim, inDim, inDim, 1, 0, 0, 0, LtEpilogue.BGradB,
                LtShape.AlignmentOf(pa, pb, Ptr(dWeight), sums));
            if (TryEpilogue(fused, 1f, pa, pb, 1f, Ptr(dWeight), sums, 0))
            {
                FusedBiasGradientGemms++;
                Flat(EW, "fbd_axpy", outDim, Ptr(db), 1f, sums, outDim);
                return;
            }
        }
        Gemm(true, false, outDim, inDim, rows, 1f, dy, outDim, x, inDim, 1f, dWeight, inDim);
        if (dBias is { } b) ColumnSum(b, dy, rows, outDim, accumulate: true);
    }
}
