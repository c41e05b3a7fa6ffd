using System.Diagnostics;
using System.Text.Json.Nodes;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// A checkpoint directory is one consistent set: the manifest written last commits a step's files together, readers
/// see the old set or the new one, never a mix, and what a crashed writer left is finished or removed by the next.
/// </summary>
public sealed class CheckpointSetTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("fbd-ckset-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static readonly string[] SetFiles = [ModelCheckpoint.ConfigFile, ModelCheckpoint.WeightsFile, TrainingCheckpoint.StateFile, "train_log.csv"];

    string Train(string name, int steps)
    {
        string corpus = Path.Combine(_dir, "corpus.txt");
        if (!File.Exists(corpus)) CheckpointTests.WriteCorpus(_dir);
        string run = Path.Combine(_dir, name);
        TrainingRun.Run(CheckpointTests.TinyRequest(corpus, run, steps));
        return run;
    }

    /// <summary>The pid of a process that has exited: temp files carrying it belong to nobody.</summary>
    static int DeadPid()
    {
        using var p = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        p.WaitForExit();
        return p.Id;
    }

    static string TempOf(string name, int pid) => $".{name}.{pid}.{Guid.NewGuid():N}.tmp";

    static JsonObject Manifest(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, CheckpointSet.ManifestFile)))!.AsObject();

    [Fact]
    public void ManifestNamesEveryFileOfTheStepWithSizeAndHash()
    {
        string run = Train("run", 3);
        var m = Manifest(run);
        Assert.Equal(3, (int)m["step"]!);
        var files = m["files"]!.AsObject();
        Assert.Equal(SetFiles.Order(), files.Select(f => f.Key).Order());
        foreach (var (name, entry) in files)
        {
            Assert.Equal(new FileInfo(Path.Combine(run, name)).Length, (long)entry!["bytes"]!);
            Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(run, name)))), (string)entry["sha256"]!);
        }
        Assert.Empty(Directory.GetFiles(run, ".*.tmp"));
    }

    [Fact]
    public void CrashBeforeTheCommitLeavesThePreviousSetAndTheNextRunRemovesItsTempFiles()
    {
        string run = Train("run", 2);
        var before = SetFiles.ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(run, f)));
        int dead = DeadPid();
        // what a writer killed while staging step 3 leaves: staged files, no new manifest
        foreach (var f in SetFiles) File.WriteAllBytes(Path.Combine(run, TempOf(f, dead)), [1, 2, 3]);
        string mine = Path.Combine(run, TempOf("config.json", Environment.ProcessId)); // a live writer's: kept
        File.WriteAllBytes(mine, [4]);

        Assert.Equal(2, TrainingCheckpoint.Load(run).Step);
        ModelCheckpoint.Load(run, new CpuBackend());
        CheckpointSet.Recover(run);
        Assert.Equal([mine], Directory.GetFiles(run, ".*.tmp"));
        foreach (var f in SetFiles) Assert.Equal(before[f], File.ReadAllBytes(Path.Combine(run, f)));
    }

    [Fact]
    public void CrashAfterTheCommitIsReadFromTheStagedFilesAndFinishedByTheNextRun()
    {
        string a = Train("a", 2), b = Train("b", 4);
        // the state a writer leaves when killed between the manifest rename and the file renames: step 4 committed
        // over directory a, its files still under their staged names
        var manifest = Manifest(b);
        foreach (var (name, entry) in manifest["files"]!.AsObject())
            File.Copy(Path.Combine(b, name), Path.Combine(a, (string)entry!["staged"]!));
        File.Copy(Path.Combine(b, CheckpointSet.ManifestFile), Path.Combine(a, CheckpointSet.ManifestFile), overwrite: true);

        var expected = TrainingCheckpoint.Load(b);
        var read = TrainingCheckpoint.Load(a);
        Assert.Equal(4, read.Step);
        Assert.Equal(expected.Weights, read.Weights);
        Assert.Equal(ModelCheckpoint.Load(b, new CpuBackend()).DownloadWeights(), ModelCheckpoint.Load(a, new CpuBackend()).DownloadWeights());

        CheckpointSet.Recover(a);
        Assert.Empty(Directory.GetFiles(a, ".*.tmp"));
        foreach (var f in SetFiles) Assert.Equal(File.ReadAllBytes(Path.Combine(b, f)), File.ReadAllBytes(Path.Combine(a, f)));
    }

    [Fact]
    public void FileChangedAfterTheCheckpointIsRefusedUntilTheManifestIsRemoved()
    {
        string run = Train("run", 2);
        string weights = Path.Combine(run, ModelCheckpoint.WeightsFile);
        var bytes = File.ReadAllBytes(weights);
        bytes[^1] ^= 0x40; // a flipped bit in the last weight
        File.WriteAllBytes(weights, bytes);
        var e = Assert.Throws<UserInputException>(() => BlockDiffusionModel.Load(run, backend: "cpu"));
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("changed after the checkpoint was written", e.Message);
        Assert.Contains("step 2", e.Message);

        File.Delete(Path.Combine(run, CheckpointSet.ManifestFile)); // the bd3lms layout: files read as they are
        using var model = BlockDiffusionModel.Load(run, backend: "cpu");
        Assert.Equal(2, TrainingCheckpoint.Load(run).Step);
    }

    [Fact]
    public void FileLeftOverFromAnotherSetIsNotPartOfTheCheckpoint()
    {
        string run = Train("run", 2);
        var c = ModelCheckpoint.LoadConfig(run);
        var m = ModelCheckpoint.Load(run, new CpuBackend());
        ModelCheckpoint.Save(run, c, m.Params, m.DownloadWeights()); // a model-only set over a training directory
        Assert.False(TrainingCheckpoint.Exists(run));
        var e = Assert.Throws<UserInputException>(() => TrainingCheckpoint.Load(run));
        Assert.Contains("not part of the checkpoint", e.Message);
        var req = CheckpointTests.TinyRequest(Path.Combine(_dir, "corpus.txt"), run, 4) with { Resume = true };
        Assert.Contains("holds no", Assert.Throws<UserInputException>(() => TrainingRun.Run(req)).Message);
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("""{"format": "fastblockdiff-checkpoint/1", "files": {}}""")]
    [InlineData("""{"format": "something-else", "files": {"config.json": {}}}""")]
    [InlineData("""{"format": "fastblockdiff-checkpoint/1", "step": -3, "files": {"config.json": {"bytes": 1, "sha256": "aa", "staged": ".config.json.1.0.tmp"}}}""")]
    [InlineData("""{"format": "fastblockdiff-checkpoint/1", "files": {"../config.json": {"bytes": 1, "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "staged": ".config.json.1.00000000000000000000000000000000.tmp"}}}""")]
    [InlineData("""{"format": "fastblockdiff-checkpoint/1", "files": {"config.json": {"bytes": 1, "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "staged": "../../etc/passwd"}}}""")]
    public void MalformedManifestIsRefusedAndNeverFollowed(string manifest)
    {
        string run = Train("run", 1);
        File.WriteAllText(Path.Combine(run, CheckpointSet.ManifestFile), manifest);
        var e = Assert.Throws<UserInputException>(() => ModelCheckpoint.LoadConfig(run));
        Assert.Contains(CheckpointSet.ManifestFile, e.Message);
        CheckpointSet.Recover(run); // must not throw or touch anything outside the directory
    }

    [Fact]
    public void AtomicFileTempNamesCarryTheirOwner()
    {
        string t = AtomicFile.TempName("model.safetensors");
        Assert.Equal(Environment.ProcessId, AtomicFile.TempOwner(t));
        Assert.Null(AtomicFile.TempOwner(".model.safetensors.tmp"));
        Assert.Null(AtomicFile.TempOwner("model.safetensors"));
        Assert.Null(AtomicFile.TempOwner($".x.-5.{Guid.NewGuid():N}.tmp"));
    }
}
