using System.Diagnostics;
using System.Runtime.InteropServices;

namespace FastBlockDiff.Interop;

/// <summary>Raw MPI entry points (Open MPI's libmpi, resolved through <see cref="CollectiveLibraries"/>). Return MPI error codes.</summary>
public static unsafe partial class MpiNative
{
    const string L = CollectiveLibraries.MpiName;
    [LibraryImport(L)] public static partial int MPI_Init_thread(int* argc, byte*** argv, int required, out int provided);
    [LibraryImport(L)] public static partial int MPI_Initialized(out int flag);
    [LibraryImport(L)] public static partial int MPI_Finalized(out int flag);
    [LibraryImport(L)] public static partial int MPI_Finalize();
    [LibraryImport(L)] public static partial int MPI_Abort(nint comm, int errorCode);
    [LibraryImport(L)] public static partial int MPI_Comm_rank(nint comm, out int rank);
    [LibraryImport(L)] public static partial int MPI_Comm_size(nint comm, out int size);
    [LibraryImport(L)] public static partial int MPI_Comm_set_errhandler(nint comm, nint errhandler);
    [LibraryImport(L)] public static partial int MPI_Error_string(int code, byte* text, out int length);
    [LibraryImport(L)] public static partial int MPI_Allreduce(void* send, void* recv, int count, nint datatype, nint op, nint comm);
    [LibraryImport(L)] public static partial int MPI_Bcast(void* buffer, int count, nint datatype, int root, nint comm);
    [LibraryImport(L)] public static partial int MPI_Barrier(nint comm);
    [LibraryImport(L)] public static partial int MPI_Iallreduce(void* send, void* recv, int count, nint datatype, nint op, nint comm, out nint request);
    [LibraryImport(L)] public static partial int MPI_Ibcast(void* buffer, int count, nint datatype, int root, nint comm, out nint request);
    [LibraryImport(L)] public static partial int MPI_Isend(void* buffer, int count, nint datatype, int dest, int tag, nint comm, out nint request);
    [LibraryImport(L)] public static partial int MPI_Irecv(void* buffer, int count, nint datatype, int source, int tag, nint comm, out nint request);
    [LibraryImport(L)] public static partial int MPI_Test(ref nint request, out int flag, void* status);
}

/// <summary>An MPI call failed; the message names the call and MPI's error string.</summary>
public sealed class MpiException(string call, int code, string text) : Exception($"{call} failed: MPI error {code}: {text}")
{
    public string Call { get; } = call;
    public int Code { get; } = code;
}

/// <summary>MPI thread support levels (MPI_THREAD_*).</summary>
public enum MpiThreadLevel { Single = 0, Funneled = 1, Serialized = 2, Multiple = 3 }

/// <summary>
/// Checked wrappers over <see cref="MpiNative"/> and Open MPI's predefined handles. Open MPI's MPI_COMM_WORLD, MPI_FLOAT,
/// MPI_SUM etc. are the addresses of exported globals (ompi_mpi_comm_world, ...), resolved here with NativeLibrary.GetExport;
/// MPI_IN_PLACE is (void*)1 and MPI_STATUS_IGNORE is null.
/// </summary>
public static unsafe class Mpi
{
    public static readonly void* InPlace = (void*)1;

    static nint Export(string name) => NativeLibrary.GetExport(CollectiveLibraries.Handle(CollectiveLibrary.Mpi), name);

    public static nint CommWorld => Export("ompi_mpi_comm_world");
    public static nint Float => Export("ompi_mpi_float");
    public static nint Double => Export("ompi_mpi_double");
    public static nint Int64 => Export("ompi_mpi_int64_t");
    public static nint Byte => Export("ompi_mpi_byte");
    public static nint Int32 => Export("ompi_mpi_int");
    public static nint Sum => Export("ompi_mpi_op_sum");
    public static nint Max => Export("ompi_mpi_op_max");
    public static nint ErrorsReturn => Export("ompi_mpi_errors_return");

    public static string ErrorString(int code)
    {
        try
        {
            var text = stackalloc byte[1024]; // MPI_MAX_ERROR_STRING is 256
            return MpiNative.MPI_Error_string(code, text, out int n) == 0 ? Marshal.PtrToStringUTF8((nint)text, Math.Clamp(n, 0, 1023)) : $"MPI error {code}";
        }
        catch (Exception) { return $"MPI error {code}"; }
    }

    public static void Check(int result, string call)
    {
        if (result != 0) throw new MpiException(call, result, ErrorString(result));
    }

    public static bool Initialized()
    {
        CollectiveLibraries.Require(CollectiveLibrary.Mpi);
        Check(MpiNative.MPI_Initialized(out int flag), "MPI_Initialized");
        return flag != 0;
    }

    public static bool Finalized()
    {
        Check(MpiNative.MPI_Finalized(out int flag), "MPI_Finalized");
        return flag != 0;
    }

    /// <summary>MPI_Init_thread without arguments (mpirun passes everything through the environment); returns the level provided.</summary>
    public static MpiThreadLevel InitThread(MpiThreadLevel required)
    {
        CollectiveLibraries.Require(CollectiveLibrary.Mpi);
        Check(MpiNative.MPI_Init_thread(null, null, (int)required, out int provided), "MPI_Init_thread");
        // errors come back as codes (turned into exceptions by Check) instead of aborting the job inside the library
        Check(MpiNative.MPI_Comm_set_errhandler(CommWorld, ErrorsReturn), "MPI_Comm_set_errhandler");
        return (MpiThreadLevel)provided;
    }

    public static int Rank(nint comm) { Check(MpiNative.MPI_Comm_rank(comm, out int r), "MPI_Comm_rank"); return r; }
    public static int Size(nint comm) { Check(MpiNative.MPI_Comm_size(comm, out int s), "MPI_Comm_size"); return s; }

    public static void Finalize() => Check(MpiNative.MPI_Finalize(), "MPI_Finalize");

    /// <summary>MPI_Abort: ends every process of the job with <paramref name="errorCode"/>; does not return when it works.</summary>
    public static void Abort(nint comm, int errorCode) => MpiNative.MPI_Abort(comm, errorCode);

    /// <summary>
    /// Polls a request until it completes or <paramref name="timeout"/> passes; returns false on timeout (the request
    /// is then still pending and its buffers must stay alive: the caller aborts the job). Spins briefly, then yields,
    /// then sleeps a millisecond between polls so that a waiting rank leaves the cores to the ranks still computing.
    /// </summary>
    public static bool WaitWithin(ref nint request, TimeSpan timeout, string call)
    {
        var clock = Stopwatch.StartNew();
        for (int polls = 0; ; polls++)
        {
            Check(MpiNative.MPI_Test(ref request, out int done, null), call);
            if (done != 0) return true;
            if (clock.Elapsed > timeout) return false;
            if (polls < 64) Thread.SpinWait(32);
            else if (clock.ElapsedMilliseconds < 20) Thread.Yield();
            else Thread.Sleep(1);
        }
    }
}
