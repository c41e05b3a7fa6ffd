using System.Diagnostics;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Text;
using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Tests;

/// <summary>
/// The public API under concurrency and cancellation: concurrent first use of a fresh model equals sequential use;
/// a consumer that stops reading stops the producer; cancellation is an OperationCanceledException within one step.
/// </summary>
public class ConcurrencyTests
{
    /// <summary>A byte-level tiny model (vocabulary 260), L = 16, L' = 4: fresh, nothing derived computed yet.</summary>
    internal static ModelConfig ByteConfig() => TinyModels.Config(length: 16, blockSize: 4, vocab: 260) with { MaskId = ByteTokenizer.Mask };
    internal static BlockDiffusionModel FreshByteModel(int seed = 5) => BlockDiffusionModel.FromDenoiser(TinyModels.Random(ByteConfig(), seed), new ByteTokenizer());

    // 40 tokens > L = 16: the rotary table grows during the run, concurrently with the other threads' reads
    static SamplingOptions Options(ulong seed) => new() { MaxTokens = 40, Seed = seed, StopOnEos = false, EntropyThreshold = 0 };

    [Fact]
    public void ConcurrentFirstUseOfAFreshDenoiserEqualsSequentialUse()
    {
        const int threads = 8, repetitions = 12;
        var config = TinyModels.Config(length: 16, blockSize: 4, vocab: 13);
        var reference = TinyModels.Random(config, seed: 21);
        var expected = Enumerable.Range(0, threads)
            .Select(i => new BlockSampler(reference, 9, 10).Generate([1, 2, 3], Options((ulong)i)).Tokens[0]).ToArray();
        for (int rep = 0; rep < repetitions; rep++)
        {
            var fresh = TinyModels.Random(config, seed: 21);   // conditioning not prepared, rotary table of L positions
            var start = new Barrier(threads);
            var got = new int[threads][];
            var workers = Enumerable.Range(0, threads).Select(i => new Thread(() =>
            {
                var sampler = new BlockSampler(fresh, 9, 10);
                start.SignalAndWait();
                got[i] = sampler.Generate([1, 2, 3], Options((ulong)i)).Tokens[0];
            })).ToArray();
            foreach (var w in workers) w.Start();
            foreach (var w in workers) w.Join();
            for (int i = 0; i < threads; i++) Assert.True(expected[i].SequenceEqual(got[i]), $"repetition {rep}, thread {i} differs from the sequential run");
            // and the model stays right for later calls
            Assert.Equal(expected[0], new BlockSampler(fresh, 9, 10).Generate([1, 2, 3], Options(0)).Tokens[0]);
        }
    }

    [Fact]
    public async Task ConcurrentGenerateAsyncOnAFreshModelEqualsSequentialCalls()
    {
        const int callers = 8;
        using var reference = FreshByteModel();
        var expected = Enumerable.Range(0, callers).Select(i => reference.Sample("ab", Options((ulong)i)).Texts[0]).ToArray();
        for (int rep = 0; rep < 4; rep++)
        {
            using var model = FreshByteModel();
            var texts = await Task.WhenAll(Enumerable.Range(0, callers).Select(i => Task.Run(async () =>
            {
                var sb = new System.Text.StringBuilder();
                await foreach (var piece in model.GenerateAsync("ab", Options((ulong)i))) sb.Append(piece);
                return sb.ToString();
            })));
            Assert.Equal(expected, texts);
        }
    }

    [Fact]
    public async Task AConsumerThatStopsReadingStopsTheProducer()
    {
        using var model = FreshByteModel();
        var endless = new SamplingOptions { MaxTokens = 1_000_000, StopOnEos = false, EntropyThreshold = 0, Seed = 3 };
        int pieces = 0;
        await foreach (var piece in model.GenerateAsync("x", endless))
            if (++pieces == 2) break;
        Assert.Equal(2, pieces);
        // leaving the loop waited for the producer to end, so the model is free at once: a stalled producer would
        // hold it and this call would be cancelled by its guard instead of finishing
        using var guard = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var (texts, _) = model.Sample("x", Options(1), cancel: guard.Token);
        Assert.False(string.IsNullOrEmpty(texts[0]));
    }

    [Fact]
    public async Task CancellingGenerateAsyncThrowsOperationCanceled()
    {
        using var model = FreshByteModel();
        using var cts = new CancellationTokenSource();
        var endless = new SamplingOptions { MaxTokens = 1_000_000, StopOnEos = false, EntropyThreshold = 0, Seed = 3 };
        int pieces = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in model.GenerateAsync("x", endless, cts.Token))
                if (++pieces == 1) cts.Cancel();
        });
        Assert.Equal(1, pieces);   // nothing arrives after the step at which it was cancelled
    }

    [Fact]
    public void SamplingWithAHugeStepCountIsCancelledWithinAStep()
    {
        var m = TinyModels.Random(TinyModels.Config(length: 16, blockSize: 4, vocab: 13), seed: 2);
        using var cts = new CancellationTokenSource();
        int blocks = 0;
        // DDPM: first-hitting (the default now) reveals one token per step and so ends a block in L' steps whatever T;
        // DDPM with a huge T reveals almost nothing per step and never ends by itself
        var opts = new SamplingOptions { MaxTokens = 8, StepsPerBlock = int.MaxValue, Kind = SamplerKind.Ddpm, StopOnEos = false, EntropyThreshold = 0 };
        cts.CancelAfter(TimeSpan.FromMilliseconds(200));   // the trigger only: the sampler never ends by itself
        Assert.ThrowsAny<OperationCanceledException>(() => new BlockSampler(m, 9, 10).Generate([1], opts, (_, _) => blocks++, cts.Token));
        Assert.Equal(0, blocks);   // the block was never committed half-masked
    }

    [Fact]
    public void SampleOnAModelCancelledBeforehandThrows()
    {
        using var model = FreshByteModel();
        Assert.ThrowsAny<OperationCanceledException>(() => model.Sample("x", Options(1), cancel: new CancellationToken(true)));
    }

    [Fact]
    public void EvaluationAndScheduleSearchStopWithinOneBatch()
    {
        var config = TinyModels.Config(length: 8, blockSize: 2, vocab: 13);
        var m = TinyModels.Random(config, seed: 4);
        var rows = Enumerable.Range(0, 6).Select(i => TinyModels.Tokens(8, 11, i)).ToList();
        Assert.ThrowsAny<OperationCanceledException>(() => new Evaluator(m).Evaluate(rows, 2, cancel: new CancellationToken(true)));

        using var cts = new CancellationTokenSource();
        var seen = new List<ScheduleCell>();
        Assert.ThrowsAny<OperationCanceledException>(() => ScheduleSearch.Run(m, rows, 2, onCell: c => { seen.Add(c); cts.Cancel(); }, cancel: cts.Token));
        Assert.Single(seen);   // the grid has 24 cells; it stopped after the one during which it was cancelled
    }

    [Fact]
    public void TrainingStopsAtTheStepDuringWhichItWasCancelled()
    {
        var m = TinyModels.Random(TinyModels.Config(length: 8, blockSize: 2, vocab: 13), seed: 6);
        var trainer = new Trainer(m, new TrainOptions { Steps = 1000, BatchSize = 2, WarmupSteps = 1, Seed = 1 }, new CountingRows(8, 12));
        using var cts = new CancellationTokenSource();
        trainer.Run(onStep: p => { if (p.Step == 3) cts.Cancel(); }, cancel: cts.Token);
        Assert.Equal(3, trainer.Step);
    }

    sealed class CountingRows(int length, int vocab) : IBatchSource
    {
        long _pos;
        public int SequenceLength => length;
        public void Next(Span<int> dst, int batch)
        {
            for (int i = 0; i < dst.Length; i++) dst[i] = (int)((_pos * 7 + i * 5) % vocab);
            _pos++;
        }
        public long[] SaveState() => [_pos];
        public void RestoreState(long[] state) => _pos = state[0];
    }

    [Fact]
    public void CtrlCStopsTheSampleCommandWithAHugeStepCount()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) Assert.Skip("sends SIGINT with kill(1), which needs a Unix system");
        string dir = Directory.CreateTempSubdirectory("fbd-ctrlc-").FullName;
        try
        {
            var config = ByteConfig();
            var m = TinyModels.Random(config, seed: 5);
            ModelCheckpoint.Save(dir, config, m.Params, m.DownloadWeights());
            // DDPM: with first-hitting (the default now) a huge --steps still ends each block in L' steps, so the run could end before Ctrl+C
            // A process started with SIGINT ignored (a background job of a shell without job control, nohup-like CI
            // launchers) passes that to its children, and .NET keeps an inherited SIG_IGN for SIGINT, as POSIX asks: the
            // child would then never see Ctrl+C. Start it the way a terminal does, with SIGINT at its default disposition.
            var psi = new ProcessStartInfo(DefaultSigIntLauncher ?? "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
            if (DefaultSigIntLauncher != null) { psi.ArgumentList.Add("--default-signal=INT"); psi.ArgumentList.Add("dotnet"); }
            foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "fastblockdiff.dll"), "sample", "--checkpoint", dir, "--backend", "cpu", "--steps", "2147483647", "--sampler", "ddpm" })
                psi.ArgumentList.Add(a);
            if (DefaultSigIntLauncher == null && SigIntIgnoredHere())
                Assert.Skip("this test process ignores SIGINT (started in the background without job control) and no `env --default-signal` is here to give the child a default Ctrl+C");
            using var p = Process.Start(psi)!;
            using var killOnFailure = new ProcessKiller(p);
            var stdout = p.StandardOutput.ReadToEndAsync();
            string first = p.StandardError.ReadLine() ?? "";   // "backend ...": the model is loaded and sampling starts
            Assert.StartsWith("backend", first);
            using (var kill = Process.Start("kill", ["-INT", p.Id.ToString()])) kill.WaitForExit();
            bool exited = p.WaitForExit(TimeSpan.FromSeconds(60));
            if (!exited) Assert.Fail($"sample --steps 2147483647 ignored Ctrl+C; the child's signal state: {SignalState(p.Id)}");
            string rest = p.StandardError.ReadToEnd();
            Assert.Equal(130, p.ExitCode);
            Assert.Contains("cancelled", rest);
            _ = stdout.Result;
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>`env` from GNU coreutils ≥ 8.31 can reset an inherited SIGINT disposition before exec; null where it cannot.</summary>
    static readonly string? DefaultSigIntLauncher = FindDefaultSigIntLauncher();

    static string? FindDefaultSigIntLauncher()
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/usr/bin/env")) return null;
        try
        {
            using var probe = Process.Start(new ProcessStartInfo("/usr/bin/env", ["--default-signal=INT", "true"]) { RedirectStandardError = true, UseShellExecute = false })!;
            probe.StandardError.ReadToEnd();
            probe.WaitForExit();
            return probe.ExitCode == 0 ? "/usr/bin/env" : null;
        }
        catch (System.ComponentModel.Win32Exception) { return null; }
    }

    /// <summary>Whether SIGINT is ignored in this process (bit 2 of SigIgn in /proc/self/status; false where unknown).</summary>
    static bool SigIntIgnoredHere()
    {
        try
        {
            string? line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:"));
            return line != null && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & 0x2) != 0;
        }
        catch (IOException) { return false; }
    }

    /// <summary>The signal lines of /proc/PID/status (Linux), for the failure message.</summary>
    static string SignalState(int pid)
    {
        try { return string.Join("; ", File.ReadAllLines($"/proc/{pid}/status").Where(l => l.StartsWith("State") || l.StartsWith("Sig") || l.StartsWith("ShdPnd"))); }
        catch (IOException) { return "unknown (no /proc)"; }
        catch (UnauthorizedAccessException) { return "unknown (no /proc)"; }
    }

    sealed class ProcessKiller(Process p) : IDisposable
    {
        public void Dispose() { try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } }
    }
}
