using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using FastBlockDiff.Cli;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Checkpoints;

namespace FastBlockDiff.Tests;

/// <summary>
/// Tests that swap the process's Console (in-process CLI runs) or its environment run alone: nothing else may
/// write to the console or read XDG_CACHE_HOME meanwhile.
/// </summary>
[CollectionDefinition("Console", DisableParallelization = true)]
public sealed class ConsoleCollection;

/// <summary>Files the catalogue's bad inputs point at: a corpus, a trained checkpoint, broken copies of it, tokenizer files, special files.</summary>
public sealed class CliCatalogueFixture : IDisposable
{
    public string Root { get; } = Directory.CreateTempSubdirectory("fbd-catalogue-").FullName;
    public string Corpus => P("corpus.txt");
    public string Checkpoint => P("ckpt");
    public string Cache => P("cache");
    public bool HasFifo { get; }

    public string P(string name) => Path.Combine(Root, name);

    public CliCatalogueFixture()
    {
        CheckpointTests.WriteCorpus(Root);
        string? oldCache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        Environment.SetEnvironmentVariable("XDG_CACHE_HOME", Cache);
        try { TrainingRun.Run(CheckpointTests.TinyRequest(Corpus, Checkpoint, 2)); }
        finally { Environment.SetEnvironmentVariable("XDG_CACHE_HOME", oldCache); }

        // a token cache for the same corpus whose ids lie outside the byte vocabulary
        string cacheFile = Directory.GetFiles(Path.Combine(Cache, "fastblockdiff", "tokens"), "tokens-*.bin").Single();
        var bytes = File.ReadAllBytes(cacheFile);
        BitConverter.GetBytes(4_000_000).CopyTo(bytes, 16 + 4 * 5);
        string poisoned = Path.Combine(P("poisoned-cache"), "fastblockdiff", "tokens");
        Directory.CreateDirectory(poisoned);
        File.WriteAllBytes(Path.Combine(poisoned, Path.GetFileName(cacheFile)), bytes);

        string config = File.ReadAllText(Path.Combine(Checkpoint, ModelCheckpoint.ConfigFile));
        void BrokenCheckpoint(string name, Func<string, string> edit)
        {
            string dir = P(name);
            Directory.CreateDirectory(dir);
            File.Copy(Path.Combine(Checkpoint, ModelCheckpoint.WeightsFile), Path.Combine(dir, ModelCheckpoint.WeightsFile));
            File.WriteAllText(Path.Combine(dir, ModelCheckpoint.ConfigFile), edit(config));
        }
        BrokenCheckpoint("vocab-2e31", c => c.Replace("\"vocab_size\": 260", "\"vocab_size\": 2147483647"));
        BrokenCheckpoint("hidden-1e6", c => c.Replace("\"hidden_dim\": 16", "\"hidden_dim\": 1000000"));
        BrokenCheckpoint("blocks-1000", c => c.Replace("\"n_blocks\": 1", "\"n_blocks\": 1000"));
        BrokenCheckpoint("blocks-1e8", c => c.Replace("\"n_blocks\": 1", "\"n_blocks\": 100000000"));
        BrokenCheckpoint("length-1e7", c => c.Replace("\"model_length\": 16", "\"model_length\": 10000000"));
        BrokenCheckpoint("config-not-json", c => c[..(c.Length / 2)]);
        Directory.CreateDirectory(P("truncated"));
        File.Copy(Path.Combine(Checkpoint, ModelCheckpoint.ConfigFile), Path.Combine(P("truncated"), ModelCheckpoint.ConfigFile));
        var weights = File.ReadAllBytes(Path.Combine(Checkpoint, ModelCheckpoint.WeightsFile));
        File.WriteAllBytes(Path.Combine(P("truncated"), ModelCheckpoint.WeightsFile), weights[..(weights.Length / 2)]);

        File.WriteAllText(P("empty.txt"), "");
        File.WriteAllText(P("a-file"), "not a directory");
        Directory.CreateDirectory(P("no-txt"));
        File.WriteAllText(Path.Combine(P("no-txt"), "notes.md"), "text");
        File.WriteAllText(P("surrogate.jsonl"), "{\"text\": \"fine\"}\n{\"text\": \"bad \\ud800 half\"}\n");
        File.WriteAllText(P("broken.jsonl"), "{\"text\": \"fine\"}\n{\"text\": \n");
        File.WriteAllText(P("nofield.jsonl"), "{\"body\": \"x\"}\n");
        File.WriteAllText(P("number.jsonl"), "{\"text\": 5}\n");

        Directory.CreateDirectory(P("gpt2-4m"));
        File.WriteAllText(Path.Combine(P("gpt2-4m"), "vocab.json"), "{\"a\": 0, \"<|endoftext|>\": 4000000}");
        File.WriteAllText(Path.Combine(P("gpt2-4m"), "merges.txt"), "#version: 0.2\n");
        Directory.CreateDirectory(P("gpt2-huge-id"));
        File.WriteAllText(Path.Combine(P("gpt2-huge-id"), "vocab.json"), "{\"a\": 0, \"<|endoftext|>\": 99999999}");
        File.WriteAllText(Path.Combine(P("gpt2-huge-id"), "merges.txt"), "#version: 0.2\n");
        Directory.CreateDirectory(P("gpt2-not-json"));
        File.WriteAllText(Path.Combine(P("gpt2-not-json"), "vocab.json"), "{\"a\": 0,");
        File.WriteAllText(Path.Combine(P("gpt2-not-json"), "merges.txt"), "#version: 0.2\n");
        Directory.CreateDirectory(P("gpt2-array"));
        File.WriteAllText(Path.Combine(P("gpt2-array"), "vocab.json"), "[\"a\", \"b\"]");
        File.WriteAllText(Path.Combine(P("gpt2-array"), "merges.txt"), "#version: 0.2\n");
        File.WriteAllText(P("bad-base64.tiktoken"), "YQ== 0\n!!!! 1\n");
        File.WriteAllText(P("bad-rank.tiktoken"), "YQ== 0\nYg== x\n");
        File.WriteAllText(P("twice.tiktoken"), "YQ== 0\nYg== 0\n");
        File.WriteAllText(P("empty.tiktoken"), "\n\n");
        File.WriteAllText(P("huge-rank.tiktoken"), "YQ== 0\nYg== 2147483647\n");

        HasFifo = OperatingSystem.IsLinux() && MakeFifo(P("fifo.txt"));
        if (HasFifo)
        {
            Directory.CreateDirectory(P("folder-with-fifo"));
            File.WriteAllText(Path.Combine(P("folder-with-fifo"), "a.txt"), "some text");
            MakeFifo(Path.Combine(P("folder-with-fifo"), "b.txt"));
            Directory.CreateDirectory(P("fifo-config"));
            MakeFifo(Path.Combine(P("fifo-config"), ModelCheckpoint.ConfigFile));
        }
        if (OperatingSystem.IsLinux())
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            socket.Bind(new UnixDomainSocketEndPoint(P("socket.txt")));
        }
    }

    static bool MakeFifo(string path)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("mkfifo", [path]) { UseShellExecute = false })!;
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }

    public void Dispose() => Directory.Delete(Root, recursive: true);
}

/// <summary>
/// The catalogue of bad inputs (issue 14): every one must end with exit code 2, exactly one line on stderr that
/// starts with "error:" and names the problem, no stack trace, and no file created, changed or removed anywhere
/// under the fixture (corpus, checkpoint, caches, output directories). The CLI runs in-process through
/// <see cref="CliEntry.Run"/>.
/// </summary>
[Collection("Console")]
public sealed class CliCatalogueTests(CliCatalogueFixture f) : IClassFixture<CliCatalogueFixture>
{
    /// <summary>A bad input: the arguments (given the fixture), a text the error line must contain, and optionally XDG_CACHE_HOME.</summary>
    sealed record Case(Func<CliCatalogueFixture, string[]> Args, string Expected, Func<CliCatalogueFixture, string>? Cache = null, bool NeedsFifo = false, bool LinuxOnly = false);

    static string[] Train(CliCatalogueFixture f, params string[] extra) => TrainOn(f, f.Corpus, "new-out", extra);

    static string[] TrainOn(CliCatalogueFixture f, string data, string outName, params string[] extra)
    {
        var args = new List<string> { "train", "--data", data, "--model", "custom", "--hidden-dim", "16", "--layers", "1", "--heads", "2",
            "--seq-len", "16", "--block-size", "4", "--steps", "2", "--out", f.P(outName), "--backend", "cpu" };
        // a later occurrence of an option replaces the default above
        for (int i = 0; i < extra.Length; i++)
        {
            int at = args.IndexOf(extra[i]);
            if (at > 0 && extra[i].StartsWith("--") && i + 1 < extra.Length && !extra[i + 1].StartsWith("--")) { args[at + 1] = extra[i + 1]; i++; }
            else args.Add(extra[i]);
        }
        return [.. args];
    }

    static string[] Sample(CliCatalogueFixture f, params string[] extra) => ["sample", "--checkpoint", f.Checkpoint, "--max-tokens", "4", "--backend", "cpu", .. extra];
    static string[] SampleFrom(CliCatalogueFixture f, string dir) => ["sample", "--checkpoint", f.P(dir), "--max-tokens", "4", "--backend", "cpu"];
    static string[] Eval(CliCatalogueFixture f, params string[] extra) => ["eval", "--checkpoint", f.Checkpoint, "--data", f.Corpus, "--backend", "cpu", .. extra];
    static string[] Search(CliCatalogueFixture f, params string[] extra) => ["schedule-search", "--checkpoint", f.Checkpoint, "--data", f.Corpus, "--backend", "cpu", .. extra];
    static string[] Experiment(CliCatalogueFixture f, params string[] extra) => ["experiment", "--data", f.Corpus, "--out", f.P("exp-out"), "--backend", "cpu", "--steps", "1", .. extra];

    static readonly Dictionary<string, Case> Cases = new()
    {
        // train: every numeric option out of its range
        ["train --warmup -1"] = new(f => Train(f, "--warmup", "-1"), "--warmup"),
        ["train --noise-schedule spline"] = new(f => Train(f, "--noise-schedule", "spline"), "--noise-schedule must be one of"),
        ["train --eval-every -1"] = new(f => Train(f, "--eval-every", "-1"), "--eval-every"),
        ["train --checkpoint-every -1"] = new(f => Train(f, "--checkpoint-every", "-1"), "--checkpoint-every"),
        ["train --schedule-search-every -1"] = new(f => Train(f, "--schedule-search-every", "-1"), "--schedule-search-every"),
        ["train --weight-decay -1"] = new(f => Train(f, "--weight-decay", "-1"), "--weight-decay"),
        ["train --weight-decay NaN"] = new(f => Train(f, "--weight-decay", "NaN"), "--weight-decay"),
        ["train --grad-clip NaN"] = new(f => Train(f, "--grad-clip", "NaN"), "--grad-clip"),
        ["train --grad-clip -1"] = new(f => Train(f, "--grad-clip", "-1"), "--grad-clip"),
        ["train --ema NaN"] = new(f => Train(f, "--ema", "NaN"), "--ema"),
        ["train --ema 1"] = new(f => Train(f, "--ema", "1"), "--ema"),
        ["train --lr 0"] = new(f => Train(f, "--lr", "0"), "--lr"),
        ["train --lr NaN"] = new(f => Train(f, "--lr", "NaN"), "--lr"),
        ["train --lr Infinity"] = new(f => Train(f, "--lr", "Infinity"), "--lr"),
        ["train --steps 0"] = new(f => Train(f, "--steps", "0"), "--steps"),
        ["train --steps abc"] = new(f => Train(f, "--steps", "abc"), "--steps"),
        ["train --steps 99999999999"] = new(f => Train(f, "--steps", "99999999999"), "--steps"),
        ["train --batch-size 0"] = new(f => Train(f, "--batch-size", "0"), "--batch-size"),
        ["train --seq-len 2"] = new(f => Train(f, "--seq-len", "2", "--block-size", "1"), "--seq-len"),
        ["train --block-size 0"] = new(f => Train(f, "--block-size", "0"), "--block-size"),
        ["train --block-size 32 > --seq-len"] = new(f => Train(f, "--block-size", "32"), "--block-size"),
        ["train --seq-len 18 --block-size 4"] = new(f => Train(f, "--seq-len", "18"), "not divisible by block size"),
        ["train --lr-schedule linear"] = new(f => Train(f, "--lr-schedule", "linear"), "--lr-schedule"),
        ["train --dropout 1"] = new(f => Train(f, "--dropout", "1"), "--dropout"),
        ["train --dropout NaN"] = new(f => Train(f, "--dropout", "NaN"), "--dropout"),
        ["train --beta NaN"] = new(f => Train(f, "--beta", "NaN"), "β"),
        ["train --beta 0.6 --omega 0.2"] = new(f => Train(f, "--beta", "0.6", "--omega", "0.2"), "β"),
        ["train --hidden-dim 0"] = new(f => Train(f, "--hidden-dim", "0"), "--hidden-dim"),
        ["train --layers -1"] = new(f => Train(f, "--layers", "-1"), "--layers"),
        ["train --heads 0"] = new(f => Train(f, "--heads", "0"), "--heads"),
        ["train --hidden-dim 18 --heads 4"] = new(f => Train(f, "--hidden-dim", "18", "--heads", "4"), "n_heads"),
        ["train --model huge"] = new(f => Train(f, "--model", "huge"), "--model"),
        ["train --backend tpu"] = new(f => Train(f, "--backend", "tpu"), "unknown backend 'tpu'"),
        ["train --tokenizer nonsense"] = new(f => Train(f, "--tokenizer", "nonsense"), "unknown tokenizer"),
        ["train --no-such-option"] = new(f => Train(f, "--no-such-option"), "--no-such-option"),
        ["train without --data"] = new(f => ["train", "--out", f.P("new-out")], "--data"),
        // train: memory bombs, refused before anything is allocated
        ["train --hidden-dim 1000000"] = new(f => Train(f, "--hidden-dim", "1000000"), "parameters"),
        ["train --seq-len 10000000"] = new(f => Train(f, "--model", "tiny", "--seq-len", "10000000"), "parameters"),
        ["train --layers 3000"] = new(f => Train(f, "--hidden-dim", "256", "--heads", "4", "--layers", "3000"), "parameters"),
        ["train vocab.json naming id 4,000,000"] = new(f => Train(f, "--hidden-dim", "256", "--heads", "4", "--seq-len", "1024", "--batch-size", "64", "--tokenizer", "gpt2:" + f.P("gpt2-4m")), "parameters"),
        // tokenizer files
        ["train vocab.json id 99999999"] = new(f => Train(f, "--tokenizer", "gpt2:" + f.P("gpt2-huge-id")), "vocab.json"),
        ["train vocab.json not JSON"] = new(f => Train(f, "--tokenizer", "gpt2:" + f.P("gpt2-not-json")), "not valid JSON"),
        ["train vocab.json an array"] = new(f => Train(f, "--tokenizer", "gpt2:" + f.P("gpt2-array")), "JSON object"),
        ["train tiktoken bad base64"] = new(f => Train(f, "--tokenizer", f.P("bad-base64.tiktoken")), "base64"),
        ["train tiktoken bad rank"] = new(f => Train(f, "--tokenizer", f.P("bad-rank.tiktoken")), "line 2"),
        ["train tiktoken rank twice"] = new(f => Train(f, "--tokenizer", f.P("twice.tiktoken")), "appears twice"),
        ["train tiktoken only blank lines"] = new(f => Train(f, "--tokenizer", f.P("empty.tiktoken")), "holds no tokens"),
        ["train tiktoken rank 2^31-1"] = new(f => Train(f, "--tokenizer", f.P("huge-rank.tiktoken")), "rank 2147483647"),
        ["train tiktoken FIFO"] = new(f => Train(f, "--tokenizer", "tiktoken:" + f.P("fifo.txt")), "FIFO", NeedsFifo: true),
        // corpora that hang, never end or are not text
        ["train corpus FIFO"] = new(f => TrainOn(f, f.P("fifo.txt"), "new-out"), "FIFO", NeedsFifo: true),
        ["train corpus /dev/zero"] = new(f => TrainOn(f, "/dev/zero", "new-out"), "character device", LinuxOnly: true),
        ["train corpus socket"] = new(f => TrainOn(f, f.P("socket.txt"), "new-out"), "socket", LinuxOnly: true),
        ["train corpus folder holding a FIFO"] = new(f => TrainOn(f, f.P("folder-with-fifo"), "new-out"), "FIFO", NeedsFifo: true),
        ["train corpus missing"] = new(f => TrainOn(f, f.P("missing.txt"), "new-out"), "does not exist"),
        ["train corpus empty"] = new(f => TrainOn(f, f.P("empty.txt"), "new-out"), "empty.txt"),
        ["train corpus folder without *.txt"] = new(f => TrainOn(f, f.P("no-txt"), "new-out"), "no *.txt"),
        ["train JSONL lone surrogate"] = new(f => TrainOn(f, f.P("surrogate.jsonl"), "new-out"), "line 2"),
        ["train JSONL invalid"] = new(f => TrainOn(f, f.P("broken.jsonl"), "new-out"), "invalid JSON"),
        ["train JSONL without text"] = new(f => TrainOn(f, f.P("nofield.jsonl"), "new-out"), "no field"),
        ["train JSONL text a number"] = new(f => TrainOn(f, f.P("number.jsonl"), "new-out"), "not a string"),
        ["train poisoned token cache"] = new(f => Train(f), "token id 4000000", Cache: f => f.P("poisoned-cache")),
        // output locations
        ["train --out a file"] = new(f => TrainOn(f, f.Corpus, "a-file"), "is a file"),
        ["train --out under a file"] = new(f => TrainOn(f, f.Corpus, Path.Combine("a-file", "sub")), "is a file"),
        ["train --out /dev/full"] = new(f => Train(f, "--out", "/dev/full"), "/dev/full", LinuxOnly: true),
        ["train --out not writable (/proc)"] = new(f => Train(f, "--out", "/proc/fbd-out"), "not writable", LinuxOnly: true),
        ["train --out over a checkpoint"] = new(f => TrainOn(f, f.Corpus, "ckpt"), "already holds a checkpoint"),
        ["train --resume another shape"] = new(f => TrainOn(f, f.Corpus, "ckpt", "--resume", "--block-size", "2"), "another shape"),
        ["train --resume without state"] = new(f => TrainOn(f, f.Corpus, "no-txt", "--resume"), "holds no"),
        ["train token cache under a file"] = new(f => Train(f), "token cache", Cache: f => f.P("a-file")),
        // sample
        ["sample --max-tokens 0"] = new(f => Sample(f, "--max-tokens", "0"), "--max-tokens"),
        ["sample --top-p 0"] = new(f => Sample(f, "--top-p", "0"), "--top-p"),
        ["sample --top-p NaN"] = new(f => Sample(f, "--top-p", "NaN"), "--top-p"),
        ["sample --temperature -1"] = new(f => Sample(f, "--temperature", "-1"), "--temperature"),
        ["sample --temperature NaN"] = new(f => Sample(f, "--temperature", "NaN"), "--temperature"),
        ["sample --batch 0"] = new(f => Sample(f, "--batch", "0"), "--batch"),
        ["sample --batch 100000000"] = new(f => Sample(f, "--batch", "100000000"), "parameters"),
        ["sample --steps -1"] = new(f => Sample(f, "--steps", "-1"), "--steps"),
        ["sample --confidence NaN"] = new(f => Sample(f, "--confidence", "NaN"), "--confidence"),
        ["sample --entropy-stop -1"] = new(f => Sample(f, "--entropy-stop", "-1"), "--entropy-stop"),
        ["sample --sampler foo"] = new(f => Sample(f, "--sampler", "foo"), "unknown sampler"),
        ["sample --seed -1"] = new(f => Sample(f, "--seed", "-1"), "--seed"),
        ["sample checkpoint missing"] = new(f => SampleFrom(f, "missing"), "does not exist"),
        ["sample vocab_size 2^31-1"] = new(f => SampleFrom(f, "vocab-2e31"), "parameters"),
        ["sample hidden_dim 10^6"] = new(f => SampleFrom(f, "hidden-1e6"), "parameters"),
        ["sample n_blocks 1000"] = new(f => SampleFrom(f, "blocks-1000"), "missing tensor"),
        ["sample n_blocks 10^8"] = new(f => SampleFrom(f, "blocks-1e8"), "parameters"),
        ["sample model_length 10^7"] = new(f => SampleFrom(f, "length-1e7"), "parameters"),
        ["sample config.json not JSON"] = new(f => SampleFrom(f, "config-not-json"), "not valid JSON"),
        ["sample config.json a FIFO"] = new(f => SampleFrom(f, "fifo-config"), "FIFO", NeedsFifo: true),
        ["sample truncated weights"] = new(f => SampleFrom(f, "truncated"), "model.safetensors"),
        // eval and schedule-search
        ["eval --batch-size 0"] = new(f => Eval(f, "--batch-size", "0"), "--batch-size"),
        ["eval --noise-schedule spline"] = new(f => Eval(f, "--noise-schedule", "spline"), "--noise-schedule must be one of linear"),
        ["eval without --checkpoint"] = new(f => ["eval", "--data", f.Corpus, "--backend", "cpu"], "eval needs --checkpoint"),
        ["eval --gen-ppl without --scorer"] = new(f => ["eval", "--gen-ppl", "--samples", f.Corpus, "--backend", "cpu"], "--gen-ppl needs --scorer"),
        ["eval --gen-ppl --scorer L'=4"] = new(f => ["eval", "--gen-ppl", "--scorer", f.Checkpoint, "--samples", f.Corpus, "--backend", "cpu"], "needs an autoregressive (L' = 1) model"),
        ["eval --gen-ppl --samples missing"] = new(f => ["eval", "--gen-ppl", "--scorer", f.Checkpoint, "--samples", f.P("missing.jsonl"), "--backend", "cpu"], "missing.jsonl"),
        ["eval --max-sequences -1"] = new(f => Eval(f, "--max-sequences", "-1"), "--max-sequences"),
        ["eval --data FIFO"] = new(f => ["eval", "--checkpoint", f.Checkpoint, "--data", f.P("fifo.txt"), "--backend", "cpu"], "FIFO", NeedsFifo: true),
        ["eval --data /dev/zero"] = new(f => ["eval", "--checkpoint", f.Checkpoint, "--data", "/dev/zero", "--backend", "cpu"], "character device", LinuxOnly: true),
        ["schedule-search --max-sequences 0"] = new(f => Search(f, "--max-sequences", "0"), "--max-sequences"),
        ["schedule-search --batch-size -1"] = new(f => Search(f, "--batch-size", "-1"), "--batch-size"),
        // experiment, prepare, the root command
        ["experiment --lr NaN"] = new(f => Experiment(f, "--lr", "NaN"), "--lr"),
        ["experiment --block-sizes 4,x"] = new(f => Experiment(f, "--block-sizes", "4,x"), "--block-sizes"),
        ["experiment --block-sizes 99999999999"] = new(f => Experiment(f, "--block-sizes", "99999999999"), "--block-sizes"),
        ["experiment --preset huge"] = new(f => Experiment(f, "--preset", "huge"), "unknown preset"),
        ["experiment --hidden-dim 0"] = new(f => Experiment(f, "--hidden-dim", "0"), "--hidden-dim"),
        ["experiment --samples -1"] = new(f => Experiment(f, "--samples", "-1"), "--samples"),
        ["experiment --backend tpu"] = new(f => ["experiment", "--data", f.Corpus, "--out", f.P("exp-out"), "--backend", "tpu"], "unknown backend 'tpu'"),
        ["experiment --seq-len 2"] = new(f => Experiment(f, "--seq-len", "2"), "sequence length 2"),
        ["experiment --token-budget 0"] = new(f => Experiment(f, "--token-budget", "0"), "token budget"),
        ["experiment --ablation-block-size -1"] = new(f => Experiment(f, "--ablation-block-size", "-1"), "--ablation-block-size"),
        ["experiment --eval-sequences -1"] = new(f => Experiment(f, "--eval-sequences", "-1"), "--eval-sequences"),
        ["experiment --model huge"] = new(f => Experiment(f, "--model", "huge"), "--model"),
        ["experiment --seeds 1,1"] = new(f => Experiment(f, "--seeds", "1,1"), "--seeds must be distinct"),
        ["experiment --seeds x"] = new(f => Experiment(f, "--seeds", "x"), "--seeds 'x'"),
        ["experiment --pretrain-steps -1"] = new(f => Experiment(f, "--pretrain-steps", "-1"), "--pretrain-steps"),
        ["experiment --noise-schedule spline"] = new(f => Experiment(f, "--noise-schedule", "spline"), "noise_schedule must be one of"),
        ["experiment --config missing"] = new(f => Experiment(f, "--config", f.P("missing.json")), "missing.json"),
        ["experiment --config a FIFO"] = new(f => Experiment(f, "--config", f.P("fifo.txt")), "FIFO", NeedsFifo: true),
        ["experiment --data /dev/zero"] = new(f => ["experiment", "--data", "/dev/zero", "--out", f.P("exp-out"), "--backend", "cpu"], "character device", LinuxOnly: true),
        ["experiment --out a file"] = new(f => ["experiment", "--data", f.Corpus, "--out", f.P("a-file"), "--backend", "cpu"], "is a file"),
        ["prepare --brown missing"] = new(f => ["prepare", "--brown", f.P("missing-brown"), "--out", f.P("brown.txt")], "missing-brown"),
        ["unknown command"] = new(f => ["fly"], "fly"),
        ["--ilgpu-device tpu"] = new(f => ["info", "--ilgpu-device", "tpu"], "--ilgpu-device"),
    };

    public static TheoryData<string> Names => [.. Cases.Keys];

    [Fact]
    public void CatalogueHoldsAtLeastSixtyCases() => Assert.True(Cases.Count >= 60, $"{Cases.Count} cases");

    [Theory]
    [MemberData(nameof(Names))]
    public void BadInputIsOneCleanError(string name)
    {
        var c = Cases[name];
        if (c.NeedsFifo && !f.HasFifo) Assert.Skip("needs mkfifo (Linux)");
        if (c.LinuxOnly && !OperatingSystem.IsLinux()) Assert.Skip("needs Linux special files");
        var before = Snapshot(f.Root);
        string? oldCache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        Environment.SetEnvironmentVariable("XDG_CACHE_HOME", c.Cache?.Invoke(f) ?? f.Cache);
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code;
        string after;
        try
        {
            code = CliEntry.Run(c.Args(f), stdout, stderr);
            after = Snapshot(f.Root);
        }
        finally
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", oldCache);
            // a case that wrongly ran must not leave its output to the cases after it
            foreach (var dir in new[] { "new-out", "exp-out" })
                if (Directory.Exists(f.P(dir))) Directory.Delete(f.P(dir), recursive: true);
        }

        string err = stderr.ToString();
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(code == 2, $"exit code {code}, stderr:\n{err}");
        Assert.True(lines.Length == 1, $"expected one line on stderr, got:\n{err}");
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(c.Expected, lines[0]);
        Assert.DoesNotContain("   at ", err);
        Assert.DoesNotContain("Exception", err);
        Assert.Equal(before, after);
    }

    /// <summary>Every file and directory under root with its size and modification time.</summary>
    static string Snapshot(string root)
    {
        var sb = new StringBuilder();
        foreach (var e in new DirectoryInfo(root).EnumerateFileSystemInfos("*", SearchOption.AllDirectories).OrderBy(e => e.FullName, StringComparer.Ordinal))
            sb.Append(e.FullName).Append(' ').Append(e is FileInfo fi ? fi.Length : -1).Append(' ').Append(e is FileInfo ? e.LastWriteTimeUtc.Ticks : 0).Append('\n');
        return sb.ToString();
    }
}
