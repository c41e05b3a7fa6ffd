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

    public static bool Available { get; }
    public static string? Error { get; }
    public static string? LibraryName { get; }

    static OpenBlas()
    {
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
            LibraryName = name; Available = true; Error = null;
            return;
        }
        Error ??= $"OpenBLAS not found (tried {string.Join(", ", names)}); install it with `apt-get install -y libopenblas0-pthread`";
    }

    /// <summary>OpenBLAS's build description (version, target core), or null.</summary>
    public static string? Config => Available && getConfig != null ? Marshal.PtrToStringUTF8((nint)getConfig()) : null;

    /// <summary>Row-major C = alpha·op(A)·op(B) + beta·C. Throws <see cref="DllNotFoundException"/> when OpenBLAS is missing.</summary>
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha, float[] a, int lda, float[] b, int ldb,
        float beta, float[] c, int ldc)
    {
        if (!Available) throw new DllNotFoundException(Error);
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
            sgemm(RowMajor, transA ? Trans : NoTrans, transB ? Trans : NoTrans, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
    }
}
