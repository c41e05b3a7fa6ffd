using System.Diagnostics;

namespace FastBlockDiff.Tests;

/// <summary>
/// Repository hygiene that a case-insensitive file system (Windows, macOS) depends on: no two paths may differ only
/// by letter case, or a clone there silently merges them. Reads `git ls-files` when git and a work tree are present,
/// else walks the tree above the test binary (skipping build outputs).
/// </summary>
public class RepositoryPathTests
{
    [Fact]
    public void NoTwoPathsDifferOnlyByCase()
    {
        var root = RepositoryRoot();
        if (root == null) Assert.Skip("repository not found above the test binary (published run)");
        var paths = TrackedPaths(root!);
        Assert.True(paths.Count > 10, $"found only {paths.Count} paths under {root}");
        var twins = CaseTwins(paths);
        Assert.True(twins.Count == 0, "paths that differ only by letter case (a Windows or macOS clone breaks): " +
            string.Join("; ", twins.Select(t => string.Join(" vs ", t))));
    }

    [Fact]
    public void CaseTwinCheckFindsFoldersAndFiles()
    {
        // the check itself: a folder twin is found through the files under it, a file twin directly
        var twins = CaseTwins(["kernels/cuda/a.cu", "kernels/Cuda/B.cs", "docs/Readme.md", "docs/README.md", "x/y.txt"]);
        Assert.Equal(2, twins.Count);
        Assert.Contains(twins, t => t.Contains("kernels/cuda") && t.Contains("kernels/Cuda"));
        Assert.Contains(twins, t => t.Contains("docs/Readme.md") && t.Contains("docs/README.md"));
        Assert.Empty(CaseTwins(["kernels/Cuda/Source/a.cu", "kernels/Cuda/CudaBackend.cs"]));
    }

    /// <summary>Groups of distinct spellings of the same case-folded path or folder prefix.</summary>
    internal static List<string[]> CaseTwins(IEnumerable<string> files)
    {
        var all = new HashSet<string>(StringComparer.Ordinal);
        foreach (var f in files)
        {
            var parts = f.Split('/');
            for (int i = 1; i <= parts.Length; i++) all.Add(string.Join('/', parts.Take(i)));
        }
        return [.. all.GroupBy(p => p, StringComparer.OrdinalIgnoreCase)
            .Select(g => g.Distinct(StringComparer.Ordinal).OrderBy(p => p, StringComparer.Ordinal).ToArray())
            .Where(g => g.Length > 1)
            // a folder twin shows once, not again for every file under it
            .Where(g => !g.Any(p => p.Contains('/') && HasTwinParent(p, all)))];
    }

    static bool HasTwinParent(string path, HashSet<string> all)
    {
        var parent = path[..path.LastIndexOf('/')];
        return all.Count(p => string.Equals(p, parent, StringComparison.OrdinalIgnoreCase)) > 1;
    }

    internal static string? RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "FastBlockDiff.sln"))) dir = dir.Parent;
        return dir?.FullName;
    }

    static List<string> TrackedPaths(string root)
    {
        if (Directory.Exists(Path.Combine(root, ".git")) || File.Exists(Path.Combine(root, ".git")))
        {
            try
            {
                var psi = new ProcessStartInfo("git", ["-C", root, "ls-files", "-z"]) { RedirectStandardOutput = true, RedirectStandardError = true };
                using var p = Process.Start(psi)!;
                var text = p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                if (p.ExitCode == 0) return [.. text.Split('\0', StringSplitOptions.RemoveEmptyEntries)];
            }
            catch (System.ComponentModel.Win32Exception) { /* no git: walk the tree */ }
        }
        string[] skip = ["bin", "obj", "out", ".git", "node_modules"];
        return [.. Directory.EnumerateFiles(root, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 })
            .Select(f => Path.GetRelativePath(root, f).Replace('\\', '/'))
            .Where(f => !f.Split('/').Any(part => skip.Contains(part)))];
    }
}
