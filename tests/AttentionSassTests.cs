using System.Diagnostics;
using System.Text.RegularExpressions;
using FastBlockDiff.Kernels.Cuda;

namespace FastBlockDiff.Tests;

/// <summary>
/// What the tensor-core attention kernels (attention_bf16.cu) become on the real SMs, checked without a GPU: their PTX
/// (NVRTC) is assembled by ptxas for sm_80 and sm_90, and ptxas must report no local-memory spills for any of them, and
/// the disassembled cubin (cuobjdump -sass) of each forward/backward/decode kernel must contain tensor-core (HMMA),
/// ldmatrix (LDSM) and asynchronous global-to-shared copy (LDGSTS) instructions. ptxas and cuobjdump come from Debian's
/// non-free CUDA 11.8 toolkit (.ci/install-ptxas.sh); without them these skip.
/// </summary>
public class AttentionSassTests
{
    const string File = "attention_bf16.cu";

    public static TheoryData<string> Archs() => new(NvrtcCompileTests.Archs);

    static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<(string, string)>> assembled = new();

    /// <summary>ptxas -v output and the cubin's SASS of attention_bf16.cu for one arch such as compute_80 (once per run:
    /// ptxas takes ~10 s a file).</summary>
    internal static (string PtxasLog, string Sass) Assemble(string arch)
    {
        NvrtcCompileTests.RequireNvrtc();
        if (NvrtcCompileTests.FindCudaTool("ptxas", "FASTBLOCKDIFF_PTXAS") == null || NvrtcCompileTests.FindCudaTool("cuobjdump", "FASTBLOCKDIFF_CUOBJDUMP") == null)
            return AssembleNow(arch); // skips with the reason
        return assembled.GetOrAdd(arch, a => new Lazy<(string, string)>(() => AssembleNow(a))).Value;
    }

    static (string PtxasLog, string Sass) AssembleNow(string arch)
    {
        NvrtcCompileTests.RequireNvrtc();
        var ptxas = NvrtcCompileTests.FindCudaTool("ptxas", "FASTBLOCKDIFF_PTXAS");
        var cuobjdump = NvrtcCompileTests.FindCudaTool("cuobjdump", "FASTBLOCKDIFF_CUOBJDUMP");
        if (ptxas == null || cuobjdump == null)
            Assert.Skip($"no {(ptxas == null ? "ptxas" : "cuobjdump")} (run .ci/install-ptxas.sh, or set FASTBLOCKDIFF_PTXAS / FASTBLOCKDIFF_CUOBJDUMP)");
        var dir = Directory.CreateTempSubdirectory("fbd-sass-");
        try
        {
            var ptx = Path.Combine(dir.FullName, "k.ptx"); var cubin = Path.Combine(dir.FullName, "k.cubin");
            System.IO.File.WriteAllText(ptx, CudaSources.Compile(File, arch).Ptx);
            var sm = "sm_" + arch["compute_".Length..];
            var log = Run(ptxas!, ["-arch=" + sm, "-v", ptx, "-o", cubin], $"ptxas {sm}");
            return (log, Run(cuobjdump!, ["-sass", cubin], $"cuobjdump -sass ({sm})"));
        }
        finally { dir.Delete(true); }
    }

    static string Run(string exe, string[] args, string what)
    {
        var psi = new ProcessStartInfo(exe, args) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var proc = Process.Start(psi)!;
        var err = proc.StandardError.ReadToEndAsync();
        var output = proc.StandardOutput.ReadToEnd() + err.Result;
        proc.WaitForExit();
        Assert.True(proc.ExitCode == 0, $"{what} failed on {File}:\n{output}");
        return output;
    }

    /// <summary>Per kernel: (spill store bytes, spill load bytes) from ptxas -v's "Compiling entry function" sections.</summary>
    internal static Dictionary<string, (int Stores, int Loads)> Spills(string ptxasLog)
    {
        var result = new Dictionary<string, (int, int)>();
        foreach (Match m in Regex.Matches(ptxasLog,
                     @"Compiling entry function '(\w+)'[^\n]*\n(?:[^\n]*\n)*?[^\n]*?(\d+) bytes spill stores, (\d+) bytes spill loads"))
            result[m.Groups[1].Value] = (int.Parse(m.Groups[2].Value), int.Parse(m.Groups[3].Value));
        return result;
    }

    /// <summary>Per kernel: the set of SASS opcodes (first dotted word of each instruction) of its "Function :" section.</summary>
    internal static Dictionary<string, HashSet<string>> Opcodes(string sass)
    {
        var result = new Dictionary<string, HashSet<string>>();
        HashSet<string>? current = null;
        foreach (var line in sass.Split('\n'))
        {
            var f = Regex.Match(line, @"Function : (\w+)");
            if (f.Success) { current = result[f.Groups[1].Value] = []; continue; }
            var ins = Regex.Match(line, @"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)");
            if (ins.Success && current != null) current.Add(ins.Groups[1].Value);
        }
        return result;
    }

    static IEnumerable<string> AttentionEntries() =>
        Regex.Matches(CudaSources.Source(File), "extern \"C\" __global__ void (?:__launch_bounds__\\([^)]*\\) )?(\\w+)\\(")
             .Select(m => m.Groups[1].Value);

    [Theory]
    [MemberData(nameof(Archs))]
    public void AttentionKernelsDoNotSpill(string arch)
    {
        var (log, _) = Assemble(arch);
        var spills = Spills(log);
        foreach (var entry in AttentionEntries())
        {
            Assert.True(spills.TryGetValue(entry, out var s), $"ptxas -v reported nothing for {entry} ({arch}):\n{log}");
            Assert.True(s.Stores == 0 && s.Loads == 0, $"{entry} spills on {arch}: {s.Stores} bytes stored, {s.Loads} bytes loaded");
        }
    }

    [Theory]
    [MemberData(nameof(Archs))]
    public void AttentionKernelsUseTensorCoresLdmatrixAndCpAsync(string arch)
    {
        var (_, sass) = Assemble(arch);
        var ops = Opcodes(sass);
        foreach (var entry in AttentionEntries().Where(e => Regex.IsMatch(e, "^fbd_(attn_fwd|attn_bwd|decode_attn)_")))
        {
            Assert.True(ops.TryGetValue(entry, out var set), $"cuobjdump -sass has no section for {entry} ({arch})");
            foreach (var op in new[] { "HMMA", "LDSM", "LDGSTS" })
                Assert.True(set!.Contains(op), $"{entry} ({arch}) has no {op} instruction; it has: {string.Join(' ', set!.Order())}");
        }
    }

    [Fact]
    public void ParsersReadToolOutput()
    {
        const string log = "ptxas info    : Compiling entry function 'k_a' for 'sm_80'\nptxas info    : Function properties for k_a\n"
            + "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\nptxas info    : Used 96 registers\n"
            + "ptxas info    : Compiling entry function 'k_b' for 'sm_80'\nptxas info    : Function properties for k_b\n"
            + "    8 bytes stack frame, 24 bytes spill stores, 8 bytes spill loads\n";
        var s = Spills(log);
        Assert.Equal((0, 0), s["k_a"]);
        Assert.Equal((24, 8), s["k_b"]);
        const string sass = "\t\tFunction : k_a\n        /*0070*/                   LDSM.16.M88.4 R4, [R2] ;   /* 0x000000000204783b */\n"
            + "        /*0080*/              @!P0 LDGSTS.E.BYPASS.128 [R3], [R6.64] ;  /* 0x0000000006037fae */\n"
            + "\t\tFunction : k_b\n        /*0010*/                   HMMA.16816.F32.BF16 R8, R4, R2, R8 ;  /* 0x000000020408723c */\n";
        var o = Opcodes(sass);
        Assert.Equal(["LDGSTS", "LDSM"], o["k_a"].Order());
        Assert.Equal(["HMMA"], o["k_b"].Order());
    }
}
