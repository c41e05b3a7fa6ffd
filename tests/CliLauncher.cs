using System.Diagnostics;

namespace FastBlockDiff.Tests;

/// <summary>
/// How tests start the `fastblockdiff` command: the self-contained executable when one sits beside the tests (the
/// published GPU check, where no dotnet exists), else `dotnet fastblockdiff.dll` from the build output.
/// </summary>
static class CliLauncher
{
    /// <summary>
    /// The CLI's own executable when it was published self-contained into the tests' folder (tests/gpu/check.sh does):
    /// its runtimeconfig then lists the included frameworks instead of asking for an installed one.
    /// </summary>
    public static string? SelfContainedCli()
    {
        var exe = Path.Combine(AppContext.BaseDirectory, OperatingSystem.IsWindows() ? "fastblockdiff.exe" : "fastblockdiff");
        var config = Path.Combine(AppContext.BaseDirectory, "fastblockdiff.runtimeconfig.json");
        return File.Exists(exe) && File.Exists(config) && File.ReadAllText(config).Contains("includedFrameworks") ? exe : null;
    }

    /// <summary>A start info for the CLI with nothing but the program set; callers add arguments and environment.</summary>
    public static ProcessStartInfo StartInfo()
    {
        if (SelfContainedCli() is { } exe)
            return new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "fastblockdiff.dll"));
        return psi;
    }
}
