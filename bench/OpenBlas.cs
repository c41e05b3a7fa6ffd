using System.Runtime.InteropServices;

namespace FastBlockDiff.Bench;

/// <summary>
/// cblas_sgemm from the system OpenBLAS (Debian: libopenblas0-pthread), for comparisons only. The library is
/// probed at first use; when it is missing <see cref="Available"/> is false and <see cref="Error"/> says why.
/// </summary>
public static unsafe class OpenBlas
{
    const int RowMajor = 101, NoTrans = 111, Trans = 112;
    static readonly string[] Names = ["libopenblas.so.0", "libopenblas.so", "/usr/lib/x86_64-linux-gnu/libopenblas.so.0", "libopenblas"];

    static readonly delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> sgemm;
    static readonly delegate* unmanaged<byte*> getConfig;
    static readonly delegate* unmanaged<byte*> getCorename;

    public static bool Available { get; }
    public static string? Error { get; }
    public static string? LibraryName { get; }

    static readonly delegate* unmanaged<int, void> setNumThreads;

    [DllImport("libc", EntryPoint = "setenv")]
    static extern int SetEnv(string name, string value, int overwrite);

    static OpenBlas()
    {
        // A DYNAMIC_ARCH build picks its kernels when it loads, from OPENBLAS_CORETYPE or its own CPU detection; 0.3.21
        // detects Zen 4/5 as Haswell (AVX2), and this machine's environment sets OPENBLAS_CORETYPE=Haswell besides,
        // though the AVX-512 kernels it ships run here. FBD_OPENBLAS_CORETYPE: "best" (default) asks for OpenBLAS's
        // fastest kernels for this CPU, so that we are measured against OpenBLAS at its best; "env" keeps whatever
        // OPENBLAS_CORETYPE says (or OpenBLAS's own pick); any other value is passed on as the core name.
        AmbientCore = Environment.GetEnvironmentVariable("OPENBLAS_CORETYPE");
        string choice = Environment.GetEnvironmentVariable("FBD_OPENBLAS_CORETYPE") is { Length: > 0 } c ? c : "best";
        string? ask = choice switch { "best" => BestCore(), "env" => null, _ => choice };
        if (ask != null)
        {
            SetEnv("OPENBLAS_CORETYPE", ask, 1);
            RequestedCore = ask;
        }
        // FBD_OPENBLAS_LIB names one library to load instead of probing (also a way to test the missing case).
        var names = Environment.GetEnvironmentVariable("FBD_OPENBLAS_LIB") is { Length: > 0 } forced ? [forced] : Names;
        foreach (var name in names)
        {
            if (!NativeLibrary.TryLoad(name, out var h)) continue;
            if (!NativeLibrary.TryGetExport(h, "cblas_sgemm", out var f))
            {
                Error = $"{name} loaded but has no cblas_sgemm export";
                continue;
            }
            sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)f;
            if (NativeLibrary.TryGetExport(h, "openblas_get_config", out var cfg)) getConfig = (delegate* unmanaged<byte*>)cfg;
            if (NativeLibrary.TryGetExport(h, "openblas_get_corename", out var core)) getCorename = (delegate* unmanaged<byte*>)core;
            if (NativeLibrary.TryGetExport(h, "openblas_set_num_threads", out var nt)) setNumThreads = (delegate* unmanaged<int, void>)nt;
            LibraryName = name; Available = true; Error = null;
            return;
        }
        Error ??= $"OpenBLAS not found (tried {string.Join(", ", names)}); install it with `apt-get install -y libopenblas0-pthread`";
    }

    /// <summary>OpenBLAS's build description (version, target core), or null.</summary>
    public static string? Config => Available && getConfig != null ? Marshal.PtrToStringUTF8((nint)getConfig()) : null;

    /// <summary>The core type whose kernels OpenBLAS picked on this CPU (a DYNAMIC_ARCH build chooses at load), or null.</summary>
    public static string? Core => Available && getCorename != null ? Marshal.PtrToStringUTF8((nint)getCorename()) : null;

    /// <summary>The core type this process asked OpenBLAS for (OPENBLAS_CORETYPE), or null when it left the choice to the environment.</summary>
    public static string? RequestedCore { get; }

    /// <summary>OPENBLAS_CORETYPE as the process found it (null: unset).</summary>
    public static string? AmbientCore { get; }

    /// <summary>OpenBLAS's fastest kernels for this CPU: its AVX-512 ones where AVX-512 runs, else its own pick (null).</summary>
    static string? BestCore()
    {
        if (!System.Runtime.Intrinsics.X86.Avx512F.IsSupported) return null;
        try
        {
            // Cooperlake = SkylakeX's AVX-512 kernels plus bf16; OpenBLAS refuses a core the CPU cannot run
            bool bf16 = File.ReadLines("/proc/cpuinfo").Any(l => l.StartsWith("flags") && l.Contains(" avx512_bf16"));
            return bf16 ? "Cooperlake" : "SkylakeX";
        }
        catch (IOException) { return "SkylakeX"; }
    }

    /// <summary>Threads OpenBLAS uses from now on (its default: all processors).</summary>
    public static void SetThreads(int threads)
    {
        if (Available && setNumThreads != null) setNumThreads(threads);
    }

    /// <summary>Row-major C = alpha·op(A)·op(B) + beta·C. Throws <see cref="DllNotFoundException"/> when OpenBLAS is missing.</summary>
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha, float[] a, int lda, float[] b, int ldb,
        float beta, float[] c, int ldc)
    {
        if (!Available) throw new DllNotFoundException(Error);
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
            sgemm(RowMajor, transA ? Trans : NoTrans, transB ? Trans : NoTrans, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
    }
}
