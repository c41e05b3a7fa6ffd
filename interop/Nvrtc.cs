using System.Runtime.InteropServices;
using System.Text;

namespace FastBlockDiff.Interop;

/// <summary>Raw NVRTC entry points (resolved through <see cref="CudaLibraries"/>). Return nvrtcResult.</summary>
public static unsafe partial class NvrtcNative
{
    const string L = CudaLibraries.NvrtcName;
    [LibraryImport(L)] public static partial nint nvrtcGetErrorString(int result);
    [LibraryImport(L)] public static partial int nvrtcVersion(out int major, out int minor);
    [LibraryImport(L)] public static partial int nvrtcGetNumSupportedArchs(out int count);
    [LibraryImport(L)] public static partial int nvrtcGetSupportedArchs(int* archs);
    [LibraryImport(L)] public static partial int nvrtcCreateProgram(out nint prog, byte* src, byte* name, int numHeaders, byte** headers, byte** includeNames);
    [LibraryImport(L)] public static partial int nvrtcDestroyProgram(ref nint prog);
    [LibraryImport(L)] public static partial int nvrtcCompileProgram(nint prog, int numOptions, byte** options);
    [LibraryImport(L)] public static partial int nvrtcGetProgramLogSize(nint prog, out nuint size);
    [LibraryImport(L)] public static partial int nvrtcGetProgramLog(nint prog, byte* log);
    [LibraryImport(L)] public static partial int nvrtcGetPTXSize(nint prog, out nuint size);
    [LibraryImport(L)] public static partial int nvrtcGetPTX(nint prog, byte* ptx);
}

/// <summary>An NVRTC compile error: the exception message carries the compiler log.</summary>
public sealed class NvrtcCompileException(string name, int code, string errorText, string log)
    : CudaException($"nvrtcCompileProgram({name})", "nvrtc", code, "NVRTC_ERROR_COMPILATION", errorText, log)
{
    public string Log { get; } = log;
}

/// <summary>The outcome of compiling one source: PTX and the compiler log (warnings included).</summary>
public sealed record NvrtcResult(string Ptx, string Log);

/// <summary>Checked NVRTC wrappers.</summary>
public static unsafe class Nvrtc
{
    public static string ErrorString(int code)
    {
        try { var p = NvrtcNative.nvrtcGetErrorString(code); return p != 0 ? Marshal.PtrToStringUTF8(p)! : $"NVRTC error {code}"; }
        catch (Exception) { return $"NVRTC error {code}"; }
    }

    public static void Check(int result, string call, string? detail = null)
    {
        if (result != 0) throw new CudaException(call, "nvrtc", result, ErrorString(result), ErrorString(result), detail);
    }

    /// <summary>(major, minor) of the loaded NVRTC.</summary>
    public static (int Major, int Minor) Version()
    {
        CudaLibraries.Require(CudaLibrary.Nvrtc);
        Check(NvrtcNative.nvrtcVersion(out var a, out var b), "nvrtcVersion");
        return (a, b);
    }

    /// <summary>The SM numbers this NVRTC can target (e.g. 52..90), or empty when it cannot say.</summary>
    public static int[] SupportedArchs()
    {
        CudaLibraries.Require(CudaLibrary.Nvrtc);
        try
        {
            Check(NvrtcNative.nvrtcGetNumSupportedArchs(out var n), "nvrtcGetNumSupportedArchs");
            var a = new int[n];
            fixed (int* p = a) Check(NvrtcNative.nvrtcGetSupportedArchs(p), "nvrtcGetSupportedArchs");
            return a;
        }
        catch (EntryPointNotFoundException) { return []; }
    }

    /// <summary>
    /// Compiles CUDA C++ source to PTX. headers maps include names to their text (NVRTC reads no files).
    /// Throws <see cref="NvrtcCompileException"/> with the log on a compile error.
    /// </summary>
    public static NvrtcResult Compile(string source, string name, IEnumerable<string> options, IReadOnlyDictionary<string, string>? headers = null)
    {
        CudaLibraries.Require(CudaLibrary.Nvrtc);
        var pins = new List<GCHandle>();
        byte* Pin(string s)
        {
            var h = GCHandle.Alloc(Encoding.UTF8.GetBytes(s + "\0"), GCHandleType.Pinned);
            pins.Add(h);
            return (byte*)h.AddrOfPinnedObject();
        }
        nint prog = 0;
        try
        {
            var hs = headers?.ToArray() ?? [];
            var hdrText = new nint[hs.Length]; var hdrName = new nint[hs.Length];
            for (int i = 0; i < hs.Length; i++) { hdrText[i] = (nint)Pin(hs[i].Value); hdrName[i] = (nint)Pin(hs[i].Key); }
            var opts = options.Select(o => (nint)Pin(o)).ToArray();
            fixed (nint* ht = hdrText) fixed (nint* hn = hdrName) fixed (nint* op = opts)
            {
                Check(NvrtcNative.nvrtcCreateProgram(out prog, Pin(source), Pin(name), hs.Length, (byte**)ht, (byte**)hn), $"nvrtcCreateProgram({name})");
                int r = NvrtcNative.nvrtcCompileProgram(prog, opts.Length, (byte**)op);
                string log = GetLog(prog);
                if (r != 0) throw new NvrtcCompileException(name, r, ErrorString(r), log);
                Check(NvrtcNative.nvrtcGetPTXSize(prog, out var size), "nvrtcGetPTXSize");
                var ptx = new byte[(int)size];
                fixed (byte* p = ptx) Check(NvrtcNative.nvrtcGetPTX(prog, p), "nvrtcGetPTX");
                int len = Array.IndexOf(ptx, (byte)0); if (len < 0) len = ptx.Length;
                return new NvrtcResult(Encoding.UTF8.GetString(ptx, 0, len), log);
            }
        }
        finally
        {
            if (prog != 0) NvrtcNative.nvrtcDestroyProgram(ref prog);
            foreach (var h in pins) h.Free();
        }
    }

    static string GetLog(nint prog)
    {
        if (NvrtcNative.nvrtcGetProgramLogSize(prog, out var size) != 0 || size <= 1) return "";
        var buf = new byte[(int)size];
        fixed (byte* p = buf) if (NvrtcNative.nvrtcGetProgramLog(prog, p) != 0) return "";
        return Encoding.UTF8.GetString(buf, 0, (int)size - 1).Trim();
    }
}
