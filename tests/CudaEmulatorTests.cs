namespace FastBlockDiff.Tests;

/// <summary>
/// Runs tests/cuda-emu/run.sh: the kernel sources compiled by g++ against a CPU emulation of CUDA threads, warp
/// shuffles and mma.sync, checked against double-precision references. Slow (about a minute on two cores), so it
/// runs only with FASTBLOCKDIFF_CUDA_EMU=1.
/// </summary>
public class CudaEmulatorTests
{
    [Fact]
    public async Task KernelsRunCorrectlyOnTheCpuEmulator()
    {
        if (Environment.GetEnvironmentVariable("FASTBLOCKDIFF_CUDA_EMU") != "1") Assert.Skip("set FASTBLOCKDIFF_CUDA_EMU=1 to run the CUDA-on-CPU emulator (needs g++ and python3)");
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "FastBlockDiff.sln"))) dir = dir.Parent;
        if (dir == null) Assert.Skip("repository not found above the test binary");
        var psi = new System.Diagnostics.ProcessStartInfo("bash", [Path.Combine(dir!.FullName, "tests", "cuda-emu", "run.sh")])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        var ct = TestContext.Current.CancellationToken;
        var stderr = p.StandardError.ReadToEndAsync(ct);
        var output = await p.StandardOutput.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct);
        Assert.True(p.ExitCode == 0, output + await stderr);
    }
}
