using System.Runtime.InteropServices;
using FastBlockDiff.Interop;

namespace FastBlockDiff.Kernels.Cuda;

/// <summary>One kernel argument: a pointer, int, float, long or ulong stored in 8 little-endian bytes.</summary>
public readonly struct KArg
{
    internal readonly ulong Bits;
    KArg(ulong bits) => Bits = bits;
    public static implicit operator KArg(int v) => new((uint)v);
    public static implicit operator KArg(float v) => new(BitConverter.SingleToUInt32Bits(v));
    public static implicit operator KArg(long v) => new((ulong)v);
    public static implicit operator KArg(ulong v) => new(v);
}

/// <summary>
/// The CUDA backend: hand-written kernels (kernels/Cuda/Source/*.cu, compiled by NVRTC at first use) for every op but GEMM,
/// which goes to cuBLASLt. fp32 everywhere by default; <see cref="Bf16Gemm"/> switches GEMM inputs to bf16 with fp32
/// accumulation. All ops run on one stream; downloads and value-returning reductions synchronise.
/// </summary>
public sealed unsafe partial class CudaBackend : IBackend
{
    readonly CudaContext context;
    readonly CudaStream stream;
    readonly CublasLt lt;
    readonly Dictionary<string, CudaModule> modules = new();
    readonly Dictionary<string, nint> functions = new();
    readonly HashSet<nint> smemRaised = new();
    readonly object gate = new();

    public int Device { get; }
    public string DeviceName { get; }
    public (int Major, int Minor) ComputeCapability { get; }
    public int MultiprocessorCount { get; }
    public int MaxSharedPerBlockOptin { get; }
    /// <summary>The NVRTC target, e.g. compute_90 (the device's arch, or the newest this NVRTC knows below it).</summary>
    public string Arch { get; }
    /// <summary>GEMM inputs in bf16 (fp32 accumulate and output); set through <see cref="Precision"/>. Off by default (the fp32 test mode).</summary>
    public bool Bf16Gemm { get; set; }

    public string Name => "cuda";
    public string Description => $"CUDA {DeviceName} (sm_{ComputeCapability.Major}{ComputeCapability.Minor}, {MultiprocessorCount} SMs), NVRTC {Nvrtc.Version().Major}.{Nvrtc.Version().Minor} -> {Arch}, cuBLASLt {CublasLt.Version()}{(Precision == Precision.Bf16 ? ", bf16 (fp32 master weights, fp32 accumulation)" : ", fp32")}";

    /// <summary>Why the CUDA backend cannot start here, or null when it can.</summary>
    public static string? Unavailable() => CudaAvailability.Probe().WhyNot;

    /// <summary>Starts on a device (default: FASTBLOCKDIFF_CUDA_DEVICE or 0). Throws naming the missing piece.</summary>
    public CudaBackend(int? device = null)
    {
        var report = CudaAvailability.Probe();
        if (!report.Usable) throw new InvalidOperationException($"CUDA backend unavailable: {report.WhyNot}");
        int ordinal = device ?? (int.TryParse(Environment.GetEnvironmentVariable("FASTBLOCKDIFF_CUDA_DEVICE"), out var e) ? e : 0);
        if (ordinal < 0 || ordinal >= report.Devices.Count)
            throw new InvalidOperationException($"CUDA device {ordinal} does not exist ({report.Devices.Count} found)");
        Device = Cu.DeviceGet(ordinal);
        DeviceName = Cu.DeviceName(Device);
        ComputeCapability = Cu.ComputeCapability(Device);
        MultiprocessorCount = Cu.Attribute(Device, CuDeviceAttribute.MultiprocessorCount);
        MaxSharedPerBlockOptin = Cu.Attribute(Device, CuDeviceAttribute.MaxSharedMemoryPerBlockOptin);
        Arch = PickArch(ComputeCapability.Major * 10 + ComputeCapability.Minor, Nvrtc.SupportedArchs());
        context = CudaContext.RetainPrimary(Device);
        context.MakeCurrent();
        stream = CudaStream.Create(nonBlocking: true);
        lt = new CublasLt();
        partials = AllocRaw(1024, 8);
        flag = AllocRaw(1, 4);
        Cu.MemsetD32(flag.Pointer, 0, 1);
    }

    public static string PickArch(int sm, int[] supported)
    {
        if (supported.Length == 0 || supported.Contains(sm)) return $"compute_{sm}";
        var below = supported.Where(a => a <= sm).ToArray();
        return $"compute_{(below.Length > 0 ? below.Max() : supported.Min())}";
    }

    // Every entry point makes the context current on the calling thread (a worker running generation, a thread pool
    // thread after an await): no per-thread cache that another library's cuCtxSetCurrent could make stale.
    void Enter() => context.EnsureCurrent();

    public void Dispose()
    {
        lock (gate)
        {
            try { Enter(); stream.Synchronize(); } catch (CudaException) { }
            foreach (var s in scratch.Values) s.Dispose();
            scratch.Clear();
            partials.Dispose(); flag.Dispose();
            mirror16?.Dispose(); mirror16 = null;
            twin16?.Dispose(); twin16 = null;
            DisposeStaging();
            lt.Dispose();
            foreach (var m in modules.Values) m.Dispose();
            modules.Clear(); functions.Clear();
            stream.Dispose();
            context.Dispose();
        }
    }

    // ---- storage ----
    // cuMemAlloc does not zero; the op set promises zero-filled buffers (Adam moments, gradient scratch rely on it)
    public FloatView AllocFloat(int length) { var s = Zeroed(length); return new(s, 0, length); }
    public IntView AllocInt(int length) { var s = Zeroed(length); return new(s, 0, length); }

    CudaStorage Zeroed(int length)
    {
        Enter();
        var s = new CudaStorage(length, 4);
        Cu.MemsetD32Async(s.Pointer, 0, Math.Max(length, 1), stream);
        return s;
    }
    CudaStorage AllocRaw(long length, int elementSize) { Enter(); return new CudaStorage(length, elementSize); }

    static CudaStorage S(DeviceStorage s) => s as CudaStorage
        ?? throw new ArgumentException($"buffer belongs to another backend ({s.GetType().Name})");
    public static ulong Ptr(FloatView v) => S(v.Storage).Pointer + (ulong)v.Offset * 4;
    public static ulong Ptr(IntView v) => S(v.Storage).Pointer + (ulong)v.Offset * 4;
    static ulong Ptr(FloatView? v) => v is { } x ? Ptr(x) : 0;

    public void Upload(FloatView dst, ReadOnlySpan<float> src)
    {
        Wrote(dst);
        UploadBytes(Ptr(dst), MemoryMarshal.AsBytes(src), dst.Length * 4L);
    }
    public void Upload(IntView dst, ReadOnlySpan<int> src) => UploadBytes(Ptr(dst), MemoryMarshal.AsBytes(src), dst.Length * 4L);
    public void Download(FloatView src, Span<float> dst) => DownloadBytes(Ptr(src), MemoryMarshal.AsBytes(dst), src.Length * 4L);
    public void Download(IntView src, Span<int> dst) => DownloadBytes(Ptr(src), MemoryMarshal.AsBytes(dst), src.Length * 4L);

    void DownloadBytes(ulong src, Span<byte> dst, long capacity)
    {
        long n = Math.Min(dst.Length, capacity);
        Enter();
        fixed (byte* p = dst) { Cu.CopyDtoHAsync(p, src, n, stream); stream.Synchronize(); }
        CheckFlag();
    }

    public void Synchronize() { Enter(); stream.Synchronize(); CheckFlag(); }

    /// <summary>Free and total device memory (cuMemGetInfo), from any thread.</summary>
    public (long Free, long Total) MemoryInfo() { Enter(); return Cu.MemoryInfo(); }

    // device-side error flag (out-of-range embedding ids), read at the next synchronisation
    readonly CudaStorage flag;
    bool flagPending;
    void CheckFlag()
    {
        if (!flagPending) return;
        flagPending = false;
        int v;
        Cu.CopyDtoHAsync(&v, flag.Pointer, 4, stream);
        stream.Synchronize();
        if (v != 0)
        {
            Cu.MemsetD32Async(flag.Pointer, 0, 1, stream);
            throw new ArgumentOutOfRangeException("ids", $"token id {(v == -1 ? 0 : v)} outside the embedding table (detected on the device)");
        }
    }

    // ---- scratch buffers, grown on demand ----
    readonly Dictionary<string, CudaStorage> scratch = new();
    readonly CudaStorage partials;

    ulong Scratch(string name, long bytes)
    {
        if (!scratch.TryGetValue(name, out var s) || (long)s.Length * s.ElementSize < bytes)
        {
            if (s != null) { stream.Synchronize(); s.Dispose(); }
            s = AllocRaw((bytes + 15) / 16, 16);   // 16-byte elements: scratch may exceed 2^31 floats (sampling over B·L'·V)
            scratch[name] = s;
        }
        return s.Pointer;
    }

    // ---- kernels ----
    nint Function(string file, string kernel)
    {
        string key = file + ":" + kernel;
        lock (gate)
        {
            if (functions.TryGetValue(key, out var f)) return f;
            Enter();
            if (!modules.TryGetValue(file, out var m))
            {
                m = CudaModule.LoadPtx(CudaSources.GetPtx(file, Arch), file);
                modules[file] = m;
            }
            f = Cu.GetFunction(m, kernel);
            functions[key] = f;
            return f;
        }
    }

    void Launch(string file, string kernel, (uint, uint, uint) grid, (uint, uint, uint) block, int smem, params ReadOnlySpan<KArg> args)
    {
        if (grid.Item1 == 0 || grid.Item2 == 0 || grid.Item3 == 0) return;
        ops++;
        var f = Function(file, kernel);
        Enter();
        if (smem > 48 * 1024 && smemRaised.Add(f))
        {
            if (smem > MaxSharedPerBlockOptin)
                throw new InvalidOperationException($"{kernel} needs {smem} bytes of shared memory; the device allows {MaxSharedPerBlockOptin}");
            Cu.SetFunctionAttribute(f, CuFunctionAttribute.MaxDynamicSharedSizeBytes, MaxSharedPerBlockOptin);
        }
        int n = args.Length;
        ulong* vals = stackalloc ulong[n];
        void** ptrs = stackalloc void*[n];
        for (int i = 0; i < n; i++) { vals[i] = args[i].Bits; ptrs[i] = vals + i; }
        Cu.Launch(f, kernel, grid, block, (uint)smem, stream, ptrs);
    }

    const int Threads = 256;
    uint Blocks(long n) => (uint)Math.Clamp((n + Threads - 1) / Threads, 1, Math.Max(1, MultiprocessorCount) * 32L);
    void Flat(string file, string kernel, long n, params ReadOnlySpan<KArg> args)
    {
        if (n <= 0) return;
        Launch(file, kernel, (Blocks(n), 1, 1), (Threads, 1, 1), 0, args);
    }
    static uint RowThreads(int dim) => (uint)Math.Clamp((dim + 31) / 32 * 32, 32, 256);
    static uint Div(long a, long b) => (uint)((a + b - 1) / b);

    /// <summary>
    /// Captures the ops <paramref name="body"/> issues into a CUDA graph for replay with one launch. Off the training
    /// path (not yet used by Trainer): the body must not upload (the staging ring would be replayed as it is then), nor
    /// read back, and must run with fixed shapes and buffers; scalar arguments are frozen. Needs a real GPU.
    /// </summary>
    public CudaGraph Capture(Action body)
    {
        Enter();
        return CudaGraph.Capture(stream, body);
    }

    /// <summary>Replays a captured graph on this backend's stream.</summary>
    public void Replay(CudaGraph graph)
    {
        Enter();
        graph.Launch(stream);
    }

    /// <summary>Seconds-level timing helper for benchmarks: runs body between two events on this backend's stream.</summary>
    public float TimeMs(Action body)
    {
        Enter();
        using var a = CudaEvent.Create(); using var b = CudaEvent.Create();
        a.Record(stream); body(); b.Record(stream); b.Synchronize();
        return CudaEvent.Elapsed(a, b);
    }
}
