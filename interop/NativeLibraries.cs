using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FastBlockDiff.Interop;

/// <summary>The three native libraries the CUDA backend needs.</summary>
public enum CudaLibrary { Driver, Nvrtc, CublasLt }

/// <summary>Result of probing one library: which file loaded, or every name tried and why each failed.</summary>
public sealed record LibraryProbe(CudaLibrary Library, bool Found, string? Path, string? Version, IReadOnlyList<string> Attempts, string? Reason)
{
    public override string ToString() => Found
        ? $"{Library}: found {Path}{(Version is null ? "" : $" (version {Version})")}"
        : $"{Library}: not found: {Reason}";
}

/// <summary>
/// Loads libcuda, NVRTC and cuBLASLt by probing versioned names and known directories, and routes the
/// LibraryImport declarations of this assembly to the handles it found. A missing library never fails at
/// type load: calls into it throw <see cref="CudaLibraryMissingException"/> through <see cref="Require"/>.
/// </summary>
public static class CudaLibraries
{
    internal const string DriverName = "fbd_cuda";
    internal const string NvrtcName = "fbd_nvrtc";
    internal const string CublasLtName = "fbd_cublaslt";

    /// <summary>Extra directories to search, separated by ':' (or ';'), before the system loader path.</summary>
    public const string LibDirsVariable = "FASTBLOCKDIFF_CUDA_LIB_DIRS";

    static readonly object Gate = new();
    static readonly Dictionary<CudaLibrary, (nint Handle, LibraryProbe Probe)> Loaded = new();

#pragma warning disable CA2255 // a library-level resolver must be in place before the first P/Invoke
    [ModuleInitializer]
    internal static void Register() =>
        NativeLibrary.SetDllImportResolver(typeof(CudaLibraries).Assembly, Resolve);
#pragma warning restore CA2255

    static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path) => name switch
    {
        DriverName => Load(CudaLibrary.Driver).Handle,
        NvrtcName => Load(CudaLibrary.Nvrtc).Handle,
        CublasLtName => Load(CudaLibrary.CublasLt).Handle,
        _ => CollectiveLibraries.Resolve(name),
    };

    /// <summary>Probes (once) and reports on one library.</summary>
    public static LibraryProbe Probe(CudaLibrary lib) => Load(lib).Probe;

    /// <summary>Throws <see cref="CudaLibraryMissingException"/> naming everything tried when the library is absent.</summary>
    public static void Require(CudaLibrary lib)
    {
        var p = Load(lib).Probe;
        if (!p.Found) throw new CudaLibraryMissingException(p);
    }

    public static bool IsAvailable(CudaLibrary lib) => Load(lib).Probe.Found;

    /// <summary>The names tried for a library, in order.</summary>
    public static IReadOnlyList<string> CandidateNames(CudaLibrary lib)
    {
        if (OperatingSystem.IsWindows())
            return lib switch
            {
                CudaLibrary.Driver => ["nvcuda.dll"],
                CudaLibrary.Nvrtc => ["nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll"],
                _ => ["cublasLt64_13.dll", "cublasLt64_12.dll", "cublasLt64_11.dll"],
            };
        return lib switch
        {
            CudaLibrary.Driver => ["libcuda.so.1", "libcuda.so"],
            CudaLibrary.Nvrtc => ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"],
            _ => ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"],
        };
    }

    /// <summary>
    /// Directories searched before the loader's own path: FASTBLOCKDIFF_CUDA_LIB_DIRS, CUDA_HOME/CUDA_PATH,
    /// /usr/local/cuda, and the nvidia/*/lib folders of PyTorch's pip wheels in Python site-packages.
    /// </summary>
    public static IReadOnlyList<string> SearchDirectories(CudaLibrary lib)
    {
        var dirs = new List<string>();
        void Add(string? d) { if (!string.IsNullOrEmpty(d) && Directory.Exists(d) && !dirs.Contains(d)) dirs.Add(d); }
        foreach (var d in (Environment.GetEnvironmentVariable(LibDirsVariable) ?? "").Split([':', ';'], StringSplitOptions.RemoveEmptyEntries))
            Add(d);
        if (lib == CudaLibrary.Driver) return dirs; // the driver comes with the kernel module, never from a toolkit folder
        foreach (var v in new[] { "CUDA_HOME", "CUDA_PATH" })
            if (Environment.GetEnvironmentVariable(v) is { Length: > 0 } home) { Add(Path.Combine(home, "lib64")); Add(Path.Combine(home, "lib")); }
        Add("/usr/local/cuda/lib64");
        string wheel = lib == CudaLibrary.Nvrtc ? "cuda_nvrtc" : "cublas";
        foreach (var sp in SitePackages())
        {
            Add(Path.Combine(sp, "nvidia", wheel, "lib"));
            Add(Path.Combine(sp, "nvidia", "cu13", "lib")); // CUDA 13 wheels merge the toolkit libraries
        }
        return dirs;
    }

    static IEnumerable<string> SitePackages()
    {
        var roots = new List<string>();
        foreach (var v in new[] { "VIRTUAL_ENV", "CONDA_PREFIX" })
            if (Environment.GetEnvironmentVariable(v) is { Length: > 0 } p) roots.Add(Path.Combine(p, "lib"));
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (home.Length > 0) roots.Add(Path.Combine(home, ".local", "lib"));
        roots.AddRange(["/usr/local/lib", "/usr/lib", "/opt/conda/lib"]);
        foreach (var root in roots)
        {
            string[] pys;
            try { pys = Directory.Exists(root) ? Directory.GetDirectories(root, "python3*") : []; }
            catch (Exception) { continue; }
            foreach (var py in pys)
                foreach (var leaf in new[] { "site-packages", "dist-packages" })
                {
                    var sp = Path.Combine(py, leaf);
                    if (Directory.Exists(sp)) yield return sp;
                }
        }
    }

    static (nint Handle, LibraryProbe Probe) Load(CudaLibrary lib)
    {
        lock (Gate)
        {
            if (Loaded.TryGetValue(lib, out var hit)) return hit;
            var attempts = new List<string>();
            nint handle = 0; string? found = null;
            var names = CandidateNames(lib);
            foreach (var dir in SearchDirectories(lib))
            {
                foreach (var n in names)
                {
                    var full = Path.Combine(dir, n);
                    if (!File.Exists(full)) continue;
                    if (NativeLibrary.TryLoad(full, out handle)) { found = full; break; }
                    attempts.Add($"{full}: present but failed to load");
                }
                if (found != null) break;
            }
            if (found == null)
                foreach (var n in names)
                {
                    if (NativeLibrary.TryLoad(n, out handle)) { found = n; break; }
                    attempts.Add($"{n}: not on the loader path");
                }
            LibraryProbe probe;
            if (found == null)
                probe = new LibraryProbe(lib, false, null, null, attempts,
                    $"none of {string.Join(", ", names)} could be loaded" +
                    (lib == CudaLibrary.Driver ? " (no NVIDIA driver installed?)" : $" (set {LibDirsVariable} to the folder holding it)"));
            else
            {
                string? why = MissingExport(lib, handle);
                probe = why == null
                    ? new LibraryProbe(lib, true, found, VersionOf(lib, handle), attempts, null)
                    : new LibraryProbe(lib, false, found, null, attempts, why);
                if (why != null) handle = 0;
            }
            var entry = (handle, probe);
            Loaded[lib] = entry;
            return entry;
        }
    }

    static string? MissingExport(CudaLibrary lib, nint handle)
    {
        string[] required = lib switch
        {
            CudaLibrary.Driver => ["cuInit", "cuMemAlloc_v2", "cuLaunchKernel", "cuModuleLoadDataEx", "cuDevicePrimaryCtxRetain"],
            CudaLibrary.Nvrtc => ["nvrtcCreateProgram", "nvrtcCompileProgram", "nvrtcGetPTX", "nvrtcVersion"],
            _ => ["cublasLtCreate", "cublasLtMatmul", "cublasLtMatmulAlgoGetHeuristic"],
        };
        foreach (var s in required)
            if (!NativeLibrary.TryGetExport(handle, s, out _)) return $"loaded but the symbol {s} is missing (too old?)";
        return null;
    }

    static unsafe string? VersionOf(CudaLibrary lib, nint handle)
    {
        try
        {
            switch (lib)
            {
                case CudaLibrary.Driver:
                    if (NativeLibrary.TryGetExport(handle, "cuDriverGetVersion", out var f))
                    {
                        int v; if (((delegate* unmanaged<int*, int>)f)(&v) == 0) return $"{v / 1000}.{v % 1000 / 10}";
                    }
                    return null;
                case CudaLibrary.Nvrtc:
                    {
                        int major, minor;
                        var f2 = NativeLibrary.GetExport(handle, "nvrtcVersion");
                        return ((delegate* unmanaged<int*, int*, int>)f2)(&major, &minor) == 0 ? $"{major}.{minor}" : null;
                    }
                default:
                    if (NativeLibrary.TryGetExport(handle, "cublasLtGetVersion", out var f3))
                    {
                        ulong v = (ulong)((delegate* unmanaged<nuint>)f3)();
                        return $"{v / 10000}.{v / 100 % 100}.{v % 100}";
                    }
                    return null;
            }
        }
        catch (Exception) { return null; }
    }
}
