using System.Diagnostics;
using System.Reflection;
using FastBlockDiff.Engine;

namespace FastBlockDiff.Cli;

/// <summary>
/// `train --nproc N`: starts `mpirun -np N` on this same command (without --nproc), so that N ranks train
/// data-parallel, and returns mpirun's exit code. Each rank gets an equal share of the cores (DOTNET_PROCESSOR_COUNT).
/// </summary>
static class MpiLauncher
{
    public static int Relaunch(int ranks)
    {
        string mpirun = FindOnPath("mpirun") ?? throw new UserInputException(
            $"--nproc {ranks} needs Open MPI's mpirun on PATH (apt-get install openmpi-bin libopenmpi-dev), or start the ranks yourself with mpirun -np {ranks}");
        var psi = new ProcessStartInfo(mpirun) { UseShellExecute = false };
        psi.ArgumentList.Add("-np"); psi.ArgumentList.Add(ranks.ToString(System.Globalization.CultureInfo.InvariantCulture));
        // Open MPI counts physical cores as slots; more ranks than that is fine here (they yield while they wait)
        psi.ArgumentList.Add("--oversubscribe");
        // each rank runs its own thread pool: let the OS place them rather than pinning each to one core
        psi.ArgumentList.Add("--bind-to"); psi.ArgumentList.Add("none");
        if (Environment.UserName == "root" && Environment.GetEnvironmentVariable("OMPI_ALLOW_RUN_AS_ROOT") != "1")
            psi.ArgumentList.Add("--allow-run-as-root"); // containers run as root; Open MPI refuses that unless told
        if (Environment.GetEnvironmentVariable("DOTNET_PROCESSOR_COUNT") is null)
        {
            psi.ArgumentList.Add("-x");
            psi.ArgumentList.Add($"DOTNET_PROCESSOR_COUNT={Math.Max(1, Environment.ProcessorCount / ranks)}");
        }
        string self = Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell which executable is running");
        psi.ArgumentList.Add(self);
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") psi.ArgumentList.Add(Assembly.GetEntryAssembly()!.Location);
        foreach (var a in WithoutNproc(Environment.GetCommandLineArgs().Skip(1))) psi.ArgumentList.Add(a);
        Console.Error.WriteLine($"launching: {mpirun} {string.Join(' ', psi.ArgumentList)}");
        using var p = Process.Start(psi) ?? throw new UserInputException($"could not start {mpirun}");
        p.WaitForExit();
        return p.ExitCode;
    }

    static IEnumerable<string> WithoutNproc(IEnumerable<string> args)
    {
        bool skipValue = false;
        foreach (var a in args)
        {
            if (skipValue) { skipValue = false; continue; }
            if (a == "--nproc") { skipValue = true; continue; }
            if (a.StartsWith("--nproc=", StringComparison.Ordinal) || a.StartsWith("--nproc:", StringComparison.Ordinal)) continue;
            yield return a;
        }
    }

    static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);
}
