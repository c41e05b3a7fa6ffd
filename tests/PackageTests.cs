using System.Diagnostics;

namespace FastBlockDiff.Tests;

/// <summary>
/// The NuGet packages: `dotnet pack` of the solution gives FastBlockDiff (+ its FastBlockDiff.Kernels and
/// FastBlockDiff.Interop dependencies) and the FastBlockDiff.Tool .NET tool; a console app restored from that
/// folder (and the local package cache, no network) writes a tiny checkpoint, loads it and generates text; the
/// tool installs from the folder and `fastblockdiff info` runs.
/// </summary>
public class PackageTests
{
    static string? DotnetOnPath() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet")).FirstOrDefault(File.Exists);

    [Fact]
    public void PackedLibraryAndToolRestoreFromALocalFeedAndRun()
    {
        var root = RepositoryPathTests.RepositoryRoot();
        Assert.SkipWhen(root is null, "the repository (FastBlockDiff.sln) is not above the test binaries (published build)");
        Assert.SkipWhen(DotnetOnPath() is null, "no `dotnet` SDK on PATH (self-contained publish): packing needs the SDK");
        // pack what this test run was built from (bin/Release or bin/Debug), without building again
        string config = AppContext.BaseDirectory.Replace('\\', '/').Contains("/Debug/") ? "Debug" : "Release";

        var tmp = Directory.CreateTempSubdirectory("fbd-pkg-").FullName;
        try
        {
            var feed = Path.Combine(tmp, "feed");
            Run(root!, 300, "pack", Path.Combine(root!, "FastBlockDiff.sln"), "-c", config, "--no-build", "-o", feed, "-nologo", "-v", "q");
            foreach (var id in new[] { "FastBlockDiff", "FastBlockDiff.Kernels", "FastBlockDiff.Interop", "FastBlockDiff.Tool" })
                Assert.True(File.Exists(Path.Combine(feed, $"{id}.0.1.0.nupkg")), $"{id}.0.1.0.nupkg not packed");
            Assert.False(File.Exists(Path.Combine(feed, "FastBlockDiff.Tests.0.1.0.nupkg")));

            // consumer: only the feed and the machine's package cache as sources; its own cache so no stale copy is used
            var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
                ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
            var app = Path.Combine(tmp, "app");
            Directory.CreateDirectory(app);
            File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <clear />
                    <add key="local" value="{feed}" />
                    <add key="cache" value="{cache}" />
                  </packageSources>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(app, "app.csproj"), """
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <OutputType>Exe</OutputType>
                    <TargetFramework>net10.0</TargetFramework>
                    <ImplicitUsings>enable</ImplicitUsings>
                    <Nullable>enable</Nullable>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="FastBlockDiff" Version="0.1.0" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(app, "Program.cs"), """
                using FastBlockDiff.Engine;
                using FastBlockDiff.Engine.Checkpoints;
                using FastBlockDiff.Engine.Model;
                using FastBlockDiff.Engine.Sampling;
                using FastBlockDiff.Kernels.Cpu;

                var dir = Path.Combine(AppContext.BaseDirectory, "tiny-checkpoint");
                var config = new ModelConfig
                {
                    VocabSize = 260, MaskId = 259, HiddenDim = 16, CondDim = 8, Layers = 1, Heads = 2,
                    ModelLength = 16, BlockSize = 4, Dropout = 0f, Tokenizer = "byte",
                };
                var net = new Denoiser(new CpuBackend(), config);
                net.Initialize(3, zeroInit: false);
                ModelCheckpoint.Save(dir, config, net.Params, net.DownloadWeights());

                using var model = BlockDiffusionModel.Load(dir, backend: "cpu");
                var options = new SamplingOptions { MaxTokens = 8, Seed = 1, StopOnEos = false };
                var (texts, result) = model.Sample("Hi", options);
                Console.WriteLine($"sample: {result.GeneratedTokens} tokens, {result.Nfe} NFEs: {System.Text.Json.JsonSerializer.Serialize(texts[0])}");
                var streamed = "";
                await foreach (var piece in model.GenerateAsync("Hi", options)) streamed += piece;
                Console.WriteLine($"stream: {System.Text.Json.JsonSerializer.Serialize(streamed)}");
                return result.GeneratedTokens > 0 ? 0 : 1;
                """);
            var env = new Dictionary<string, string> { ["NUGET_PACKAGES"] = Path.Combine(tmp, "packages") };
            var output = Run(app, 300, env, "run", "-c", "Release", "-nologo");
            Assert.Contains("sample: ", output);
            Assert.Contains("stream: ", output);
            TestContext.Current.TestOutputHelper?.WriteLine(output);

            // the tool: installed from the feed only, then `fastblockdiff info`
            var tools = Path.Combine(tmp, "tools");
            Run(app, 300, env, "tool", "install", "--tool-path", tools, "--configfile", Path.Combine(app, "nuget.config"),
                "--add-source", feed, "FastBlockDiff.Tool", "--version", "0.1.0");
            var exe = Path.Combine(tools, OperatingSystem.IsWindows() ? "fastblockdiff.exe" : "fastblockdiff");
            Assert.True(File.Exists(exe), $"{exe} not installed");
            var (code, text) = Exec(exe, tmp, 120, env, ["info"]);
            Assert.True(code == 0, $"fastblockdiff info exited {code}:\n{text}");
            Assert.False(string.IsNullOrWhiteSpace(text));
            TestContext.Current.TestOutputHelper?.WriteLine(text);
        }
        finally
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    static string Run(string cwd, int timeoutS, params string[] args) => Run(cwd, timeoutS, new Dictionary<string, string>(), args);

    static string Run(string cwd, int timeoutS, Dictionary<string, string> env, params string[] args)
    {
        var (code, text) = Exec("dotnet", cwd, timeoutS, env, args);
        Assert.True(code == 0, $"dotnet {string.Join(' ', args)} exited {code}:\n{text}");
        return text;
    }

    static (int Code, string Output) Exec(string file, string cwd, int timeoutS, Dictionary<string, string> env, string[] args)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["XDG_CACHE_HOME"] = Path.Combine(cwd, ".cache");
        foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutS * 1000))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            return (-1, $"timed out after {timeoutS} s\n{stdout.Result}\n{stderr.Result}");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr.Result);
    }
}
