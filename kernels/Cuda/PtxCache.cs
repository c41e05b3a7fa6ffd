using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using FastBlockDiff.Interop;

namespace FastBlockDiff.Kernels.Cuda;

/// <summary>
/// The embedded kernels/Cuda/Source sources and their compilation: NVRTC at first use for the device's arch, PTX cached on
/// disk under ~/.cache/fastblockdiff/ptx (or FASTBLOCKDIFF_PTX_CACHE) keyed by sha256(source + headers + arch +
/// NVRTC version + options).
/// </summary>
public static class CudaSources
{
    static readonly Assembly Asm = typeof(CudaSources).Assembly;
    /// <summary>Logical name prefix of the embedded kernels/Cuda/Source files (FastBlockDiff.Kernels.csproj).</summary>
    const string Prefix = "CudaSource/";

    /// <summary>Names of the embedded .cu files (e.g. "attention.cu").</summary>
    public static IReadOnlyList<string> Kernels => Asm.GetManifestResourceNames()
        .Where(n => n.StartsWith(Prefix) && n.EndsWith(".cu")).Select(n => n[Prefix.Length..]).OrderBy(n => n, StringComparer.Ordinal).ToArray();

    /// <summary>Embedded headers (.cuh) by include name, handed to NVRTC (which reads no files).</summary>
    public static IReadOnlyDictionary<string, string> Headers => Asm.GetManifestResourceNames()
        .Where(n => n.StartsWith(Prefix) && n.EndsWith(".cuh")).ToDictionary(n => n[Prefix.Length..], Read);

    public static string Source(string file) => Read(Prefix + file);

    static string Read(string resource)
    {
        using var s = Asm.GetManifestResourceStream(resource) ?? throw new FileNotFoundException($"embedded kernel source {resource} not found");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    /// <summary>The NVRTC options used for an arch such as "compute_80".</summary>
    public static string[] Options(string arch) => [$"--gpu-architecture={arch}", "--std=c++14", "-DFBD_NVRTC=1"];

    /// <summary>Compiles one embedded .cu file for arch through NVRTC (no cache).</summary>
    public static NvrtcResult Compile(string file, string arch) => Nvrtc.Compile(Source(file), file, Options(arch), Headers);

    public static string CacheDirectory =>
        Environment.GetEnvironmentVariable("FASTBLOCKDIFF_PTX_CACHE") is { Length: > 0 } d ? d
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile) is { Length: > 0 } h ? h : Path.GetTempPath(), ".cache", "fastblockdiff", "ptx");

    /// <summary>PTX for file and arch, from the disk cache when the key matches, else compiled and stored.</summary>
    public static string GetPtx(string file, string arch)
    {
        var (maj, min) = Nvrtc.Version();
        var sb = new StringBuilder();
        sb.Append(Source(file)).Append('\0');
        foreach (var (k, v) in Headers.OrderBy(h => h.Key, StringComparer.Ordinal)) sb.Append(k).Append('\0').Append(v).Append('\0');
        sb.Append(arch).Append('\0').Append($"nvrtc {maj}.{min}").Append('\0').Append(string.Join(' ', Options(arch)));
        var key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
        var path = Path.Combine(CacheDirectory, $"{Path.GetFileNameWithoutExtension(file)}-{arch}-{key[..32]}.ptx");
        try { if (File.Exists(path)) return File.ReadAllText(path); }
        catch (IOException) { }
        var ptx = Compile(file, arch).Ptx;
        try
        {
            Directory.CreateDirectory(CacheDirectory);
            var tmp = path + "." + Environment.ProcessId + ".tmp";
            File.WriteAllText(tmp, ptx);
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* cache is best effort */ }
        return ptx;
    }
}
