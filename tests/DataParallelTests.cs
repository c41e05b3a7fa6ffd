using System.Diagnostics;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Distributed;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// `fastblockdiff train` under Open MPI's mpirun with 2 ranks on the CPU (1 thread each): the same trajectory as one
/// process with the same global batch, bucketed and overlapped all-reduce bit for bit the unbucketed one, resume
/// continuing it, and a killed or stopped rank ending the job with a message naming it. Skips where mpirun is absent
/// (.ci/install-mpi.sh installs it).
/// </summary>
public sealed class DataParallelTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("fbd-dp-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static string Corpus => Path.Combine(AppContext.BaseDirectory, "Fixtures", "brown", "ca01");

    static string? Mpirun() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, "mpirun")).FirstOrDefault(File.Exists);

    static string RequireMpirun() => Mpirun() ?? SkipNoMpi();

    static string SkipNoMpi()
    {
        Assert.Skip("mpirun not found: install Open MPI (bash .ci/install-mpi.sh) to run the data-parallel tests");
        return "";
    }

    /// <summary>A tiny model and a few steps: the arguments both the one-process and the 2-rank runs get.</summary>
    string[] Train(string outDir, int steps, params string[] extra) =>
        ["train", "--data", Corpus, "--model", "custom", "--hidden-dim", "32", "--layers", "2", "--heads", "2", "--seq-len", "16",
         "--block-size", "4", "--steps", steps.ToString(), "--batch-size", "4", "--lr", "1e-3", "--warmup", "1", "--out", outDir,
         "--backend", "cpu", "--eval-every", "0", .. extra];

    static ProcessStartInfo Start(string? mpirun, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(mpirun ?? "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (mpirun != null)
            foreach (var a in new[] { "-np", "2", "--oversubscribe", "--bind-to", "none", "dotnet" }) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "fastblockdiff.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["XDG_CACHE_HOME"] = Path.Combine(Path.GetTempPath(), "fbd-test-cache");
        psi.Environment["DOTNET_PROCESSOR_COUNT"] = "1";
        // CI runs as root, which Open MPI refuses unless told
        psi.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
        psi.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        return psi;
    }

    static (int Code, string Out, string Err) Run(string? mpirun, IEnumerable<string> args)
    {
        using var p = Process.Start(Start(mpirun, args))!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"training did not finish within 3 minutes:\n{stdout.Result}\n{stderr.Result}");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    static TrainingState Ok((int Code, string Out, string Err) r, string outDir)
    {
        Assert.True(r.Code == 0, $"exit {r.Code}\n{r.Out}\n{r.Err}");
        return TrainingCheckpoint.Load(outDir);
    }

    /// <summary>|a-b| ≤ tol·max|a| elementwise: fp32 sums in another order, not another computation.</summary>
    static void Close(float[] a, float[] b, double tol, string what)
    {
        Assert.Equal(a.Length, b.Length);
        double scale = a.Max(x => Math.Abs((double)x)), worst = 0;
        for (int i = 0; i < a.Length; i++) worst = Math.Max(worst, Math.Abs((double)a[i] - b[i]));
        Assert.True(worst <= tol * scale, $"{what}: max |difference| {worst:g3} exceeds {tol:g1} × max |value| {scale:g3}");
    }

    [Fact]
    public void TwoRanksFollowOneProcessWithTheSameGlobalBatch()
    {
        string mpirun = RequireMpirun();
        string one = Path.Combine(_dir, "one"), two = Path.Combine(_dir, "two");
        // dropout off: each rank hashes its own dropout seed, so masks (not gradients) would differ from one process
        var a = Ok(Run(null, Train(one, 3, "--dropout", "0")), one);
        // bucketed and overlapped: buckets of about 1,000 floats (whole tensors), started during the backward pass
        var r = Run(mpirun, Train(two, 3, "--dropout", "0", "--allreduce-bucket-mb", "0.004"));
        var b = Ok(r, two);
        Assert.Contains("data parallel: MPI", r.Out);
        Assert.Contains("buckets (--allreduce-bucket-mb 0.004), overlapped with the backward pass", r.Out);
        Assert.Equal(1, CountOccurrences(r.Out, "checkpoint saved")); // rank 0 alone writes and reports
        Assert.Equal(3, b.Step);
        Assert.Equal(a.Data, b.Data);
        Assert.Equal(a.Rng, b.Rng);
        // the Adam moments carry the gradients' scale (the update itself is nearly scale-free): a sum instead of an
        // average, or the same rows on both ranks, shows up here far beyond the tolerance
        Close(a.M, b.M, 1e-4, "first moment");
        Close(a.V, b.V, 1e-4, "second moment");
        Close(a.Weights, b.Weights, 1e-5, "weights");
        for (int i = 0; i < a.LossLog.Count; i++) Assert.Equal(a.LossLog[i].Loss, b.LossLog[i].Loss, 1e-5);
    }

    [Fact]
    public void BucketedOverlappedAllReduceEqualsTheUnbucketedOneBitForBit()
    {
        string mpirun = RequireMpirun();
        // two ranks: every element is a+b whichever way the buffer is cut, so bucketing may not change a single bit;
        // with gradient accumulation, since buckets start only in the last micro-batch's backward
        TrainingState Trained(string bucketMb)
        {
            string outDir = Path.Combine(_dir, $"buckets-{bucketMb}");
            return Ok(Run(mpirun, Train(outDir, 2, "--grad-accum", "2", "--allreduce-bucket-mb", bucketMb)), outDir);
        }
        var unbucketed = Trained("0");
        foreach (var mb in new[] { "1e-9", "1000" }) // one parameter tensor per bucket (many tiny ones); one bucket larger than the buffer
        {
            var bucketed = Trained(mb);
            Assert.True(unbucketed.Weights.AsSpan().SequenceEqual(bucketed.Weights), $"weights differ with --allreduce-bucket-mb {mb}");
            Assert.True(unbucketed.M.AsSpan().SequenceEqual(bucketed.M), $"first moments differ with --allreduce-bucket-mb {mb}");
            Assert.True(unbucketed.V.AsSpan().SequenceEqual(bucketed.V), $"second moments differ with --allreduce-bucket-mb {mb}");
            Assert.Equal(unbucketed.LossLog, bucketed.LossLog);
        }
    }

    [Fact]
    public void ResumeWithTwoRanksContinuesTheSameTrajectory()
    {
        string mpirun = RequireMpirun();
        string straight = Path.Combine(_dir, "straight"), split = Path.Combine(_dir, "split");
        var full = Ok(Run(mpirun, Train(straight, 4)), straight);
        // the first half through the --nproc launcher, the second through mpirun -np 2 directly
        var half = Ok(Run(null, Train(split, 2, "--nproc", "2")), split);
        Assert.Equal(2, half.Step);
        var resumed = Ok(Run(mpirun, Train(split, 4, "--resume")), split);
        Assert.Equal(4, resumed.Step);
        CheckpointTests.AssertSameTrajectory(full, resumed);
        Assert.NotEqual(half.Weights, resumed.Weights);
    }

    [Fact]
    public void KilledRankEndsTheJobNamingIt() => LoseRank1("-KILL", "rank 1");

    [Fact]
    // one tensor per bucket: rank 0's communication thread has buckets in flight during most of the step when rank 1 stops
    public void StoppedRankIsNamedWithinTheTimeout() => LoseRank1("-STOP", "within 3 s", "1e-9"); // before or inside a collective

    /// <summary>Starts a long 2-rank run, waits for its first checkpoint, signals rank 1, and expects the whole job to end.</summary>
    void LoseRank1(string signal, string expected, string bucketMb = "25")
    {
        string mpirun = RequireMpirun();
        string outDir = Path.Combine(_dir, "lost");
        using var p = Process.Start(Start(mpirun, Train(outDir, 1_000_000, "--checkpoint-every", "1", "--collective-timeout", "3", "--allreduce-bucket-mb", bucketMb)))!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            var clock = Stopwatch.StartNew();
            while (!TrainingCheckpoint.Exists(outDir) && !p.HasExited && clock.Elapsed < TimeSpan.FromMinutes(2)) Thread.Sleep(100);
            Assert.True(TrainingCheckpoint.Exists(outDir), $"no checkpoint within 2 minutes\n{(p.HasExited ? stdout.Result + stderr.Result : "")}");
            int rank1 = RankProcess(p.Id, 1);
            using (var kill = Process.Start("kill", [signal, rank1.ToString()])) kill.WaitForExit();
            // Open MPI ends the job when a rank dies; a stopped rank is named by its neighbour after --collective-timeout
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)), "the job did not end within 60 s of losing rank 1");
            p.WaitForExit();
            string all = stdout.Result + stderr.Result;
            Assert.True(p.ExitCode != 0 && all.Contains(expected) && all.Contains("rank 1"), $"exit {p.ExitCode}, expected '{expected}' naming rank 1:\n{all}");
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }

    /// <summary>The pid of rank <paramref name="rank"/> among the descendants of the mpirun process (its environment says which).</summary>
    static int RankProcess(int mpirun, int rank)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            var parents = new Dictionary<int, int>();
            foreach (var d in Directory.GetDirectories("/proc"))
                if (int.TryParse(Path.GetFileName(d), out int pid))
                    try
                    {
                        var stat = File.ReadAllText(Path.Combine(d, "stat"));
                        parents[pid] = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]);
                    }
                    catch (IOException) { }
                    catch (UnauthorizedAccessException) { }
            bool Descends(int pid) { for (int i = 0; i < 8 && parents.TryGetValue(pid, out int pp); i++, pid = pp) if (pp == mpirun) return true; return false; }
            foreach (var pid in parents.Keys.Where(Descends))
                try
                {
                    if (File.ReadAllText($"/proc/{pid}/environ").Split('\0').Contains($"OMPI_COMM_WORLD_RANK={rank}")) return pid;
                }
                catch (IOException) { }
                catch (UnauthorizedAccessException) { }
            Thread.Sleep(100);
        }
        Assert.Fail($"no process of rank {rank} under mpirun (pid {mpirun})");
        return -1;
    }

    static int CountOccurrences(string s, string what)
    {
        int n = 0;
        for (int i = s.IndexOf(what, StringComparison.Ordinal); i >= 0; i = s.IndexOf(what, i + 1, StringComparison.Ordinal)) n++;
        return n;
    }
}

/// <summary>The data-parallel pieces that need no launcher: clear errors instead of silent single-process runs, and the shard copy.</summary>
public sealed class DataParallelSetupTests
{
    static (int Code, string Out, string Err) Cli(IDictionary<string, string> env, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "fastblockdiff.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, err);
    }

    static string[] Train(string outDir, params string[] extra) =>
        ["train", "--data", Path.Combine(AppContext.BaseDirectory, "Fixtures", "brown", "ca01"), "--model", "custom", "--hidden-dim", "16",
         "--layers", "1", "--heads", "2", "--seq-len", "16", "--block-size", "4", "--steps", "2", "--out", outDir, "--backend", "cpu", .. extra];

    [Fact]
    public void RankOfAJobWithoutLibmpiFailsClearly()
    {
        string outDir = Path.Combine(Path.GetTempPath(), $"fbd-dp-nompi-{Guid.NewGuid():N}");
        // as if mpirun had started this process as rank 0 of 2, but the MPI library cannot be loaded
        var r = Cli(new Dictionary<string, string>
        {
            ["OMPI_COMM_WORLD_SIZE"] = "2", ["OMPI_COMM_WORLD_RANK"] = "0",
            ["FASTBLOCKDIFF_MPI_LIBRARY"] = Path.Combine(outDir, "libmpi.so.40"),
        }, Train(outDir));
        Assert.Equal(2, r.Code);
        Assert.Contains("one rank of a data-parallel job", r.Err);
        Assert.Contains("MPI unavailable", r.Err);
        Assert.DoesNotContain("   at ", r.Err);
        Assert.False(Directory.Exists(outDir), "nothing may be trained or written by a rank that could not join");
    }

    [Fact]
    public void NprocWithoutMpirunFailsClearly()
    {
        string outDir = Path.Combine(Path.GetTempPath(), $"fbd-dp-nompirun-{Guid.NewGuid():N}");
        var r = Cli(new Dictionary<string, string> { ["PATH"] = "/nonexistent" }, Train(outDir, "--nproc", "2"));
        Assert.Equal(2, r.Code);
        Assert.Contains("--nproc 2 needs Open MPI's mpirun", r.Err);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void InfoReportsMpiAndNccl()
    {
        var r = Cli(new Dictionary<string, string>(), "info");
        Assert.Equal(0, r.Code);
        Assert.Contains("\nmpi: ", r.Out);
        Assert.Contains("\nnccl: ", r.Out);
    }

    [Fact]
    public void ShardIsTheRankRowsOfTheGlobalBatch()
    {
        var global = new Bd3Batch(4, 8, 4);
        var clean = Enumerable.Range(0, 32).ToArray();
        global.Noise(clean, new NoiseSchedule(0f, 1f), 99, new Rng(7));
        var shard = new Bd3Batch(2, 8, 4);
        shard.CopyRows(global, 2);
        Assert.Equal(clean[16..], shard.Clean);
        Assert.Equal(global.Noisy[16..], shard.Noisy);
        Assert.Equal(global.Weights[16..], shard.Weights);
        Assert.Equal(global.Rates[4..], shard.Rates);
        Assert.Throws<ArgumentException>(() => shard.CopyRows(global, 3));
    }

    sealed class FakeWorld(int size) : ICollective
    {
        public int Rank => 0;
        public int Size => size;
        public string Description => "fake";
        public TimeSpan Timeout => TimeSpan.FromSeconds(1);
        public void AllReduce(IBackend backend, FloatView buffer, ReduceOp op) { }
        public void AllReduce(Span<double> values, ReduceOp op) { }
        public void Broadcast(Span<byte> data, int root) { }
        public void Barrier() { }
        public void Abort(string message, int exitCode) { }
        public void Dispose() { }
    }

    [Fact]
    public void NcclOnTheCpuBackendIsAnErrorNotAFallback()
    {
        using var cpu = new CpuBackend();
        var e = Assert.Throws<UserInputException>(() => DataParallel.ForBackend(new FakeWorld(2), cpu, "nccl"));
        Assert.Contains("--collective nccl needs the CUDA backend", e.Message);
        Assert.Null(DataParallel.ForBackend(new FakeWorld(2), cpu, "auto")); // MPI through host memory
        Assert.Throws<UserInputException>(() => DataParallel.ForBackend(new FakeWorld(2), cpu, "gloo"));
    }

    [Fact]
    public void GlobalBatchMustSplitEvenlyOverTheRanks()
    {
        using var cpu = new CpuBackend();
        var config = TinyModels.Config();
        var model = new Engine.Model.Denoiser(cpu, config);
        var data = new FixedBatches(config.ModelLength);
        var e = Assert.Throws<UserInputException>(() => new Trainer(model, new TrainOptions { BatchSize = 3 }, data, new FakeWorld(2)));
        Assert.Contains("not divisible by the 2 ranks", e.Message);
    }

    sealed class FixedBatches(int length) : IBatchSource
    {
        public int SequenceLength => length;
        public void Next(Span<int> dst, int batch) => dst.Clear();
        public long[] SaveState() => [];
        public void RestoreState(long[] state) { }
    }
}
