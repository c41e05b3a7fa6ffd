using System.Diagnostics;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Formats;

namespace FastBlockDiff.Tests;

/// <summary>The `fastblockdiff` executable on bad input: one clear line, non-zero exit, no stack trace, nothing half-written.</summary>
public sealed class CliTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("fbd-cli-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var psi = CliLauncher.StartInfo();
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["XDG_CACHE_HOME"] = Path.Combine(Path.GetTempPath(), "fbd-test-cache");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, err);
    }

    void AssertCleanFailure((int Code, string Out, string Err) r, string expected)
    {
        Assert.Equal(2, r.Code);
        Assert.Contains(expected, r.Err);
        Assert.DoesNotContain("   at ", r.Err);      // no stack trace
        Assert.DoesNotContain("Unhandled", r.Err);
    }

    string[] Train(string data, string outDir, params string[] extra) =>
        ["train", "--data", data, "--model", "custom", "--hidden-dim", "16", "--layers", "1", "--heads", "2", "--seq-len", "16", "--block-size", "4", "--steps", "2", "--out", outDir, "--backend", "cpu", .. extra];

    [Fact]
    public void MissingCorpus()
    {
        string outDir = Path.Combine(_dir, "out");
        AssertCleanFailure(Cli(Train(Path.Combine(_dir, "nope.txt"), outDir)), "does not exist");
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void EmptyCorpus()
    {
        string data = Path.Combine(_dir, "empty.txt");
        File.WriteAllText(data, "");
        string outDir = Path.Combine(_dir, "out");
        AssertCleanFailure(Cli(Train(data, outDir)), "empty.txt");
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void SequenceLengthNotDivisibleByBlockSize()
    {
        string data = CheckpointTests.WriteCorpus(_dir);
        AssertCleanFailure(Cli([.. Train(data, Path.Combine(_dir, "o")).Select(a => a == "16" ? "18" : a)]), "not divisible by block size");
    }

    [Theory]
    [InlineData("0.5", "0.5")]
    [InlineData("0.6", "0.2")]
    [InlineData("-0.1", "0.5")]
    [InlineData("0.2", "1.5")]
    public void BadClippedSchedule(string beta, string omega)
    {
        string data = CheckpointTests.WriteCorpus(_dir);
        string outDir = Path.Combine(_dir, "o");
        AssertCleanFailure(Cli(Train(data, outDir, "--beta", beta, "--omega", omega)), "0 ≤ β < ω ≤ 1");
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void UnknownTokenizerFile()
    {
        string data = CheckpointTests.WriteCorpus(_dir);
        AssertCleanFailure(Cli(Train(data, Path.Combine(_dir, "o"), "--tokenizer", Path.Combine(_dir, "missing.tiktoken"))), "missing.tiktoken");
    }

    [Fact]
    public void TrainThenSampleThenEvalAndRejectAnotherShape()
    {
        string data = CheckpointTests.WriteCorpus(_dir);
        string outDir = Path.Combine(_dir, "run");
        var train = Cli(Train(data, outDir));
        Assert.True(train.Code == 0, train.Err + train.Out);
        foreach (var f in new[] { "config.json", "model.safetensors", "training_state.safetensors", "train_log.csv", "loss.png" })
            Assert.True(File.Exists(Path.Combine(outDir, f)), $"missing {f}");
        Assert.Empty(Directory.GetFiles(outDir, "*.tmp*"));

        var sample = Cli("sample", "--checkpoint", outDir, "--max-tokens", "12", "--seed", "3", "--prompt", "the cat", "--backend", "cpu");
        Assert.True(sample.Code == 0, sample.Err);
        Assert.StartsWith("the cat", sample.Out);
        Assert.Contains("NFEs", sample.Err);
        Assert.Equal(sample.Out, Cli("sample", "--checkpoint", outDir, "--max-tokens", "12", "--seed", "3", "--prompt", "the cat", "--backend", "cpu").Out);

        var eval = Cli("eval", "--checkpoint", outDir, "--data", data, "--backend", "cpu");
        Assert.True(eval.Code == 0, eval.Err);
        Assert.Contains("perplexity", eval.Out);

        // resume with a different block size is another shape
        AssertCleanFailure(Cli([.. Train(data, outDir, "--resume").Select(a => a == "4" ? "2" : a)]), "another shape");

        var config = File.ReadAllText(Path.Combine(outDir, ModelCheckpoint.ConfigFile));
        AtomicFile.WriteAllText(Path.Combine(outDir, ModelCheckpoint.ConfigFile), config.Replace("\"hidden_dim\": 16", "\"hidden_dim\": 32"));
        AssertCleanFailure(Cli("sample", "--checkpoint", outDir, "--max-tokens", "4", "--backend", "cpu"), "changed after the checkpoint was written");
        File.Delete(Path.Combine(outDir, CheckpointSet.ManifestFile)); // now the files are read as they are
        AssertCleanFailure(Cli("sample", "--checkpoint", outDir, "--max-tokens", "4", "--backend", "cpu"), "another shape");
    }

    [Fact]
    public void TruncatedCheckpointIsRejected()
    {
        string data = CheckpointTests.WriteCorpus(_dir);
        string outDir = Path.Combine(_dir, "run");
        Assert.Equal(0, Cli(Train(data, outDir)).Code);
        string weights = Path.Combine(outDir, ModelCheckpoint.WeightsFile);
        var bytes = File.ReadAllBytes(weights);
        File.WriteAllBytes(weights, bytes[..(bytes.Length / 2)]);
        AssertCleanFailure(Cli("sample", "--checkpoint", outDir, "--max-tokens", "4", "--backend", "cpu"), "model.safetensors");
    }

    /// <summary>`fastblockdiff info &gt; /dev/full`: the write fails with ENOSPC; that is one line and exit code 2, not a crash.</summary>
    [Fact]
    public void StdoutOnAFullDevice()
    {
        if (!File.Exists("/dev/full")) Assert.Skip("needs /dev/full (Linux)");
        string dll = Path.Combine(AppContext.BaseDirectory, "fastblockdiff.dll");
        var psi = new ProcessStartInfo("bash") { RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("exec dotnet \"$0\" info > /dev/full");
        psi.ArgumentList.Add(dll);
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 2, $"exit code {p.ExitCode}: {err}");
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: cannot write to standard output", lines[0]);
    }

    [Fact]
    public void UnknownBackendAndMissingCheckpoint()
    {
        AssertCleanFailure(Cli("sample", "--checkpoint", Path.Combine(_dir, "none"), "--max-tokens", "4"), "does not exist");
        string data = CheckpointTests.WriteCorpus(_dir);
        AssertCleanFailure(Cli([.. Train(data, Path.Combine(_dir, "o")).Select(a => a == "cpu" ? "tpu" : a)]), "unknown backend 'tpu'");
    }
}
