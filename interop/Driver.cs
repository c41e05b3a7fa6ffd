using System.Runtime.InteropServices;

namespace FastBlockDiff.Interop;

/// <summary>CUdevice_attribute values used by the engine.</summary>
public enum CuDeviceAttribute
{
    MaxThreadsPerBlock = 1,
    MaxSharedMemoryPerBlock = 8,
    WarpSize = 10,
    ClockRate = 13,
    MultiprocessorCount = 16,
    MemoryClockRate = 36,
    GlobalMemoryBusWidth = 37,
    L2CacheSize = 38,
    MaxThreadsPerMultiprocessor = 39,
    ComputeCapabilityMajor = 75,
    ComputeCapabilityMinor = 76,
    MaxSharedMemoryPerMultiprocessor = 81,
    MaxSharedMemoryPerBlockOptin = 97,
}

/// <summary>CUfunction_attribute values.</summary>
public enum CuFunctionAttribute
{
    MaxThreadsPerBlock = 0,
    SharedSizeBytes = 1,
    LocalSizeBytes = 3,
    NumRegs = 4,
    PtxVersion = 5,
    BinaryVersion = 6,
    MaxDynamicSharedSizeBytes = 8,
    PreferredSharedMemoryCarveout = 9,
}

/// <summary>Raw CUDA driver API entry points (resolved through <see cref="CudaLibraries"/>). Return CUresult.</summary>
public static unsafe partial class CuNative
{
    const string L = CudaLibraries.DriverName;
    [LibraryImport(L)] public static partial int cuInit(uint flags);
    [LibraryImport(L)] public static partial int cuDriverGetVersion(out int version);
    [LibraryImport(L)] public static partial int cuGetErrorName(int error, out nint str);
    [LibraryImport(L)] public static partial int cuGetErrorString(int error, out nint str);
    [LibraryImport(L)] public static partial int cuDeviceGetCount(out int count);
    [LibraryImport(L)] public static partial int cuDeviceGet(out int device, int ordinal);
    [LibraryImport(L)] public static partial int cuDeviceGetName(byte* name, int len, int dev);
    [LibraryImport(L)] public static partial int cuDeviceGetAttribute(out int value, CuDeviceAttribute attrib, int dev);
    [LibraryImport(L, EntryPoint = "cuDeviceTotalMem_v2")] public static partial int cuDeviceTotalMem(out nuint bytes, int dev);
    [LibraryImport(L)] public static partial int cuDevicePrimaryCtxRetain(out nint ctx, int dev);
    [LibraryImport(L, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] public static partial int cuDevicePrimaryCtxRelease(int dev);
    [LibraryImport(L)] public static partial int cuCtxSetCurrent(nint ctx);
    [LibraryImport(L)] public static partial int cuCtxGetCurrent(out nint ctx);
    [LibraryImport(L)] public static partial int cuCtxSynchronize();
    [LibraryImport(L, EntryPoint = "cuMemGetInfo_v2")] public static partial int cuMemGetInfo(out nuint free, out nuint total);
    [LibraryImport(L)] public static partial int cuStreamCreate(out nint stream, uint flags);
    [LibraryImport(L, EntryPoint = "cuStreamDestroy_v2")] public static partial int cuStreamDestroy(nint stream);
    [LibraryImport(L)] public static partial int cuStreamSynchronize(nint stream);
    [LibraryImport(L)] public static partial int cuStreamWaitEvent(nint stream, nint ev, uint flags);
    [LibraryImport(L)] public static partial int cuEventCreate(out nint ev, uint flags);
    [LibraryImport(L, EntryPoint = "cuEventDestroy_v2")] public static partial int cuEventDestroy(nint ev);
    [LibraryImport(L)] public static partial int cuEventRecord(nint ev, nint stream);
    [LibraryImport(L)] public static partial int cuEventSynchronize(nint ev);
    [LibraryImport(L)] public static partial int cuEventQuery(nint ev);
    [LibraryImport(L)] public static partial int cuEventElapsedTime(out float ms, nint start, nint end);
    [LibraryImport(L, EntryPoint = "cuMemAlloc_v2")] public static partial int cuMemAlloc(out ulong dptr, nuint bytes);
    [LibraryImport(L, EntryPoint = "cuMemFree_v2")] public static partial int cuMemFree(ulong dptr);
    [LibraryImport(L, EntryPoint = "cuMemAllocHost_v2")] public static partial int cuMemAllocHost(out nint pp, nuint bytes);
    [LibraryImport(L)] public static partial int cuMemFreeHost(nint p);
    [LibraryImport(L, EntryPoint = "cuStreamBeginCapture_v2")] public static partial int cuStreamBeginCapture(nint stream, int mode);
    [LibraryImport(L)] public static partial int cuStreamEndCapture(nint stream, out nint graph);
    [LibraryImport(L)] public static partial int cuGraphInstantiateWithFlags(out nint graphExec, nint graph, ulong flags);
    [LibraryImport(L)] public static partial int cuGraphLaunch(nint graphExec, nint stream);
    [LibraryImport(L)] public static partial int cuGraphDestroy(nint graph);
    [LibraryImport(L)] public static partial int cuGraphExecDestroy(nint graphExec);
    [LibraryImport(L, EntryPoint = "cuMemcpyHtoD_v2")] public static partial int cuMemcpyHtoD(ulong dst, void* src, nuint bytes);
    [LibraryImport(L, EntryPoint = "cuMemcpyDtoH_v2")] public static partial int cuMemcpyDtoH(void* dst, ulong src, nuint bytes);
    [LibraryImport(L, EntryPoint = "cuMemcpyDtoD_v2")] public static partial int cuMemcpyDtoD(ulong dst, ulong src, nuint bytes);
    [LibraryImport(L, EntryPoint = "cuMemcpyHtoDAsync_v2")] public static partial int cuMemcpyHtoDAsync(ulong dst, void* src, nuint bytes, nint stream);
    [LibraryImport(L, EntryPoint = "cuMemcpyDtoHAsync_v2")] public static partial int cuMemcpyDtoHAsync(void* dst, ulong src, nuint bytes, nint stream);
    [LibraryImport(L, EntryPoint = "cuMemcpyDtoDAsync_v2")] public static partial int cuMemcpyDtoDAsync(ulong dst, ulong src, nuint bytes, nint stream);
    [LibraryImport(L, EntryPoint = "cuMemsetD32_v2")] public static partial int cuMemsetD32(ulong dst, uint value, nuint count);
    [LibraryImport(L)] public static partial int cuMemsetD32Async(ulong dst, uint value, nuint count, nint stream);
    [LibraryImport(L)] public static partial int cuModuleLoadData(out nint module, void* image);
    [LibraryImport(L)] public static partial int cuModuleLoadDataEx(out nint module, void* image, uint numOptions, int* options, void** optionValues);
    [LibraryImport(L)] public static partial int cuModuleUnload(nint module);
    [LibraryImport(L, StringMarshalling = StringMarshalling.Utf8)] public static partial int cuModuleGetFunction(out nint function, nint module, string name);
    [LibraryImport(L)] public static partial int cuLaunchKernel(nint f, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedMemBytes, nint stream, void** kernelParams, void** extra);
    [LibraryImport(L)] public static partial int cuOccupancyMaxActiveBlocksPerMultiprocessor(out int numBlocks, nint f, int blockSize, nuint dynamicSmemBytes);
    [LibraryImport(L)] public static partial int cuFuncSetAttribute(nint f, CuFunctionAttribute attrib, int value);
    [LibraryImport(L)] public static partial int cuFuncGetAttribute(out int value, CuFunctionAttribute attrib, nint f);
}

/// <summary>Checked wrappers over the driver API: every failure becomes a <see cref="CudaException"/> naming the call.</summary>
public static unsafe class Cu
{
    public const int Success = 0;

    public static string ErrorName(int code)
    {
        try { return CuNative.cuGetErrorName(code, out var p) == 0 && p != 0 ? Marshal.PtrToStringUTF8(p)! : $"CUDA_ERROR_{code}"; }
        catch (Exception) { return $"CUDA_ERROR_{code}"; }
    }

    public static string ErrorString(int code)
    {
        try { return CuNative.cuGetErrorString(code, out var p) == 0 && p != 0 ? Marshal.PtrToStringUTF8(p)! : "unknown error"; }
        catch (Exception) { return "unknown error"; }
    }

    public static void Check(int result, string call, string? detail = null)
    {
        if (result != 0) throw new CudaException(call, "driver", result, ErrorName(result), ErrorString(result), detail);
    }

    static bool initialized;
    /// <summary>cuInit(0), once. Throws <see cref="CudaLibraryMissingException"/> when libcuda is absent.</summary>
    public static void Init()
    {
        if (initialized) return;
        CudaLibraries.Require(CudaLibrary.Driver);
        Check(CuNative.cuInit(0), "cuInit");
        initialized = true;
    }

    public static int DriverVersion() { Check(CuNative.cuDriverGetVersion(out var v), "cuDriverGetVersion"); return v; }
    public static int DeviceCount() { Init(); Check(CuNative.cuDeviceGetCount(out var n), "cuDeviceGetCount"); return n; }
    public static int DeviceGet(int ordinal) { Check(CuNative.cuDeviceGet(out var d, ordinal), $"cuDeviceGet({ordinal})"); return d; }

    public static string DeviceName(int device)
    {
        byte* buf = stackalloc byte[256];
        Check(CuNative.cuDeviceGetName(buf, 256, device), "cuDeviceGetName");
        return Marshal.PtrToStringUTF8((nint)buf) ?? "";
    }

    public static int Attribute(int device, CuDeviceAttribute a)
    {
        Check(CuNative.cuDeviceGetAttribute(out var v, a, device), $"cuDeviceGetAttribute({a})");
        return v;
    }

    public static (int Major, int Minor) ComputeCapability(int device) =>
        (Attribute(device, CuDeviceAttribute.ComputeCapabilityMajor), Attribute(device, CuDeviceAttribute.ComputeCapabilityMinor));

    public static long TotalMemory(int device) { Check(CuNative.cuDeviceTotalMem(out var b, device), "cuDeviceTotalMem"); return (long)b; }

    public static (long Free, long Total) MemoryInfo() { Check(CuNative.cuMemGetInfo(out var f, out var t), "cuMemGetInfo"); return ((long)f, (long)t); }

    /// <summary>
    /// Calls in this process that make the host wait for the device: cuStreamSynchronize, cuEventSynchronize,
    /// cuCtxSynchronize and the synchronous copies cuMemcpyHtoD / cuMemcpyDtoH (tests of the device-resident step read it).
    /// </summary>
    public static long HostSyncs => Interlocked.Read(ref hostSyncs);
    static long hostSyncs;
    internal static void CountSync() => Interlocked.Increment(ref hostSyncs);

    public static void SetCurrent(CudaContext ctx) => Check(CuNative.cuCtxSetCurrent(ctx.Handle), "cuCtxSetCurrent");
    public static void Synchronize() { CountSync(); Check(CuNative.cuCtxSynchronize(), "cuCtxSynchronize"); }

    public static void CopyHtoD(ulong dst, void* src, long bytes) { CountSync(); Check(CuNative.cuMemcpyHtoD(dst, src, (nuint)bytes), "cuMemcpyHtoD"); }
    public static void CopyDtoH(void* dst, ulong src, long bytes) { CountSync(); Check(CuNative.cuMemcpyDtoH(dst, src, (nuint)bytes), "cuMemcpyDtoH"); }
    public static void CopyDtoD(ulong dst, ulong src, long bytes) => Check(CuNative.cuMemcpyDtoD(dst, src, (nuint)bytes), "cuMemcpyDtoD");
    public static void CopyHtoDAsync(ulong dst, void* src, long bytes, CudaStream s) => Check(CuNative.cuMemcpyHtoDAsync(dst, src, (nuint)bytes, s.Handle), "cuMemcpyHtoDAsync");
    public static void CopyDtoHAsync(void* dst, ulong src, long bytes, CudaStream s) => Check(CuNative.cuMemcpyDtoHAsync(dst, src, (nuint)bytes, s.Handle), "cuMemcpyDtoHAsync");
    public static void CopyDtoDAsync(ulong dst, ulong src, long bytes, CudaStream s) => Check(CuNative.cuMemcpyDtoDAsync(dst, src, (nuint)bytes, s.Handle), "cuMemcpyDtoDAsync");
    public static void MemsetD32(ulong dst, uint value, long count) => Check(CuNative.cuMemsetD32(dst, value, (nuint)count), "cuMemsetD32");
    public static void MemsetD32Async(ulong dst, uint value, long count, CudaStream s) => Check(CuNative.cuMemsetD32Async(dst, value, (nuint)count, s.Handle), "cuMemsetD32Async");

    public static nint GetFunction(CudaModule module, string name)
    {
        Check(CuNative.cuModuleGetFunction(out var f, module.Handle, name), $"cuModuleGetFunction({name})");
        return f;
    }

    /// <summary>Launches f; args points to an array of pointers to each argument value.</summary>
    public static void Launch(nint f, string name, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block, uint sharedBytes, CudaStream stream, void** args) =>
        Check(CuNative.cuLaunchKernel(f, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, stream.Handle, args, null),
            $"cuLaunchKernel({name}, grid {grid}, block {block}, smem {sharedBytes})");

    public static int MaxActiveBlocksPerSm(nint f, int blockSize, long dynamicSmem)
    {
        Check(CuNative.cuOccupancyMaxActiveBlocksPerMultiprocessor(out var n, f, blockSize, (nuint)dynamicSmem), "cuOccupancyMaxActiveBlocksPerMultiprocessor");
        return n;
    }

    public static void SetFunctionAttribute(nint f, CuFunctionAttribute a, int value) => Check(CuNative.cuFuncSetAttribute(f, a, value), $"cuFuncSetAttribute({a}={value})");
    public static int GetFunctionAttribute(nint f, CuFunctionAttribute a) { Check(CuNative.cuFuncGetAttribute(out var v, a, f), $"cuFuncGetAttribute({a})"); return v; }
}

/// <summary>A retained primary context of one device; releasing it is the handle's job.</summary>
public sealed class CudaContext : SafeHandle
{
    public int Device { get; }
    CudaContext(int device, nint ctx) : base(0, true) { Device = device; SetHandle(ctx); }
    public override bool IsInvalid => handle == 0;

    public static CudaContext RetainPrimary(int device)
    {
        Cu.Init();
        Cu.Check(CuNative.cuDevicePrimaryCtxRetain(out var ctx, device), $"cuDevicePrimaryCtxRetain({device})");
        return new CudaContext(device, ctx);
    }

    public void MakeCurrent() => Cu.Check(CuNative.cuCtxSetCurrent(handle), "cuCtxSetCurrent");

    /// <summary>
    /// Makes this context current on the calling thread unless it already is: one cuCtxGetCurrent (a thread-local read
    /// in the driver) per call boundary, so any thread (a worker, a finalizer, another library's) may call in.
    /// </summary>
    public void EnsureCurrent() => EnsureCurrent(handle);

    internal static void EnsureCurrent(nint ctx)
    {
        Cu.Check(CuNative.cuCtxGetCurrent(out var current), "cuCtxGetCurrent");
        if (current != ctx) Cu.Check(CuNative.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
    }

    public nint Handle => handle;
    protected override bool ReleaseHandle() => CuNative.cuDevicePrimaryCtxRelease(Device) == 0;
}

public sealed class CudaStream : SafeHandle
{
    CudaStream(nint s, bool owns) : base(0, owns) { SetHandle(s); }
    /// <summary>The legacy default stream (handle 0); never destroyed.</summary>
    public static CudaStream Default { get; } = new(0, false);
    public override bool IsInvalid => false;
    public nint Handle => handle;

    /// <param name="nonBlocking">CU_STREAM_NON_BLOCKING: no implicit sync with the default stream.</param>
    public static CudaStream Create(bool nonBlocking = true)
    {
        Cu.Check(CuNative.cuStreamCreate(out var s, nonBlocking ? 1u : 0u), "cuStreamCreate");
        return new CudaStream(s, true);
    }

    public void Synchronize() { Cu.CountSync(); Cu.Check(CuNative.cuStreamSynchronize(handle), "cuStreamSynchronize"); }
    public void Wait(CudaEvent e) => Cu.Check(CuNative.cuStreamWaitEvent(handle, e.Handle, 0), "cuStreamWaitEvent");
    protected override bool ReleaseHandle() => handle == 0 || CuNative.cuStreamDestroy(handle) == 0;
}

public sealed class CudaEvent : SafeHandle
{
    CudaEvent(nint e) : base(0, true) { SetHandle(e); }
    public override bool IsInvalid => handle == 0;
    public nint Handle => handle;

    /// <param name="timing">false adds CU_EVENT_DISABLE_TIMING (cheaper for pure synchronisation).</param>
    public static CudaEvent Create(bool timing = true)
    {
        Cu.Check(CuNative.cuEventCreate(out var e, timing ? 0u : 2u), "cuEventCreate");
        return new CudaEvent(e);
    }

    public void Record(CudaStream s) => Cu.Check(CuNative.cuEventRecord(handle, s.Handle), "cuEventRecord");
    public void Synchronize() { Cu.CountSync(); Cu.Check(CuNative.cuEventSynchronize(handle), "cuEventSynchronize"); }

    /// <summary>True when the work before the event's last record has completed (cuEventQuery; never waits).</summary>
    public bool IsDone()
    {
        const int NotReady = 600;   // CUDA_ERROR_NOT_READY
        int r = CuNative.cuEventQuery(handle);
        if (r == NotReady) return false;
        Cu.Check(r, "cuEventQuery");
        return true;
    }

    /// <summary>Milliseconds between two recorded events.</summary>
    public static float Elapsed(CudaEvent start, CudaEvent end)
    {
        Cu.Check(CuNative.cuEventElapsedTime(out var ms, start.Handle, end.Handle), "cuEventElapsedTime");
        return ms;
    }

    protected override bool ReleaseHandle() => CuNative.cuEventDestroy(handle) == 0;
}

/// <summary>
/// A device allocation (cuMemAlloc) in the context current when it was made; freed by the handle, which makes that
/// context current first (Dispose may run on any thread, the finalizer's included).
/// </summary>
public sealed class DeviceMemory : SafeHandle
{
    public long Bytes { get; }
    readonly nint context;
    DeviceMemory(ulong ptr, long bytes, nint ctx) : base(0, true) { SetHandle((nint)ptr); Bytes = bytes; context = ctx; }
    public override bool IsInvalid => handle == 0;
    public ulong Pointer => (ulong)handle;

    public static DeviceMemory Allocate(long bytes)
    {
        if (bytes < 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "cuMemAlloc of a negative size (an overflowed size product?)");
        Cu.Check(CuNative.cuCtxGetCurrent(out var ctx), "cuCtxGetCurrent");
        Cu.Check(CuNative.cuMemAlloc(out var p, (nuint)Math.Max(bytes, 4)), $"cuMemAlloc({bytes} bytes)");
        return new DeviceMemory(p, bytes, ctx);
    }

    /// <summary>Frees that failed in this process (SafeHandle swallows them; tests read this).</summary>
    public static long FailedFrees => Volatile.Read(ref failedFrees);
    static long failedFrees;

    protected override bool ReleaseHandle()
    {
        bool ok = (context == 0 || (CuNative.cuCtxGetCurrent(out var current) == 0 && current == context) || CuNative.cuCtxSetCurrent(context) == 0)
            && CuNative.cuMemFree((ulong)handle) == 0;
        if (!ok) Interlocked.Increment(ref failedFrees);
        return ok;
    }
}

/// <summary>
/// Page-locked host memory (cuMemAllocHost) in the context current when it was made: the staging area that makes
/// host-to-device copies truly asynchronous. Freed by the handle in that context.
/// </summary>
public sealed unsafe class PinnedHostMemory : SafeHandle
{
    public long Bytes { get; }
    readonly nint context;
    PinnedHostMemory(nint p, long bytes, nint ctx) : base(0, true) { SetHandle(p); Bytes = bytes; context = ctx; }
    public override bool IsInvalid => handle == 0;
    public byte* Pointer => (byte*)handle;

    public static PinnedHostMemory Allocate(long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "pinned host buffer of a non-positive size");
        Cu.Check(CuNative.cuCtxGetCurrent(out var ctx), "cuCtxGetCurrent");
        Cu.Check(CuNative.cuMemAllocHost(out var p, (nuint)bytes), $"cuMemAllocHost({bytes} bytes)");
        return new PinnedHostMemory(p, bytes, ctx);
    }

    protected override bool ReleaseHandle()
    {
        if (context != 0 && (CuNative.cuCtxGetCurrent(out var current) != 0 || current != context) && CuNative.cuCtxSetCurrent(context) != 0) return false;
        return CuNative.cuMemFreeHost(handle) == 0;
    }
}

/// <summary>
/// An instantiated CUDA graph (cuStreamBeginCapture … cuStreamEndCapture, cuGraphInstantiateWithFlags): the kernels
/// and copies issued on a stream between the two, replayed by <see cref="Launch"/> with one driver call. Arguments
/// (pointers and scalars) are frozen at capture.
/// </summary>
public sealed class CudaGraph : SafeHandle
{
    const int CaptureModeRelaxed = 2;   // CU_STREAM_CAPTURE_MODE_RELAXED: other threads may use the driver meanwhile
    CudaGraph(nint exec) : base(0, true) { SetHandle(exec); }
    public override bool IsInvalid => handle == 0;

    /// <summary>Captures what <paramref name="body"/> issues on <paramref name="stream"/>; nothing runs during the capture.</summary>
    public static CudaGraph Capture(CudaStream stream, Action body)
    {
        Cu.Check(CuNative.cuStreamBeginCapture(stream.Handle, CaptureModeRelaxed), "cuStreamBeginCapture");
        nint graph;
        try { body(); }
        catch
        {
            CuNative.cuStreamEndCapture(stream.Handle, out graph);
            if (graph != 0) CuNative.cuGraphDestroy(graph);
            throw;
        }
        Cu.Check(CuNative.cuStreamEndCapture(stream.Handle, out graph), "cuStreamEndCapture");
        try
        {
            Cu.Check(CuNative.cuGraphInstantiateWithFlags(out var exec, graph, 0), "cuGraphInstantiateWithFlags");
            return new CudaGraph(exec);
        }
        finally { CuNative.cuGraphDestroy(graph); }
    }

    public void Launch(CudaStream stream) => Cu.Check(CuNative.cuGraphLaunch(handle, stream.Handle), "cuGraphLaunch");
    protected override bool ReleaseHandle() => CuNative.cuGraphExecDestroy(handle) == 0;
}

/// <summary>A loaded module (PTX or cubin image).</summary>
public sealed unsafe class CudaModule : SafeHandle
{
    CudaModule(nint m) : base(0, true) { SetHandle(m); }
    public override bool IsInvalid => handle == 0;
    public nint Handle => handle;

    /// <summary>cuModuleLoadDataEx with an error-log buffer, so a JIT failure says why.</summary>
    public static CudaModule LoadPtx(string ptx, string name)
    {
        var image = System.Text.Encoding.UTF8.GetBytes(ptx + "\0");
        const int logSize = 16384;
        var log = new byte[logSize];
        fixed (byte* img = image)
        fixed (byte* lg = log)
        {
            int* opts = stackalloc int[2] { 5 /* CU_JIT_ERROR_LOG_BUFFER */, 6 /* CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES */ };
            void** vals = stackalloc void*[2] { lg, (void*)(nint)logSize };
            int r = CuNative.cuModuleLoadDataEx(out var m, img, 2, opts, vals);
            if (r != 0)
            {
                int n = Array.IndexOf(log, (byte)0); if (n < 0) n = logSize;
                Cu.Check(r, $"cuModuleLoadDataEx({name})", System.Text.Encoding.UTF8.GetString(log, 0, n));
            }
            return new CudaModule(m);
        }
    }

    public static CudaModule LoadData(byte[] image, string name)
    {
        fixed (byte* img = image)
        {
            Cu.Check(CuNative.cuModuleLoadData(out var m, img), $"cuModuleLoadData({name})");
            return new CudaModule(m);
        }
    }

    protected override bool ReleaseHandle() => CuNative.cuModuleUnload(handle) == 0;
}
