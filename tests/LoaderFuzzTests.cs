using System.Text;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Data;
using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Text;

namespace FastBlockDiff.Tests;

/// <summary>
/// Fuzzes every loader of user files with mutated valid files (<see cref="FileMutator"/>): the only exception a loader
/// may throw is <see cref="UserInputException"/>, it must not hang, and it must not allocate much more than the
/// file's size justifies. Seeds are fixed (iteration i of a target uses seed FUZZ_SEED + i); FUZZ_ITERATIONS sets
/// the iterations per target (default 150, a few seconds in all), FUZZ_SECONDS optionally caps each target's time.
/// A failure prints target, iteration, mutation and exception; FUZZ_FAILURES=DIR keeps the failing inputs,
/// FUZZ_REPORT=FILE appends one summary line per target, FUZZ_HANG_SECONDS (default 300) is when an iteration counts as hung.
/// </summary>
public sealed class LoaderFuzzTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("fbd-fuzz-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static int Iterations => int.TryParse(Environment.GetEnvironmentVariable("FUZZ_ITERATIONS"), out int n) && n > 0 ? n : 150;
    static int Seed => int.TryParse(Environment.GetEnvironmentVariable("FUZZ_SEED"), out int s) ? s : 0;
    /// <summary>FUZZ_SECONDS stops each target after that long (for long runs on a shared machine); unset, only the count bounds it.</summary>
    static int? Seconds => int.TryParse(Environment.GetEnvironmentVariable("FUZZ_SECONDS"), out int s) && s > 0 ? s : null;
    /// <summary>A loader that gives no answer for this long is reported as hanging (generous: the machine may be loaded).</summary>
    static readonly TimeSpan HangLimit = TimeSpan.FromSeconds(int.TryParse(Environment.GetEnvironmentVariable("FUZZ_HANG_SECONDS"), out int h) && h > 0 ? h : 300);

    /// <summary>
    /// Writes <paramref name="files"/> into a directory, then for every iteration mutates one of <paramref name="mutable"/>
    /// and calls <paramref name="load"/> on the directory.
    /// </summary>
    void Fuzz(string target, IReadOnlyDictionary<string, byte[]> files, string[] mutable, Action<string> load)
    {
        string dir = Path.Combine(_dir, target);
        Directory.CreateDirectory(dir);
        foreach (var (name, bytes) in files) File.WriteAllBytes(Path.Combine(dir, name), bytes);
        var donors = files.Values.ToList();
        var failures = new Dictionary<string, (int Count, string Example)>();
        int iterations = Iterations, current = -1;
        string currentMutation = "";
        byte[] currentBytes = [];
        long totalFailures = 0;

        var clock = System.Diagnostics.Stopwatch.StartNew();
        int done = 0;
        int? seconds = Seconds;
        void Loop()
        {
            for (int i = 0; i < iterations && !(seconds is int limit && clock.Elapsed.TotalSeconds > limit); i++, done++)
            {
                var rng = new Random(unchecked(StableHash(target) * 1_000_003 + Seed + i));
                string name = mutable[rng.Next(mutable.Length)];
                var (bytes, what) = FileMutator.Mutate(files[name], rng, donors);
                foreach (var m in mutable) File.WriteAllBytes(Path.Combine(dir, m), m == name ? bytes : files[m]);
                Volatile.Write(ref current, i);
                (currentMutation, currentBytes) = ($"{name}: {what}", bytes);
                long before = GC.GetAllocatedBytesForCurrentThread();
                string? kind = null, detail = null;
                try { load(dir); }
                catch (UserInputException) { }
                catch (Exception e)
                {
                    string frame = e.StackTrace?.Split('\n').FirstOrDefault(l => l.Contains("FastBlockDiff"))?.Trim() ?? "";
                    kind = $"{e.GetType().Name} {frame}";
                    detail = $"{e.GetType().Name}: {e.Message}\n{e.StackTrace}";
                }
                long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
                long justified = (16L << 20) + 64L * files.Values.Sum(f => (long)f.Length);
                if (kind == null && allocated > justified)
                    (kind, detail) = ("allocation", $"allocated {allocated:N0} bytes for inputs of {files.Values.Sum(f => f.Length):N0}");
                if (kind == null) continue;
                totalFailures++;
                string example = $"iteration {i} (FUZZ_SEED={Seed}), {name}: {what}\n{detail}";
                failures[kind] = failures.TryGetValue(kind, out var f) ? (f.Count + 1, f.Example) : (1, example);
                if (Environment.GetEnvironmentVariable("FUZZ_FAILURES") is { Length: > 0 } keep)
                {
                    Directory.CreateDirectory(keep);
                    File.WriteAllBytes(Path.Combine(keep, $"{target}-{Seed + i}-{name}"), bytes);
                }
            }
        }

        var thread = new Thread(Loop) { IsBackground = true, Name = $"fuzz {target}" };
        thread.Start();
        // a hang is an iteration that gives no answer for HangLimit (the loop as a whole may run as long as it is told)
        int seen = -1;
        var since = clock.Elapsed;
        while (!thread.Join(500))
        {
            int now = Volatile.Read(ref current);
            if (now != seen) (seen, since) = (now, clock.Elapsed);
            else if (clock.Elapsed - since > HangLimit) break;
        }
        bool finished = !thread.IsAlive;
        if (!finished && Environment.GetEnvironmentVariable("FUZZ_FAILURES") is { Length: > 0 } keepHung)
        {
            Directory.CreateDirectory(keepHung);
            File.WriteAllBytes(Path.Combine(keepHung, $"{target}-{Seed + Volatile.Read(ref current)}-hang"), currentBytes);
        }
        string summary = $"fuzz {target}: {Volatile.Read(ref done):N0} iterations (seeds {Seed}..) in {clock.Elapsed.TotalSeconds:F1} s, " +
            $"{totalFailures} failures" + string.Concat(failures.Select(kv => $"\n  {kv.Value.Count} × {kv.Key}"));
        TestContext.Current.TestOutputHelper?.WriteLine(summary);
        if (Environment.GetEnvironmentVariable("FUZZ_REPORT") is { Length: > 0 } report)
            File.AppendAllText(report, summary.Replace("\n", " |") + (finished ? "" : " | HANG") + "\n");
        Assert.True(finished, $"fuzz {target}: the loader hung (no answer after {HangLimit.TotalMinutes} min) at iteration {Volatile.Read(ref current)} (FUZZ_SEED={Seed}), {currentMutation}");
        Assert.True(failures.Count == 0, summary + string.Concat(failures.Select(kv => $"\n\nfirst {kv.Key}: {kv.Value.Example}")));
    }

    static int StableHash(string s) => s.Aggregate(17, (h, c) => unchecked(h * 31 + c));

    static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

    static void ReadEveryTensor(SafetensorsFile f)
    {
        foreach (var t in f.Tensors)
        {
            if (t.DType is SafetensorsDType.F32 or SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.F64) f.ReadFloat32(t.Name);
            else { f.ReadInt64(t.Name); if (t.DType != SafetensorsDType.U64) f.ReadInt32(t.Name); }
            f.ReadRaw(t.Name);
        }
    }

    [Fact]
    public void Safetensors()
    {
        string path = Path.Combine(_dir, "valid.safetensors");
        SafetensorsFile.Write(path,
        [
            SafetensorsTensorData.F32("backbone.w", [3, 4], Enumerable.Range(0, 12).Select(i => i * 0.5f).ToArray()),
            SafetensorsTensorData.I64("step", [2], new long[] { 7, -3 }),
            SafetensorsTensorData.I32("ids", [5], new[] { 1, 2, 3, 4, 5 }),
            SafetensorsTensorData.F32("empty", [0, 2], Array.Empty<float>()),
        ], new Dictionary<string, string> { ["step"] = "12", ["schedule_min"] = "0.25" });
        Fuzz("safetensors", new Dictionary<string, byte[]> { ["t.safetensors"] = File.ReadAllBytes(path) }, ["t.safetensors"], dir =>
        {
            using var f = SafetensorsFile.Read(Path.Combine(dir, "t.safetensors"));
            ReadEveryTensor(f);
        });
    }

    /// <summary>Files of a finished 2-step tiny run (manifest included).</summary>
    Dictionary<string, byte[]> TrainedRun()
    {
        string corpus = CheckpointTests.WriteCorpus(_dir);
        string run = Path.Combine(_dir, "run");
        if (!Directory.Exists(run)) TrainingRun.Run(CheckpointTests.TinyRequest(corpus, run, 2));
        return Directory.GetFiles(run).ToDictionary(Path.GetFileName, File.ReadAllBytes)!;
    }

    [Fact]
    public void ConfigAndWeights()
    {
        var files = TrainedRun().Where(f => f.Key is ModelCheckpoint.ConfigFile or ModelCheckpoint.WeightsFile).ToDictionary();
        Fuzz("checkpoint", files, [ModelCheckpoint.ConfigFile, ModelCheckpoint.ConfigFile, ModelCheckpoint.WeightsFile], dir =>
        {
            var config = ModelCheckpoint.LoadConfig(dir);
            ModelCheckpoint.LoadWeights(dir, config, ModelCheckpoint.Parameters(config, dir));
        });
    }

    [Fact]
    public void TrainingState()
    {
        var files = TrainedRun().Where(f => f.Key == TrainingCheckpoint.StateFile).ToDictionary();
        Fuzz("training-state", files, [TrainingCheckpoint.StateFile], dir => TrainingCheckpoint.Load(dir));
    }

    [Fact]
    public void CheckpointManifest()
    {
        var files = TrainedRun();
        Fuzz("manifest", files, [CheckpointSet.ManifestFile], dir =>
        {
            CheckpointSet.Recover(dir);
            var config = ModelCheckpoint.LoadConfig(dir);
            ModelCheckpoint.LoadWeights(dir, config, ModelCheckpoint.Parameters(config, dir));
            if (TrainingCheckpoint.Exists(dir)) TrainingCheckpoint.Load(dir);
        });
    }

    static void UseTokenizer(ITextTokenizer t)
    {
        var ids = t.Encode("hello world, héllo\n<|endoftext|> 12345");
        t.Decode(ids.Where(id => id >= 0 && id < t.ModelVocabSize).ToArray());
    }

    [Fact]
    public void Gpt2Tokenizer()
    {
        var vocab = new Dictionary<string, int>
        {
            ["h"] = 0, ["e"] = 1, ["l"] = 2, ["o"] = 3, ["Ġ"] = 4, ["w"] = 5, ["r"] = 6, ["d"] = 7,
            ["he"] = 8, ["ll"] = 9, ["hell"] = 10, ["hello"] = 11, ["Ġw"] = 12, ["or"] = 13,
            ["Ġwor"] = 14, ["ld"] = 15, ["Ġworld"] = 16, ["<|endoftext|>"] = 17,
        };
        var files = new Dictionary<string, byte[]>
        {
            ["vocab.json"] = Utf8(System.Text.Json.JsonSerializer.Serialize(vocab)),
            ["merges.txt"] = Utf8("#version: 0.2\nh e\nl l\nhe ll\nhell o\nĠ w\no r\nĠw or\nl d\nĠwor ld\n"),
        };
        Fuzz("gpt2-tokenizer", files, ["vocab.json", "merges.txt"], dir => UseTokenizer(TokenizerFactory.Load("gpt2:" + dir)));
    }

    [Fact]
    public void TiktokenTokenizer()
    {
        var sb = new StringBuilder();
        for (int b = 0; b < 256; b++) sb.Append(Convert.ToBase64String([(byte)b])).Append(' ').Append(b).Append('\n');
        string[] merged = ["he", "ll", "hell", "hello", " w", "or", " wor", "ld", " world"];
        for (int i = 0; i < merged.Length; i++) sb.Append(Convert.ToBase64String(Utf8(merged[i]))).Append(' ').Append(256 + i).Append('\n');
        var files = new Dictionary<string, byte[]> { ["tiny.tiktoken"] = Utf8(sb.ToString()) };
        Fuzz("tiktoken", files, ["tiny.tiktoken"], dir => UseTokenizer(TokenizerFactory.Load("tiktoken:" + Path.Combine(dir, "tiny.tiktoken"))));
    }

    [Fact]
    public void JsonlCorpus()
    {
        string jsonl = string.Join("\n",
            """{"text": "the cat sat on the mat"}""",
            """{"text": "caf\u00e9 \u2014 na\u00efve \ud83d\ude00 emoji", "id": 2}""",
            """{"id": 3, "text": "line one\nline two\t\"quoted\" \\ back"}""",
            "",
            """{"text": "", "meta": {"source": "web", "n": [1, 2.5, -3e4]}}""",
            """{"text": "日本語のテキスト"}""") + "\n";
        var files = new Dictionary<string, byte[]> { ["corpus.jsonl"] = Utf8(jsonl) };
        var tokenizer = new ByteTokenizer();
        Fuzz("jsonl", files, ["corpus.jsonl"], dir =>
        {
            foreach (var doc in Corpus.ReadDocuments(Path.Combine(dir, "corpus.jsonl")))
                tokenizer.Decode(tokenizer.Encode(doc));
        });
    }
}
