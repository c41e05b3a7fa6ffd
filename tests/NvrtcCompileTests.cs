using System.Text.RegularExpressions;
using FastBlockDiff.Interop;
using FastBlockDiff.Kernels.Cuda;

namespace FastBlockDiff.Tests;

/// <summary>
/// Compiles every embedded kernels/Cuda/Source/*.cu for compute_80 and compute_90 through our NVRTC binding. Needs no GPU.
/// Without NVRTC these skip, except under CI=true or FASTBLOCKDIFF_REQUIRE_NVRTC=1 where they fail
/// (CI installs NVRTC 11.8 with .ci/install-nvrtc.sh).
/// </summary>
public class NvrtcCompileTests
{
    public static readonly string[] Archs = ["compute_80", "compute_90"];

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var k in CudaSources.Kernels)
            foreach (var a in Archs) data.Add(k, a);
        return data;
    }

    internal static void RequireNvrtc()
    {
        var probe = CudaLibraries.Probe(CudaLibrary.Nvrtc);
        if (probe.Found) return;
        bool required = string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase)
            || Environment.GetEnvironmentVariable("FASTBLOCKDIFF_REQUIRE_NVRTC") == "1";
        var why = $"NVRTC not loadable: {probe.Reason} (tried {string.Join("; ", probe.Attempts)}); run .ci/install-nvrtc.sh";
        if (required) Assert.Fail(why + " [CI=true or FASTBLOCKDIFF_REQUIRE_NVRTC=1: required]");
        Assert.Skip(why);
    }

    [Fact]
    public void KernelSourcesAreEmbedded()
    {
        var names = CudaSources.Kernels;
        foreach (var expected in new[] { "attention.cu", "attention_bf16.cu", "elementwise.cu", "loss.cu", "norms.cu", "qkv_bf16.cu", "sampling.cu" })
            Assert.Contains(expected, names);
        Assert.Contains("common.cuh", CudaSources.Headers.Keys);
    }

    [Fact]
    public void SourcesIncludeNoSystemHeaders()
    {
        // NVRTC 11.8 (CI) ships no headers: only our own .cuh may be included.
        var headers = CudaSources.Headers.Keys.ToHashSet();
        foreach (var file in CudaSources.Kernels.Concat(headers))
        {
            var text = file.EndsWith(".cuh") ? CudaSources.Headers[file] : CudaSources.Source(file);
            foreach (Match m in Regex.Matches(text, "^\\s*#\\s*include\\s*[<\"]([^>\"]+)[>\"]", RegexOptions.Multiline))
                Assert.True(headers.Contains(m.Groups[1].Value), $"{file} includes {m.Groups[1].Value}, which NVRTC 11.8 cannot provide");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Compiles(string file, string arch)
    {
        RequireNvrtc();
        NvrtcResult result;
        try { result = CudaSources.Compile(file, arch); }
        catch (NvrtcCompileException e) { Assert.Fail($"{file} for {arch} failed to compile (NVRTC {Nvrtc.Version()}):\n{e.Log}"); throw; }
        Assert.Contains(".entry", result.Ptx);
        // every extern "C" __global__ function of the source is an entry point of the PTX
        var source = CudaSources.Source(file);
        foreach (Match m in Regex.Matches(source, "extern \"C\" __global__ void (?:__launch_bounds__\\([^)]*\\) )?(\\w+)\\("))
            Assert.Matches($"\\.entry {m.Groups[1].Value}\\(", result.Ptx);
        Assert.DoesNotContain("warning", result.Log, StringComparison.OrdinalIgnoreCase);
    }

    static string? FindPtxas() => FindCudaTool("ptxas", "FASTBLOCKDIFF_PTXAS");

    /// <summary>A CUDA toolkit binary (ptxas, cuobjdump): the variable's path, else PATH, else where .ci/install-ptxas.sh puts it.</summary>
    internal static string? FindCudaTool(string name, string variable)
    {
        if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } p && File.Exists(p)) return p;
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
                     .Append(Environment.GetEnvironmentVariable("FASTBLOCKDIFF_PTXAS_DIR") ?? "/opt/fastblockdiff-ptxas").Append("/usr/local/cuda/bin"))
            if (File.Exists(Path.Combine(dir, name))) return Path.Combine(dir, name);
        return null;
    }

    /// <summary>
    /// Runs the PTX through ptxas for the real SM (what the driver's JIT does at module load), when a ptxas is
    /// available (.ci/install-ptxas.sh, FASTBLOCKDIFF_PTXAS or PATH); otherwise skips.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void PtxAssembles(string file, string arch)
    {
        RequireNvrtc();
        var ptxas = FindPtxas();
        if (ptxas == null) Assert.Skip("no ptxas (run .ci/install-ptxas.sh or set FASTBLOCKDIFF_PTXAS)");
        if (file == "attention_bf16.cu" && NvrtcCompileTests.FindCudaTool("cuobjdump", "FASTBLOCKDIFF_CUOBJDUMP") != null)
        {   // assembled once for this and AttentionSassTests (it fails there with ptxas's log if ptxas fails)
            var log = AttentionSassTests.Assemble(arch).PtxasLog;
            TestContext.Current.SendDiagnosticMessage($"{file} {arch}: {string.Join(" | ", log.Split('\n').Where(l => l.Contains("registers")).Select(l => l.Trim()))}");
            return;
        }
        var ptx = CudaSources.Compile(file, arch).Ptx;
        var path = Path.Combine(Path.GetTempPath(), $"fbd-{Guid.NewGuid():N}.ptx");
        File.WriteAllText(path, ptx);
        try
        {
            var psi = new System.Diagnostics.ProcessStartInfo(ptxas!, ["-arch=sm_" + arch["compute_".Length..], "-v", path, "-o", "/dev/null"])
            { RedirectStandardError = true, RedirectStandardOutput = true };
            using var proc = System.Diagnostics.Process.Start(psi)!;
            var output = proc.StandardOutput.ReadToEnd() + proc.StandardError.ReadToEnd();
            proc.WaitForExit();
            Assert.True(proc.ExitCode == 0, $"ptxas failed on {file} for {arch}:\n{output}");
            TestContext.Current.SendDiagnosticMessage($"{file} {arch}: {string.Join(" | ", output.Split('\n').Where(l => l.Contains("registers")).Select(l => l.Trim()))}");
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void PtxCacheRoundTrips()
    {
        RequireNvrtc();
        var dir = Path.Combine(Path.GetTempPath(), "fbd-ptx-" + Guid.NewGuid().ToString("N"));
        var old = Environment.GetEnvironmentVariable("FASTBLOCKDIFF_PTX_CACHE");
        Environment.SetEnvironmentVariable("FASTBLOCKDIFF_PTX_CACHE", dir);
        try
        {
            var first = CudaSources.GetPtx("loss.cu", "compute_80");
            Assert.Single(Directory.GetFiles(dir, "*.ptx"));
            var second = CudaSources.GetPtx("loss.cu", "compute_80");
            Assert.Equal(first, second);
        }
        finally
        {
            Environment.SetEnvironmentVariable("FASTBLOCKDIFF_PTX_CACHE", old);
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public void NvrtcKnowsTheTestedArchs()
    {
        RequireNvrtc();
        var archs = Nvrtc.SupportedArchs();
        if (archs.Length > 0) { Assert.Contains(80, archs); Assert.Contains(90, archs); }
    }

    [Fact]
    public void AvailabilityProbeNeverThrows()
    {
        var report = CudaAvailability.Probe();
        Assert.NotNull(report.ToString());
        if (!report.Usable)
        {
            Assert.False(string.IsNullOrEmpty(report.WhyNot));
            var e = Assert.Throws<InvalidOperationException>(() => new CudaBackend());
            Assert.Contains("CUDA backend unavailable", e.Message);
        }
    }

    [Fact]
    public void ArchPickFallsBackToNewestKnown()
    {
        Assert.Equal("compute_90", CudaBackend.PickArch(90, [75, 80, 86, 89, 90]));
        Assert.Equal("compute_90", CudaBackend.PickArch(120, [75, 80, 86, 89, 90]));
        Assert.Equal("compute_86", CudaBackend.PickArch(87, [75, 80, 86, 89, 90]));
        Assert.Equal("compute_100", CudaBackend.PickArch(100, []));
    }
}
