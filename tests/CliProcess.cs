using System.Diagnostics;

namespace FastBlockDiff.Tests;

/// <summary>Starts the `fastblockdiff` executable built beside the tests, with its own token cache directory.</summary>
static class CliProcess
{
    /// <summary>Starts the command with its output drained in the background (for tests that kill it).</summary>
    public static Process Start(string cacheDir, params string[] args)
    {
        var p = Process.Start(Info(cacheDir, args))!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    /// <summary>Runs the command to its end.</summary>
    public static (int Code, string Out, string Err) Run(string cacheDir, params string[] args)
    {
        using var p = Process.Start(Info(cacheDir, args))!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, err);
    }

    static ProcessStartInfo Info(string cacheDir, string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "fastblockdiff.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["XDG_CACHE_HOME"] = cacheDir;
        return psi;
    }
}
