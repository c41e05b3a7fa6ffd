using System.Diagnostics;
using System.Text.Json.Nodes;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// `train --checkpoint-every 1` killed with SIGKILL at seeded random moments while it checkpoints: every directory
/// it leaves loads as one consistent set, `--resume` continues from it, the next run removes the dead run's temp
/// files, and the resumed-after-kills run ends bitwise where an uninterrupted one does.
/// </summary>
public sealed class CheckpointCrashTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("fbd-crash-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    const int Steps = 24, Kills = 4;

    string[] TrainArgs(string corpus, string outDir, bool resume, int checkpointEvery = 1) =>
    [
        "train", "--data", corpus, "--model", "custom", "--hidden-dim", "16", "--layers", "1", "--heads", "2", "--seq-len", "16",
        "--block-size", "4", "--steps", Steps.ToString(), "--batch-size", "2", "--warmup", "2", "--lr", "0.01",
        "--checkpoint-every", checkpointEvery.ToString(), "--out", outDir, "--backend", "cpu", .. resume ? new[] { "--resume" } : [],
    ];

    // its own token cache: no other test run writes it meanwhile
    Process Start(string[] args) => CliProcess.Start(Path.Combine(_dir, "cache"), args);

    static int? CommittedStep(string dir)
    {
        try { return (int?)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, CheckpointSet.ManifestFile)))?["step"]; }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException) { return null; }
    }

    static string[] TempFiles(string dir) => Directory.GetFiles(dir, ".*.tmp").Select(Path.GetFileName).ToArray()!;

    /// <summary>The directory holds one step's files: the model is the state's EMA, the config its schedule, the log its length.</summary>
    static int AssertConsistentSet(string dir)
    {
        var state = TrainingCheckpoint.Load(dir);
        var config = ModelCheckpoint.LoadConfig(dir);
        var weights = ModelCheckpoint.Load(dir, new CpuBackend()).DownloadWeights();
        Assert.Equal(state.Ema, weights);
        Assert.Equal((state.ScheduleMin, state.ScheduleMax), (config.ScheduleMin, config.ScheduleMax));
        // through the set: after a kill between the commit and the renames, the current log is still the staged file
        var (handle, _) = CheckpointSet.Open(dir, "train_log.csv") ?? throw new InvalidOperationException("no train_log.csv");
        using (var log = new StreamReader(new FileStream(handle, FileAccess.Read)))
            Assert.Equal(state.Step + 1, log.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        return state.Step;
    }

    [Fact]
    public void KilledWhileCheckpointingEverySurvivorLoadsAndResumes()
    {
        string corpus = CheckpointTests.WriteCorpus(_dir);
        string run = Path.Combine(_dir, "run"), straight = Path.Combine(_dir, "straight");
        var rng = new Random(14);
        int lastStep = 0;
        string[] leftBehind = [];
        for (int k = 0; k < Kills; k++)
        {
            using var p = Start(TrainArgs(corpus, run, resume: k > 0));
            // wait for a checkpoint newer than the last survivor, then kill at a random moment of the next ones
            while (!p.HasExited && (CommittedStep(run) ?? 0) <= lastStep) Thread.Sleep(2);
            Assert.False(p.HasExited, $"round {k}: the run ended (exit {(p.HasExited ? p.ExitCode : 0)}) before it was killed; raise Steps");
            Thread.Sleep(rng.Next(0, 60));
            p.Kill(entireProcessTree: true);
            p.WaitForExit();

            // the previous dead run's temp files were removed by this run
            Assert.Empty(leftBehind.Intersect(TempFiles(run)));
            // plus one for certain: what a kill inside AtomicFile.Write leaves
            File.WriteAllBytes(Path.Combine(run, $".model.safetensors.{p.Id}.{Guid.NewGuid():N}.tmp"), new byte[100]);
            leftBehind = TempFiles(run);

            int step = AssertConsistentSet(run);
            Assert.True(step > lastStep, $"round {k}: survivor at step {step}, previous at {lastStep}");
            lastStep = step;
        }

        using (var resumed = Start(TrainArgs(corpus, run, resume: true)))
        {
            resumed.WaitForExit();
            Assert.Equal(0, resumed.ExitCode);
        }
        Assert.Empty(TempFiles(run));
        Assert.Equal(Steps, AssertConsistentSet(run));

        // checkpoints do not change the trajectory, so the reference saves only at the end
        using (var p = Start(TrainArgs(corpus, straight, resume: false, checkpointEvery: 0))) { p.WaitForExit(); Assert.Equal(0, p.ExitCode); }
        var a = TrainingCheckpoint.Load(straight);
        var b = TrainingCheckpoint.Load(run);
        CheckpointTests.AssertSameTrajectory(a, b);
    }
}
