using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace FastBlockDiff.Kernels.Cpu;

/// <summary>
/// The managed fp32 reference backend: readable first, then fast (TensorPrimitives SIMD + Parallel.For).
/// Every other backend is tested against this one. Ops are split by family over partial-class files.
/// </summary>
public sealed partial class CpuBackend : IBackend
{
    public string Name => "cpu";
    public string Description => $"managed CPU, {Environment.ProcessorCount} threads, {VectorWidth}";
    static string VectorWidth => System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "AVX-512"
        : System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? "AVX2" : "SSE/scalar";

    public void Dispose() { }
    public void Synchronize() { }

    public FloatView AllocFloat(int length) => new(new CpuStorage<float>(length), 0, length);
    public IntView AllocInt(int length) => new(new CpuStorage<int>(length), 0, length);

    /// <summary>The span a view covers. Only for code that knows it runs on the CPU backend (tests, this backend).</summary>
    public static Span<float> Span(FloatView v) => Storage(v).AsSpan(v.Offset, v.Length);
    public static Span<int> Span(IntView v) => Storage(v).AsSpan(v.Offset, v.Length);
    /// <summary>The backing array and the view's offset in it, for kernels that index directly.</summary>
    public static float[] Storage(FloatView v) => v.Storage is CpuStorage<float> s ? s.Data
        : throw new ArgumentException($"buffer belongs to another backend ({v.Storage.GetType().Name})");
    public static int[] Storage(IntView v) => v.Storage is CpuStorage<int> s ? s.Data
        : throw new ArgumentException($"buffer belongs to another backend ({v.Storage.GetType().Name})");

    public void Upload(FloatView dst, ReadOnlySpan<float> src) => src.CopyTo(Span(dst));
    public void Download(FloatView src, Span<float> dst) => Span(src).CopyTo(dst);
    public void Upload(IntView dst, ReadOnlySpan<int> src) => src.CopyTo(Span(dst));
    public void Download(IntView src, Span<int> dst) => Span(src).CopyTo(dst);

    public void Fill(FloatView x, float value) => Span(x).Fill(value);
    public void Copy(FloatView dst, FloatView src) => Span(src).CopyTo(Span(dst));

    public void CopyRows(FloatView dst, int dstStride, FloatView src, int srcStride, int rows, int cols)
    {
        var d = Span(dst); var s = Span(src);
        for (int r = 0; r < rows; r++) s.Slice(r * srcStride, cols).CopyTo(d.Slice(r * dstStride, cols));
    }

    public void Axpy(FloatView y, float alpha, FloatView x)
    {
        var ys = Span(y);
        TensorPrimitives.MultiplyAdd(Span(x), alpha, ys, ys);
    }

    public void ScaleShift(FloatView x, float alpha, float beta)
    {
        var xs = Span(x);
        TensorPrimitives.Multiply(xs, alpha, xs);
        TensorPrimitives.Add(xs, beta, xs);
    }

    public void Mul(FloatView dst, FloatView a, FloatView b, bool accumulate)
    {
        var d = Span(dst);
        if (accumulate) TensorPrimitives.MultiplyAdd(Span(a), Span(b), d, d);
        else TensorPrimitives.Multiply(Span(a), Span(b), d);
    }

    public double SumSquares(FloatView x)
    {
        // the chunks' sums in parallel, added in chunk order: the same total whatever the number of workers
        var xs = Storage(x); int o = x.Offset, n = x.Length;
        var partial = new double[(n + 4095) / 4096];
        ParallelRanges(partial.Length, (c0, c1) =>
        {
            for (int c = c0; c < c1; c++)
                partial[c] = TensorPrimitives.SumOfSquares(new ReadOnlySpan<float>(xs, o + c * 4096, Math.Min(4096, n - c * 4096)));
        }, 64);
        double total = 0;
        foreach (double p in partial) total += p;
        return total;
    }

    public double Sum(FloatView x)
    {
        double total = 0;
        foreach (var chunk in Chunks(Span(x).Length))
            total += TensorPrimitives.Sum((ReadOnlySpan<float>)Span(x).Slice(chunk.Start, chunk.Length));
        return total;
    }

    // Sums in float chunks of 4096, combined in double: accurate enough for norms of 10^8 elements.
    static IEnumerable<(int Start, int Length)> Chunks(int n)
    {
        for (int i = 0; i < n; i += 4096) yield return (i, Math.Min(4096, n - i));
    }

    public void ColumnSum(FloatView dst, FloatView src, int rows, int cols, bool accumulate)
    {
        var d = Span(dst).Slice(0, cols);
        if (!accumulate) d.Clear();
        var s = Span(src);
        for (int r = 0; r < rows; r++) TensorPrimitives.Add(d, s.Slice(r * cols, cols), d);
    }

    /// <summary>Parallel loop over [0, n) in contiguous ranges, one per worker: cheap for fine-grained rows.</summary>
    internal static void ParallelRanges(int n, Action<int, int> body, int minPerTask = 1)
    {
        int workers = Math.Max(1, Math.Min(Environment.ProcessorCount, n / Math.Max(1, minPerTask)));
        if (workers == 1) { body(0, n); return; }
        Parallel.For(0, workers, w => body((int)((long)n * w / workers), (int)((long)n * (w + 1) / workers)));
    }
}
