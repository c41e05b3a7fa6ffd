using System.Diagnostics;
using System.Runtime.InteropServices;

namespace FastBlockDiff.Interop;

/// <summary>ncclUniqueId: 128 opaque bytes made by one rank and handed to the others (through MPI) to form a communicator.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct NcclUniqueId
{
    public const int Size = 128;
    public fixed byte Bytes[Size];
}

/// <summary>ncclDataType_t values used here.</summary>
public enum NcclDataType { Float32 = 7, Float64 = 8 }

/// <summary>ncclRedOp_t values used here (Avg needs NCCL ≥ 2.10).</summary>
public enum NcclReduceOp { Sum = 0, Max = 2, Avg = 4 }

/// <summary>Raw NCCL entry points (libnccl.so.2 through <see cref="CollectiveLibraries"/>). Return ncclResult_t.</summary>
public static unsafe partial class NcclNative
{
    const string L = CollectiveLibraries.NcclName;
    [LibraryImport(L)] public static partial int ncclGetVersion(out int version);
    [LibraryImport(L)] public static partial int ncclGetUniqueId(NcclUniqueId* id);
    [LibraryImport(L)] public static partial int ncclCommInitRank(out nint comm, int nranks, NcclUniqueId id, int rank);
    [LibraryImport(L)] public static partial int ncclCommDestroy(nint comm);
    [LibraryImport(L)] public static partial int ncclCommAbort(nint comm);
    [LibraryImport(L)] public static partial int ncclCommGetAsyncError(nint comm, out int asyncError);
    [LibraryImport(L)] public static partial nint ncclGetErrorString(int result);
    [LibraryImport(L)] public static partial int ncclAllReduce(ulong send, ulong recv, nuint count, int datatype, int op, nint comm, nint stream);
    [LibraryImport(L)] public static partial int ncclBroadcast(ulong send, ulong recv, nuint count, int datatype, int root, nint comm, nint stream);

    // the one driver call NCCL's completion polling needs beside those Driver.cs binds
    [LibraryImport(CudaLibraries.DriverName)] public static partial int cuStreamQuery(nint stream);
}

/// <summary>An NCCL call failed; the message names the call and NCCL's error string.</summary>
public sealed class NcclException(string call, int code, string text) : Exception($"{call} failed: NCCL error {code}: {text}")
{
    public string Call { get; } = call;
    public int Code { get; } = code;
}

/// <summary>Checked NCCL wrappers.</summary>
public static unsafe class Nccl
{
    const int CudaErrorNotReady = 600;

    public static string ErrorString(int code)
    {
        try { var p = NcclNative.ncclGetErrorString(code); return p != 0 ? Marshal.PtrToStringUTF8(p)! : $"NCCL error {code}"; }
        catch (Exception) { return $"NCCL error {code}"; }
    }

    public static void Check(int result, string call)
    {
        if (result != 0) throw new NcclException(call, result, ErrorString(result));
    }

    public static int Version()
    {
        CollectiveLibraries.Require(CollectiveLibrary.Nccl);
        Check(NcclNative.ncclGetVersion(out int v), "ncclGetVersion");
        return v;
    }

    public static NcclUniqueId UniqueId()
    {
        CollectiveLibraries.Require(CollectiveLibrary.Nccl);
        NcclUniqueId id;
        Check(NcclNative.ncclGetUniqueId(&id), "ncclGetUniqueId");
        return id;
    }

    /// <summary>Joins rank <paramref name="rank"/> of <paramref name="ranks"/> on the current CUDA device; blocks until all have joined.</summary>
    public static nint CommInitRank(int ranks, NcclUniqueId id, int rank)
    {
        CollectiveLibraries.Require(CollectiveLibrary.Nccl);
        Check(NcclNative.ncclCommInitRank(out var comm, ranks, id, rank), $"ncclCommInitRank(rank {rank} of {ranks})");
        return comm;
    }

    /// <summary>
    /// Waits for the work queued on <paramref name="stream"/> (an NCCL collective) to finish, checking the communicator's
    /// asynchronous error; returns false when <paramref name="timeout"/> passes first (the caller aborts the communicator).
    /// </summary>
    public static bool WaitWithin(nint comm, nint stream, TimeSpan timeout, string call)
    {
        var clock = Stopwatch.StartNew();
        for (int polls = 0; ; polls++)
        {
            int q = NcclNative.cuStreamQuery(stream);
            if (q == 0) return true;
            if (q != CudaErrorNotReady) Cu.Check(q, $"cuStreamQuery after {call}");
            Check(NcclNative.ncclCommGetAsyncError(comm, out int async), "ncclCommGetAsyncError");
            Check(async, $"{call} (asynchronous error)");
            if (clock.Elapsed > timeout) return false;
            if (polls < 64) Thread.SpinWait(32);
            else Thread.Sleep(clock.ElapsedMilliseconds < 20 ? 0 : 1);
        }
    }
}
