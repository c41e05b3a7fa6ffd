using System.Runtime.InteropServices;

namespace FastBlockDiff.Interop;

/// <summary>The native libraries of data-parallel training: Open MPI (processes, machines) and NCCL (GPUs).</summary>
public enum CollectiveLibrary { Mpi, Nccl }

/// <summary>Result of probing one collective library: the file that loaded and its version, or why none did.</summary>
public sealed record CollectiveProbe(CollectiveLibrary Library, bool Found, string? Path, string? Version, string? Reason)
{
    public override string ToString() => Found
        ? $"{Library}: found {Path}{(Version is null ? "" : $" ({Version})")}"
        : $"{Library}: not found: {Reason}";
}

/// <summary>
/// Loads libmpi (Open MPI's ABI: handles are addresses of exported globals) and libnccl by probing versioned names,
/// like <see cref="CudaLibraries"/> does for CUDA, and routes this assembly's MPI and NCCL LibraryImports to them.
/// A missing library never fails at type load; <see cref="Require"/> throws naming what was tried.
/// </summary>
public static class CollectiveLibraries
{
    internal const string MpiName = "fbd_mpi";
    internal const string NcclName = "fbd_nccl";

    /// <summary>Extra directories to search for libmpi / libnccl, separated by ':' (or ';').</summary>
    public const string LibDirsVariable = "FASTBLOCKDIFF_COLLECTIVE_LIB_DIRS";
    /// <summary>The one file to load instead of probing (e.g. another Open MPI install than the system's).</summary>
    public static string FileVariable(CollectiveLibrary lib) => lib == CollectiveLibrary.Mpi ? "FASTBLOCKDIFF_MPI_LIBRARY" : "FASTBLOCKDIFF_NCCL_LIBRARY";

    static readonly object Gate = new();
    static readonly Dictionary<CollectiveLibrary, (nint Handle, CollectiveProbe Probe)> Loaded = new();

    /// <summary>Called by the assembly's import resolver (<see cref="CudaLibraries"/>) for names it does not own.</summary>
    internal static nint Resolve(string name) => name switch
    {
        MpiName => Load(CollectiveLibrary.Mpi).Handle,
        NcclName => Load(CollectiveLibrary.Nccl).Handle,
        _ => 0,
    };

    public static CollectiveProbe Probe(CollectiveLibrary lib) => Load(lib).Probe;

    public static bool IsAvailable(CollectiveLibrary lib) => Load(lib).Probe.Found;

    /// <summary>The loaded library's handle, for exported globals (Open MPI's MPI_COMM_WORLD, MPI_FLOAT, ...).</summary>
    public static nint Handle(CollectiveLibrary lib)
    {
        Require(lib);
        return Load(lib).Handle;
    }

    public static void Require(CollectiveLibrary lib)
    {
        var p = Load(lib).Probe;
        if (!p.Found) throw new CollectiveLibraryMissingException(p);
    }

    public static IReadOnlyList<string> CandidateNames(CollectiveLibrary lib) => lib switch
    {
        CollectiveLibrary.Mpi => ["libmpi.so.40", "libmpi.so"],
        _ => ["libnccl.so.2", "libnccl.so"],
    };

    static IEnumerable<string> SearchDirectories(CollectiveLibrary lib)
    {
        foreach (var d in (Environment.GetEnvironmentVariable(LibDirsVariable) ?? "").Split([':', ';'], StringSplitOptions.RemoveEmptyEntries))
            yield return d;
        if (lib == CollectiveLibrary.Mpi)
        {
            if (Environment.GetEnvironmentVariable("MPI_HOME") is { Length: > 0 } home) yield return System.IO.Path.Combine(home, "lib");
            yield return "/usr/lib/x86_64-linux-gnu/openmpi/lib";
            yield return "/usr/lib64/openmpi/lib"; // Fedora / RHEL
        }
        else
        {
            foreach (var d in CudaLibraries.SearchDirectories(CudaLibrary.CublasLt)) yield return d;
            // PyTorch's pip wheels ship NCCL beside cuBLAS: .../site-packages/nvidia/nccl/lib
            foreach (var d in CudaLibraries.SearchDirectories(CudaLibrary.CublasLt))
                if (d.EndsWith(System.IO.Path.Combine("nvidia", "cublas", "lib"), StringComparison.Ordinal))
                    yield return System.IO.Path.Combine(d, "..", "..", "nccl", "lib");
        }
    }

    static (nint Handle, CollectiveProbe Probe) Load(CollectiveLibrary lib)
    {
        lock (Gate)
        {
            if (Loaded.TryGetValue(lib, out var hit)) return hit;
            var names = CandidateNames(lib);
            nint handle = 0; string? found = null;
            if (Environment.GetEnvironmentVariable(FileVariable(lib)) is { Length: > 0 } file)
            {
                var only = NativeLibrary.TryLoad(file, out handle)
                    ? MissingExport(lib, handle) is { } bad ? new CollectiveProbe(lib, false, file, null, bad) : new CollectiveProbe(lib, true, file, VersionOf(lib, handle), null)
                    : new CollectiveProbe(lib, false, null, null, $"{FileVariable(lib)}={file} could not be loaded");
                Loaded[lib] = (only.Found ? handle : 0, only);
                return Loaded[lib];
            }
            foreach (var dir in SearchDirectories(lib))
                foreach (var n in names)
                {
                    var full = System.IO.Path.Combine(dir, n);
                    if (found == null && File.Exists(full) && NativeLibrary.TryLoad(full, out handle)) found = full;
                }
            if (found == null)
                foreach (var n in names)
                    if (NativeLibrary.TryLoad(n, out handle)) { found = n; break; }
            CollectiveProbe probe;
            if (found == null)
                probe = new CollectiveProbe(lib, false, null, null, $"none of {string.Join(", ", names)} could be loaded (" +
                    (lib == CollectiveLibrary.Mpi ? "install Open MPI, e.g. apt-get install openmpi-bin libopenmpi-dev" : "install NCCL (libnccl2)") +
                    $", or set {LibDirsVariable} to the folder holding it)");
            else if (MissingExport(lib, handle) is { } why)
            {
                probe = new CollectiveProbe(lib, false, found, null, why);
                handle = 0;
            }
            else probe = new CollectiveProbe(lib, true, found, VersionOf(lib, handle), null);
            Loaded[lib] = (handle, probe);
            return (handle, probe);
        }
    }

    static string? MissingExport(CollectiveLibrary lib, nint handle)
    {
        string[] required = lib == CollectiveLibrary.Mpi
            ? ["MPI_Init_thread", "MPI_Iallreduce", "MPI_Abort", "ompi_mpi_comm_world", "ompi_mpi_float", "ompi_mpi_op_sum"]
            : ["ncclGetUniqueId", "ncclCommInitRank", "ncclAllReduce", "ncclCommAbort", "ncclCommGetAsyncError"];
        foreach (var s in required)
            if (!NativeLibrary.TryGetExport(handle, s, out _))
                return lib == CollectiveLibrary.Mpi && s.StartsWith("ompi_", StringComparison.Ordinal)
                    ? $"loaded but {s} is missing: only Open MPI's ABI is supported (MPICH and its derivatives are not)"
                    : $"loaded but the symbol {s} is missing (too old?)";
        return null;
    }

    static unsafe string? VersionOf(CollectiveLibrary lib, nint handle)
    {
        try
        {
            if (lib == CollectiveLibrary.Mpi)
            {
                // MPI_Get_library_version may be called before MPI_Init
                var buffer = stackalloc byte[8192]; // MPI_MAX_LIBRARY_VERSION_STRING is 256 in Open MPI 4 and 5
                int length;
                var f = (delegate* unmanaged<byte*, int*, int>)NativeLibrary.GetExport(handle, "MPI_Get_library_version");
                if (f(buffer, &length) != 0) return null;
                var text = Marshal.PtrToStringUTF8((nint)buffer, Math.Clamp(length, 0, 8191)).Trim('\0', ' ', '\n');
                return text.Split(',')[0];
            }
            else
            {
                int v;
                var f = (delegate* unmanaged<int*, int>)NativeLibrary.GetExport(handle, "ncclGetVersion");
                if (f(&v) != 0) return null;
                return v >= 10000 ? $"NCCL {v / 10000}.{v / 100 % 100}.{v % 100}" : $"NCCL {v / 1000}.{v / 100 % 10}.{v % 100}";
            }
        }
        catch (Exception) { return null; }
    }
}

/// <summary>Open MPI or NCCL could not be found or loaded; the message says what was tried and how to install it.</summary>
public sealed class CollectiveLibraryMissingException(CollectiveProbe probe)
    : Exception($"{(probe.Library == CollectiveLibrary.Mpi ? "MPI" : "NCCL")} unavailable: {probe.Reason}")
{
    public CollectiveProbe Probe { get; } = probe;
}
