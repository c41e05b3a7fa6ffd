using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace FastBlockDiff.Kernels.Ilgpu;

/// <summary>Device memory of the ILGPU backend: one ILGPU 1-D buffer of floats or ints.</summary>
public sealed class IlgpuStorage<T> : DeviceStorage where T : unmanaged
{
    /// <summary>
    /// Takes ownership of <paramref name="buffer"/>. ILGPU's MemoryBuffer1D is a wrapper with its own finalizer that
    /// frees the raw buffer underneath, while the ArrayViews handed to kernels reference only that raw buffer: once
    /// this storage became unreachable in the middle of an op (its last FloatView already turned into an ArrayView),
    /// the finalizer thread could free memory a running kernel still uses. The wrapper's finalizer is therefore
    /// suppressed: the raw buffer is freed by <see cref="Dispose"/> or, when nobody disposes it, by the raw buffer's
    /// own finalizer, which cannot run while any view of it is still reachable.
    /// </summary>
    public IlgpuStorage(MemoryBuffer1D<T, Stride1D.Dense> buffer, int length)
    {
        Buffer = buffer;
        Length = length;
        GC.SuppressFinalize(buffer);
    }

    public MemoryBuffer1D<T, Stride1D.Dense> Buffer { get; }
    public override int Length { get; }
    public ArrayView<T> View(int offset, int length) => ((ArrayView<T>)Buffer.View).SubView(offset, length);
    public override void Dispose()
    {
        if (!Buffer.IsDisposed && !Buffer.Accelerator.IsDisposed)
        {
            Buffer.Accelerator.Synchronize(); // a queued kernel may still use this memory
            Buffer.Dispose();
        }
        base.Dispose();
    }
}

/// <summary>
/// The op set as ILGPU kernels, on ILGPU's CUDA (PTX emitted by ILGPU itself, no NVRTC or cuBLAS needed),
/// OpenCL or CPU accelerator. Kernels are compiled on first use and kept for the backend's life.
/// Semantics follow <see cref="IBackend"/> and equal the CPU backend to fp32 rounding.
/// </summary>
public sealed class IlgpuBackend : IBackend
{
    readonly Context context;
    readonly Accelerator acc;
    readonly IlgpuStorage<float> dummy;
    MemoryBuffer1D<float, Stride1D.Dense>? scratch, deltaBuf, colScratch;

    public string Name => "ilgpu";
    public string Description { get; }
    /// <summary>The ILGPU accelerator type in use: Cuda, OpenCL or CPU.</summary>
    public AcceleratorType AcceleratorType => acc.AcceleratorType;
    public Accelerator Accelerator => acc;

    /// <summary>
    /// The ILGPU CPU accelerator simulates groups with OS threads: 64 threads per group (the largest group the
    /// kernels use), one simulated multiprocessor per two cores (group barriers get slow when threads oversubscribe the cores).
    /// </summary>
    static CPUDevice CpuDevice => new(4, 16, Math.Max(1, Environment.ProcessorCount / 2));

    /// <param name="device">auto (a GPU accelerator if ILGPU finds one, else the CPU accelerator), cuda, opencl or cpu.</param>
    public IlgpuBackend(string device = "auto")
    {
        device = (device ?? "auto").ToLowerInvariant();
        if (device is not ("auto" or "cuda" or "opencl" or "cpu"))
            throw new ArgumentException($"unknown ILGPU device '{device}' (expected auto, cuda, opencl or cpu)", nameof(device));
        context = Context.Create(b =>
        {
            b.Optimize(OptimizationLevel.O1);
            if (device is "auto" or "cuda") b.Cuda();
            if (device is "auto" or "opencl") b.OpenCL();
            if (device is "auto" or "cpu") b.CPU(CpuDevice);
        });
        try
        {
            Device? chosen = device switch
            {
                "cuda" => context.Devices.FirstOrDefault(d => d.AcceleratorType == AcceleratorType.Cuda),
                "opencl" => context.Devices.FirstOrDefault(d => d.AcceleratorType == AcceleratorType.OpenCL),
                "cpu" => context.Devices.FirstOrDefault(d => d.AcceleratorType == AcceleratorType.CPU),
                _ => context.Devices.FirstOrDefault(d => d.AcceleratorType == AcceleratorType.Cuda)
                     ?? context.Devices.FirstOrDefault(d => d.AcceleratorType == AcceleratorType.OpenCL)
                     ?? context.Devices.FirstOrDefault(d => d.AcceleratorType == AcceleratorType.CPU),
            };
            if (chosen == null)
                throw new InvalidOperationException(device switch
                {
                    "cuda" => "ILGPU found no CUDA device: " + IlgpuProbe.WhyNoCuda(),
                    "opencl" => "ILGPU found no OpenCL device: " + IlgpuProbe.WhyNoOpenCl(),
                    _ => "ILGPU found no device at all",
                });
            acc = chosen.CreateAccelerator(context);
            if (acc.MaxNumThreadsPerGroup < IlgpuKernels.GemmThreads)
                throw new NotSupportedException($"ILGPU accelerator {acc.Name} allows only {acc.MaxNumThreadsPerGroup} threads per group; the kernels need {IlgpuKernels.GemmThreads}");
            Description = acc.AcceleratorType == AcceleratorType.CPU
                ? $"ILGPU CPU accelerator (simulated GPU, for testing): {acc.NumMultiprocessors} multiprocessor(s) × {acc.MaxNumThreadsPerGroup} threads"
                : $"ILGPU {acc.AcceleratorType} accelerator: {acc.Name}, {acc.MemorySize / (1 << 20)} MiB, {acc.NumMultiprocessors} multiprocessors";
            dummy = new IlgpuStorage<float>(acc.Allocate1D<float>(1), 1);
            DeterministicEmbeddingBackward = acc.AcceleratorType == AcceleratorType.CPU;
        }
        catch
        {
            acc?.Dispose();
            context.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        scratch?.Dispose();
        deltaBuf?.Dispose();
        colScratch?.Dispose();
        dummy.Dispose();
        acc.Dispose();
        context.Dispose();
    }

    public void Synchronize() => acc.Synchronize();

    // ------------------------------------------------------------ memory
    // Fresh buffers are zero, as on the CPU backend (engine code relies on it, e.g. for optimiser moments).
    public FloatView AllocFloat(int length) => new(new IlgpuStorage<float>(Zeroed<float>(length), length), 0, length);
    public IntView AllocInt(int length) => new(new IlgpuStorage<int>(Zeroed<int>(length), length), 0, length);

    MemoryBuffer1D<T, Stride1D.Dense> Zeroed<T>(int length) where T : unmanaged
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), $"negative buffer length {length}");
        var b = acc.Allocate1D<T>(Math.Max(1, length));
        b.MemSetToZero();
        return b;
    }

    static ArrayView<float> V(FloatView v) => v.Storage is IlgpuStorage<float> s ? s.View(v.Offset, v.Length)
        : throw new ArgumentException($"buffer belongs to another backend ({v.Storage.GetType().Name})");
    static ArrayView<int> V(IntView v) => v.Storage is IlgpuStorage<int> s ? s.View(v.Offset, v.Length)
        : throw new ArgumentException($"buffer belongs to another backend ({v.Storage.GetType().Name})");
    ArrayView<float> VOrDummy(FloatView? v) => v is { } x ? V(x) : dummy.View(0, 1);

    public void Upload(FloatView dst, ReadOnlySpan<float> src)
    {
        if (src.Length > dst.Length) throw new ArgumentException($"upload of {src.Length} floats into a view of {dst.Length}");
        if (src.Length == 0) return;
        acc.Synchronize(); // the host copy is not ordered with queued kernels (a fresh buffer's zero fill among them)
        CopyIn(V(dst), src);
        GC.KeepAlive(dst.Storage); // the copy works on a raw pointer: the storage must outlive it
    }

    public void Download(FloatView src, Span<float> dst)
    {
        if (src.Length > dst.Length) throw new ArgumentException($"download of a view of {src.Length} into {dst.Length} floats");
        if (src.Length == 0) return;
        acc.Synchronize();
        CopyOut(V(src), dst);
        GC.KeepAlive(src.Storage); // the copy works on a raw pointer: the storage must outlive it
    }

    public void Upload(IntView dst, ReadOnlySpan<int> src)
    {
        if (src.Length > dst.Length) throw new ArgumentException($"upload of {src.Length} ints into a view of {dst.Length}");
        if (src.Length == 0) return;
        acc.Synchronize(); // the host copy is not ordered with queued kernels (a fresh buffer's zero fill among them)
        CopyIn(V(dst), src);
        GC.KeepAlive(dst.Storage); // the copy works on a raw pointer: the storage must outlive it
    }

    public void Download(IntView src, Span<int> dst)
    {
        if (src.Length > dst.Length) throw new ArgumentException($"download of a view of {src.Length} into {dst.Length} ints");
        if (src.Length == 0) return;
        acc.Synchronize();
        CopyOut(V(src), dst);
        GC.KeepAlive(src.Storage); // the copy works on a raw pointer: the storage must outlive it
    }

    // ILGPU's CopyFromCPU/CopyToCPU(ref T, length) take "the base address of the pinned CPU buffer": they wrap the raw
    // address and copy through it. A ref into an unpinned managed array is moved by a compacting GC in the middle of
    // the copy, which then reads or writes the array's old location: an upload that silently keeps stale data, a
    // download that returns the array's previous contents (the intermittent "gemm wrote outside C": all zeros came
    // back). Every host copy therefore goes through these two, which pin the span for the copy's duration.
    static unsafe void CopyIn<T>(ArrayView<T> dst, ReadOnlySpan<T> src) where T : unmanaged
    {
        fixed (T* p = src) dst.CopyFromCPU(ref Unsafe.AsRef<T>(p), src.Length);
    }

    static unsafe void CopyOut<T>(ArrayView<T> src, Span<T> dst) where T : unmanaged
    {
        fixed (T* p = dst) src.CopyToCPU(ref Unsafe.AsRef<T>(p), src.Length);
    }

    // ------------------------------------------------------------ kernel cache
    Action<Index1D, ArrayView<float>, float>? kFill;
    Action<Index1D, ArrayView<float>, ArrayView<float>>? kCopy;
    Action<Index1D, ArrayView<float>, int, ArrayView<float>, int, int>? kCopyRows;
    Action<Index1D, ArrayView<float>, float, ArrayView<float>>? kAxpy;
    Action<Index1D, ArrayView<float>, float, float>? kScaleShift;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>? kMul;
    Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, int>? kPartial;
    Action<Index1D, ArrayView<float>, ArrayView<float>, int, int>? kColPartial;
    Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, int>? kColCombine;
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>? kGemm, kGemm64;
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>? kLnF;
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>? kLnDx;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>? kLnDw;
    Action<Index1D, ArrayView<float>, ArrayView<float>>? kGeluF, kSiluF;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>? kGeluB, kSiluB;
    Action<Index1D, ArrayView<float>, int, int, int, ArrayView<int>, ArrayView<float>, ArrayView<float>, float>? kRotary;
    Action<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>? kEmbF, kEmbB;
    Action<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>? kEmbBCols;

    /// <summary>
    /// Embedding backward without atomics (one thread per column, rows in order): deterministic and equal to the CPU
    /// backend bit for bit, but only dim threads wide. Default on the CPU accelerator, whose float atomic add spins
    /// forever on a NaN target; GPUs use Atomic.Add.
    /// </summary>
    public bool DeterministicEmbeddingBackward { get; set; }
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, float, ulong>? kResF, kResDy;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, float, ulong>? kResGate;
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttnArgs>? kAttnF;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttnArgs>? kAttnDelta;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttnArgs>? kAttnDq, kAttnDkv;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DecodeArgs>? kDecode;
    Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, float, int>? kCe;
    Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, float, float, float, float, float, float, float>? kAdam;
    Action<Index1D, ArrayView<float>, ArrayView<float>, float>? kEma;
    Action<KernelConfig, ArrayView<float>, int, int, float, float, ArrayView<float>, ArrayView<int>, ArrayView<float>>? kSample;

    // ------------------------------------------------------------ elementwise and reductions
    public void Fill(FloatView x, float value)
    {
        if (x.Length == 0) return;
        (kFill ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float>(IlgpuKernels.Fill))(x.Length, V(x), value);
    }

    public void Copy(FloatView dst, FloatView src)
    {
        if (src.Length > dst.Length) throw new ArgumentException($"copy of {src.Length} into {dst.Length}");
        if (src.Length == 0) return;
        (kCopy ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(IlgpuKernels.Copy))(src.Length, V(dst), V(src));
    }

    public void CopyRows(FloatView dst, int dstStride, FloatView src, int srcStride, int rows, int cols)
    {
        if (rows == 0 || cols == 0) return;
        (kCopyRows ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, ArrayView<float>, int, int>(IlgpuKernels.CopyRows))(
            rows * cols, V(dst), dstStride, V(src), srcStride, cols);
    }

    public void Axpy(FloatView y, float alpha, FloatView x)
    {
        if (y.Length == 0) return;
        (kAxpy ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float, ArrayView<float>>(IlgpuKernels.Axpy))(y.Length, V(y), alpha, V(x));
    }

    public void ScaleShift(FloatView x, float alpha, float beta)
    {
        if (x.Length == 0) return;
        (kScaleShift ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float, float>(IlgpuKernels.ScaleShift))(x.Length, V(x), alpha, beta);
    }

    public void Mul(FloatView dst, FloatView a, FloatView b, bool accumulate)
    {
        if (dst.Length == 0) return;
        (kMul ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(IlgpuKernels.Mul))(
            dst.Length, V(dst), V(a), V(b), accumulate ? 1 : 0);
    }

    public double SumSquares(FloatView x) => Reduce(x, true);
    public double Sum(FloatView x) => Reduce(x, false);

    double Reduce(FloatView x, bool squares)
    {
        int n = x.Length;
        if (n == 0) return 0;
        // at most 1024 elements per float partial (the CPU backend sums float chunks of 4096), combined in double here
        int parts = Math.Max(Math.Min(n, 16384), (n + 1023) / 1024);
        if (scratch == null || scratch.Length < parts)
        {
            acc.Synchronize();
            scratch?.Dispose();
            scratch = acc.Allocate1D<float>(Math.Max(parts, 16384));
        }
        var part = ((ArrayView<float>)scratch.View).SubView(0, parts);
        (kPartial ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, int>(IlgpuKernels.PartialSums))(
            parts, V(x), part, n, parts, squares ? 1 : 0);
        var host = new float[parts];
        acc.Synchronize();
        CopyOut(part, host);
        double total = 0;
        foreach (var v in host) total += v;
        return total;
    }

    public void ColumnSum(FloatView dst, FloatView src, int rows, int cols, bool accumulate)
    {
        if (cols == 0) return;
        if (rows == 0) { if (!accumulate) Fill(dst.Slice(0, cols), 0f); return; }
        int chunks = Chunks(rows);
        var part = ColumnScratch(chunks * cols, 0);
        (kColPartial ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int>(IlgpuKernels.ColumnPartial))(
                chunks * cols, part, V(src), rows, cols);
        Combine(V(dst), part, chunks, cols, accumulate);
    }

    static int Chunks(int rows) => Math.Max(1, (rows + IlgpuKernels.ColumnChunk - 1) / IlgpuKernels.ColumnChunk);

    void Combine(ArrayView<float> dst, ArrayView<float> partial, int chunks, int cols, bool accumulate) =>
        (kColCombine ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, int>(IlgpuKernels.ColumnCombine))(
            cols, dst, partial, chunks, cols, accumulate ? 1 : 0);

    /// <summary>A slice of the scratch buffer for column partials; slot 0 and 1 are disjoint halves.</summary>
    ArrayView<float> ColumnScratch(int length, int slot)
    {
        if (colScratch == null || colScratch.Length < 2L * length)
        {
            acc.Synchronize(); // kernels still queued may use the old buffer
            colScratch?.Dispose();
            colScratch = acc.Allocate1D<float>(Math.Max(2L * length, 1 << 16));
            colScratch.MemSetToZero();
        }
        var all = (ArrayView<float>)colScratch.View;
        return all.SubView(slot * (all.Length / 2), length);
    }

    // ------------------------------------------------------------ GEMM
    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, FloatView a, int lda, FloatView b, int ldb,
        float beta, FloatView c, int ldc, FloatView? bias = null, int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0)
    {
        if (m <= 0 || n <= 0 || batch <= 0) return;
        var args = new GemmArgs
        {
            M = m, N = n, K = k, Lda = lda, Ldb = ldb, Ldc = ldc, TransA = transA ? 1 : 0, TransB = transB ? 1 : 0,
            HasBias = bias.HasValue ? 1 : 0, Alpha = alpha, Beta = beta, StrideA = strideA, StrideB = strideB, StrideC = strideC,
        };
        var group = new Index3D(IlgpuKernels.GemmThreads, 1, 1);
        if (m >= IlgpuKernels.GemmTile64 && n >= IlgpuKernels.GemmTile64)
        {
            var grid64 = new Index3D((n + IlgpuKernels.GemmTile64 - 1) / IlgpuKernels.GemmTile64, (m + IlgpuKernels.GemmTile64 - 1) / IlgpuKernels.GemmTile64, batch);
            (kGemm64 ??= acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(IlgpuKernels.Gemm64))(
                new KernelConfig(grid64, group), V(a), V(b), V(c), VOrDummy(bias), args);
            return;
        }
        var grid = new Index3D((n + IlgpuKernels.GemmTile - 1) / IlgpuKernels.GemmTile, (m + IlgpuKernels.GemmTile - 1) / IlgpuKernels.GemmTile, batch);
        (kGemm ??= acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(IlgpuKernels.Gemm))(
            new KernelConfig(grid, group), V(a), V(b), V(c), VOrDummy(bias), args);
    }

    // ------------------------------------------------------------ normalisation and activations
    static KernelConfig Rows(int rows) => new(new Index1D(rows), new Index1D(IlgpuKernels.RowThreads));

    public void LayerNormForward(FloatView x, FloatView weight, FloatView? bias, FloatView y, FloatView mean, FloatView rstd, int rows, int dim, float eps)
    {
        if (rows == 0) return;
        (kLnF ??= acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(IlgpuKernels.LayerNormForward))(
            Rows(rows), V(x), V(weight), VOrDummy(bias), bias.HasValue ? 1 : 0, V(y), V(mean), V(rstd), dim, eps);
    }

    public void LayerNormBackward(FloatView dy, FloatView x, FloatView weight, FloatView mean, FloatView rstd,
        FloatView dx, FloatView dWeight, FloatView? dBias, int rows, int dim)
    {
        if (rows == 0) return;
        // weight and bias gradients first: they read dy, which dx may alias
        int chunks = Chunks(rows);
        var pw = ColumnScratch(chunks * dim, 0); var pb = ColumnScratch(chunks * dim, 1);
        (kLnDw ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(IlgpuKernels.LayerNormBackwardDw))(
            chunks * dim, V(dy), V(x), V(mean), V(rstd), pw, pb, rows, dim);
        Combine(V(dWeight), pw, chunks, dim, true);
        if (dBias is { } db) Combine(V(db), pb, chunks, dim, true);
        (kLnDx ??= acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(IlgpuKernels.LayerNormBackwardDx))(
            Rows(rows), V(dy), V(x), V(weight), V(mean), V(rstd), V(dx), dim);
    }

    public void GeluForward(FloatView x, FloatView y)
    {
        if (x.Length == 0) return;
        (kGeluF ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(IlgpuKernels.GeluForward))(x.Length, V(x), V(y));
    }

    public void GeluBackward(FloatView x, FloatView dy, FloatView dx)
    {
        if (x.Length == 0) return;
        (kGeluB ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(IlgpuKernels.GeluBackward))(x.Length, V(x), V(dy), V(dx));
    }

    public void SiluForward(FloatView x, FloatView y)
    {
        if (x.Length == 0) return;
        (kSiluF ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(IlgpuKernels.SiluForward))(x.Length, V(x), V(y));
    }

    public void SiluBackward(FloatView x, FloatView dy, FloatView dx)
    {
        if (x.Length == 0) return;
        (kSiluB ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(IlgpuKernels.SiluBackward))(x.Length, V(x), V(dy), V(dx));
    }

    // ------------------------------------------------------------ transformer pieces
    public void Rotary(FloatView x, int rows, int rowStride, int heads, int headDim, IntView positions, FloatView cos, FloatView sin, bool inverse)
    {
        int n = rows * heads * (headDim / 2);
        if (n == 0) return;
        (kRotary ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, int, int, ArrayView<int>, ArrayView<float>, ArrayView<float>, float>(IlgpuKernels.Rotary))(
            n, V(x), rowStride, heads, headDim, V(positions), V(cos), V(sin), inverse ? -1f : 1f);
    }

    public void EmbeddingForward(IntView ids, FloatView table, FloatView output, int rows, int dim)
    {
        if (rows * dim == 0) return;
        (kEmbF ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>(IlgpuKernels.EmbeddingForward))(
            rows * dim, V(ids), V(table), V(output), dim, table.Length / dim);
    }

    public void EmbeddingBackward(IntView ids, FloatView dOutput, FloatView dTable, int rows, int dim)
    {
        if (rows * dim == 0) return;
        if (DeterministicEmbeddingBackward)
        {
            (kEmbBCols ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>(IlgpuKernels.EmbeddingBackwardColumns))(
                dim, V(ids), V(dOutput), V(dTable), rows, dim, dTable.Length / dim);
            return;
        }
        (kEmbB ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>(IlgpuKernels.EmbeddingBackward))(
            rows * dim, V(ids), V(dOutput), V(dTable), dim, dTable.Length / dim);
    }

    public void ResidualGatedForward(FloatView x, FloatView y, FloatView gate, int rows, int dim, float dropP, ulong seed)
    {
        if (rows * dim == 0) return;
        float keepScale = dropP > 0 ? 1f / (1f - dropP) : 1f;
        (kResF ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, float, ulong>(IlgpuKernels.ResidualGatedForward))(
            rows * dim, V(x), V(y), V(gate), dim, dropP, keepScale, seed);
    }

    public void ResidualGatedBackward(FloatView dx, FloatView y, FloatView gate, FloatView dy, FloatView dGate, int rows, int dim, float dropP, ulong seed)
    {
        if (rows * dim == 0) return;
        float keepScale = dropP > 0 ? 1f / (1f - dropP) : 1f;
        // dGate first: dy may alias dx.
        int chunks = Chunks(rows);
        var part = ColumnScratch(chunks * dim, 0);
        (kResGate ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, float, ulong>(IlgpuKernels.ResidualGatedBackwardGate))(
            chunks * dim, V(dx), V(y), part, rows, dim, dropP, keepScale, seed);
        Combine(V(dGate), part, chunks, dim, true);
        (kResDy ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, float, ulong>(IlgpuKernels.ResidualGatedBackwardDy))(
            rows * dim, V(dx), V(gate), V(dy), dim, dropP, keepScale, seed);
    }

    // ------------------------------------------------------------ attention
    static AttnArgs Args(AttentionShape s)
    {
        s.Validate();
        if (s.HeadDim > IlgpuKernels.MaxHeadDim) throw new NotSupportedException($"ILGPU attention supports head_dim ≤ {IlgpuKernels.MaxHeadDim}, got {s.HeadDim}");
        return new AttnArgs
        {
            Batch = s.Batch, Heads = s.Heads, HeadDim = s.HeadDim, SeqLen = s.SeqLen, Kind = (int)s.Mask,
            BlockSize = s.Mask == MaskKind.Causal ? 1 : Math.Max(1, s.BlockSize), Scale = 1f / MathF.Sqrt(s.HeadDim),
        };
    }

    public void AttentionForward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse)
    {
        var p = Args(shape);
        var grid = new Index3D((shape.SeqLen + IlgpuKernels.AttnTile - 1) / IlgpuKernels.AttnTile, shape.Heads, shape.Batch);
        (kAttnF ??= acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, AttnArgs>(IlgpuKernels.AttentionForward))(
            new KernelConfig(grid, new Index3D(IlgpuKernels.AttnTile, 1, 1)), V(qkv), V(output), V(lse), p);
    }

    public void AttentionBackward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse, FloatView dOutput, FloatView dQkv)
    {
        var p = Args(shape);
        int n = shape.Batch * shape.Heads * shape.SeqLen;
        if (deltaBuf == null || deltaBuf.Length < n)
        {
            acc.Synchronize(); // kernels still queued may use the old buffer
            deltaBuf?.Dispose();
            deltaBuf = acc.Allocate1D<float>(n);
        }
        var delta = ((ArrayView<float>)deltaBuf.View).SubView(0, n);
        (kAttnDelta ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttnArgs>(IlgpuKernels.AttentionDelta))(
            n, V(output), V(dOutput), delta, p);
        (kAttnDq ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttnArgs>(IlgpuKernels.AttentionBackwardDq))(
            n, V(qkv), V(lse), delta, V(dOutput), V(dQkv), p);
        (kAttnDkv ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttnArgs>(IlgpuKernels.AttentionBackwardDkv))(
            n, V(qkv), V(lse), delta, V(dOutput), V(dQkv), p);
    }

    public void DecodeAttention(DecodeShape shape, FloatView qkv, FloatView kCache, FloatView vCache, FloatView output)
    {
        if (shape.HeadDim > IlgpuKernels.MaxHeadDim) throw new NotSupportedException($"ILGPU attention supports head_dim ≤ {IlgpuKernels.MaxHeadDim}, got {shape.HeadDim}");
        int n = shape.Batch * shape.Heads * shape.BlockLen;
        if (n == 0) return;
        var p = new DecodeArgs
        {
            Batch = shape.Batch, Heads = shape.Heads, HeadDim = shape.HeadDim, BlockLen = shape.BlockLen, CacheLen = shape.CacheLen,
            CacheCapacity = shape.CacheCapacity, Scale = 1f / MathF.Sqrt(shape.HeadDim),
        };
        (kDecode ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DecodeArgs>(IlgpuKernels.DecodeAttention))(
            n, V(qkv), V(kCache), V(vCache), V(output), p);
    }

    // ------------------------------------------------------------ loss, optimiser, sampling
    public void SubsCrossEntropy(FloatView logits, IntView targets, FloatView weights, FloatView loss, int rows, int vocab, int maskId, float gradScale, bool writeGrad)
    {
        if (rows == 0) return;
        (kCe ??= acc.LoadStreamKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, float, int>(IlgpuKernels.SubsCrossEntropy))(
            Rows(rows), V(logits), V(targets), V(weights), V(loss), vocab, maskId, gradScale, writeGrad ? 1 : 0);
    }

    public void AdamW(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep s)
    {
        if (param.Length == 0) return;
        float bc1 = 1f - MathF.Pow(s.Beta1, s.Step), bc2 = 1f - MathF.Pow(s.Beta2, s.Step);
        float decay = 1f - s.LearningRate * s.WeightDecay, stepSize = s.LearningRate / bc1, sqrtBc2 = MathF.Sqrt(bc2);
        (kAdam ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, float, float, float, float, float, float, float>(IlgpuKernels.AdamW))(
            param.Length, V(param), V(grad), V(m), V(v), s.Beta1, s.Beta2, s.Epsilon, s.GradScale, decay, stepSize, sqrtBc2);
    }

    public void Ema(FloatView ema, FloatView param, float decay)
    {
        if (ema.Length == 0) return;
        (kEma ??= acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, float>(IlgpuKernels.Ema))(ema.Length, V(ema), V(param), decay);
    }

    public void SampleCategorical(FloatView logits, int rows, int vocab, int maskId, float temperature, float topP, FloatView uniforms, IntView tokens, FloatView probs)
    {
        if (rows == 0) return;
        (kSample ??= acc.LoadStreamKernel<ArrayView<float>, int, int, float, float, ArrayView<float>, ArrayView<int>, ArrayView<float>>(IlgpuKernels.SampleCategorical))(
            Rows(rows), V(logits), vocab, maskId, temperature, topP, V(uniforms), V(tokens), V(probs));
    }
}
