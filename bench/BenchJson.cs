using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace FastBlockDiff.Bench;

/// <summary>
/// The one result schema shared by every quick mode here and every script in bench/flex/:
/// <code>
/// { "device": str, "software": {"dotnet": str, "os": str, "torch"?: str, ...}, "commit": str, "command": str,
///   "date_utc": str, "timing": str, "flops_convention": str,
///   "results": [ { "suite": str, "impl": str, "backend"?: str,
///                  "shape": {"B","H","L","Lp","d","dtype", ...extra keys such as "cache","M","N","K","V","params"},
///                  "ms": float, "tflops"?: float, "tokens_per_s"?: float, "nfe"?: int, "note"?: str } ] }
/// </code>
/// "ms" is the median wall time of one call. Comparisons (the compare mode) pair results with the same suite and
/// shape; an impl whose name starts with "fastblockdiff" is ours, any other is a peer.
/// </summary>
public sealed class BenchDoc
{
    [JsonPropertyName("device")] public string Device { get; set; } = "";
    [JsonPropertyName("software")] public Dictionary<string, string> Software { get; set; } = [];
    [JsonPropertyName("commit")] public string Commit { get; set; } = "";
    [JsonPropertyName("command")] public string Command { get; set; } = "";
    [JsonPropertyName("date_utc")] public string DateUtc { get; set; } = DateTime.UtcNow.ToString("O");
    [JsonPropertyName("timing")] public string? Timing { get; set; }
    [JsonPropertyName("flops_convention")] public string? FlopsConvention { get; set; } = BenchEnv.FlopsConvention;
    [JsonPropertyName("load")] public string? Load { get; set; }
    [JsonPropertyName("results")] public List<BenchResult> Results { get; set; } = [];
    /// <summary>Only in files written by compare: the documents merged and the ratios computed.</summary>
    [JsonPropertyName("sources")] public List<Dictionary<string, string>>? Sources { get; set; }
    [JsonPropertyName("comparisons")] public List<Comparison>? Comparisons { get; set; }

    static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Options) + "\n";

    public void Write(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, ToJson());
        File.Move(tmp, path, overwrite: true);
        Console.WriteLine($"wrote {path}");
    }

    public static BenchDoc Read(string path) =>
        JsonSerializer.Deserialize<BenchDoc>(File.ReadAllText(path), Options) ?? throw new InvalidDataException($"{path}: empty");

    /// <summary>A document describing this process (device, software, commit, command line).</summary>
    public static BenchDoc ForThisRun(string mode, string[] args, string timing) => new()
    {
        Device = BenchEnv.Device(),
        Software = BenchEnv.Software(),
        Commit = BenchEnv.Commit(),
        Command = "bench " + mode + (args.Length > 0 ? " " + string.Join(' ', args) : ""),
        Timing = timing,
        Load = BenchEnv.LoadAverage(),
    };
}

/// <summary>One ratio of the compare mode: peer time / our time (&gt; 1 = we are faster).</summary>
public sealed class Comparison
{
    [JsonPropertyName("suite")] public string Suite { get; set; } = "";
    [JsonPropertyName("shape")] public string Shape { get; set; } = "";
    [JsonPropertyName("ours")] public string Ours { get; set; } = "";
    [JsonPropertyName("peer")] public string Peer { get; set; } = "";
    [JsonPropertyName("ours_ms")] public double OursMs { get; set; }
    [JsonPropertyName("peer_ms")] public double PeerMs { get; set; }
    [JsonPropertyName("ratio")] public double Ratio { get; set; }
}

public sealed class BenchResult
{
    [JsonPropertyName("suite")] public string Suite { get; set; } = "";
    [JsonPropertyName("impl")] public string Impl { get; set; } = "";
    [JsonPropertyName("backend")] public string? Backend { get; set; }
    [JsonPropertyName("shape")] public Dictionary<string, JsonNode?> Shape { get; set; } = [];
    [JsonPropertyName("ms")] public double? Ms { get; set; }
    [JsonPropertyName("tflops")] public double? Tflops { get; set; }
    [JsonPropertyName("tokens_per_s")] public double? TokensPerS { get; set; }
    [JsonPropertyName("nfe")] public int? Nfe { get; set; }
    [JsonPropertyName("runs")] public int? Runs { get; set; }
    [JsonPropertyName("note")] public string? Note { get; set; }
    /// <summary>sample suite: where generation time went, {"model_ms", "sampler_ms", "sampler_share"} (sampler_share = sampler / (model + sampler)).</summary>
    [JsonPropertyName("split")] public Dictionary<string, double>? Split { get; set; }

    /// <summary>The canonical shape key used to pair results: sorted "k=v" pairs.</summary>
    public string ShapeKey() => string.Join(" ", Shape.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value?.ToJsonString().Trim('"')}"));

    public static Dictionary<string, JsonNode?> MakeShape(int b, int h, int l, int lp, int d, string dtype, params (string Key, object Value)[] extra)
    {
        var s = new Dictionary<string, JsonNode?>
        {
            ["B"] = b, ["H"] = h, ["L"] = l, ["Lp"] = lp, ["d"] = d, ["dtype"] = dtype,
        };
        foreach (var (k, v) in extra) s[k] = JsonValue.Create(v);
        return s;
    }
}

/// <summary>Where and what we run on, for the JSON header.</summary>
public static class BenchEnv
{
    public const string FlopsConvention =
        "attention FLOPs count only allowed (unmasked) query-key pairs P: forward 4·d·P (QKᵀ and PV, 2·d each), " +
        "backward 2.5× forward = 10·d·P (recomputed QKᵀ, dP = dO·Vᵀ, dV, dQ, dK), forward+backward 3.5× forward = 14·d·P; " +
        "the dense-masked peer is credited with the same useful FLOPs, so tflops ratios equal time ratios. " +
        "GEMM: 2·M·N·K. tokens_per_s: training = batch·L per step; sampling = generated tokens per second.";

    public static string Device()
    {
        string model = "unknown CPU";
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"));
            if (line != null) model = line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return $"{model}, {Environment.ProcessorCount} cores";
    }

    /// <summary>Short device tag for file names: "cpu" here, or the GPU name lower-cased.</summary>
    public static string DeviceTag(string device)
    {
        var s = new string(device.ToLowerInvariant().Select(c => char.IsLetterOrDigit(c) ? c : '-').ToArray());
        while (s.Contains("--")) s = s.Replace("--", "-");
        s = s.Trim('-');
        return s.Length > 40 ? s[..40].TrimEnd('-') : s;
    }

    public static Dictionary<string, string> Software()
    {
        var s = new Dictionary<string, string>
        {
            ["dotnet"] = RuntimeInformation.FrameworkDescription,
            ["os"] = RuntimeInformation.OSDescription,
            ["arch"] = RuntimeInformation.ProcessArchitecture.ToString(),
            ["simd"] = System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "AVX-512"
                : System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? "AVX2" : "128-bit",
            ["server_gc"] = System.Runtime.GCSettings.IsServerGC.ToString(),
        };
        if (OpenBlas.Available) s["openblas"] = OpenBlas.Config ?? OpenBlas.LibraryName ?? "";
        return s;
    }

    public static string LoadAverage()
    {
        try { return File.ReadAllText("/proc/loadavg").Trim(); }
        catch (IOException) { return "unknown"; }
    }

    public static string Commit()
    {
        var head = Git("rev-parse --short=12 HEAD") ?? Environment.GetEnvironmentVariable("FBD_COMMIT") ?? "unknown";
        var dirty = Git("status --porcelain --untracked-files=no -- . :!bench/results"); // result files written by runs do not count
        return string.IsNullOrEmpty(dirty) ? head : head + "+dirty";
    }

    public static string RepoRoot()
    {
        for (var d = new DirectoryInfo(Environment.CurrentDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "FastBlockDiff.sln"))) return d.FullName;
        return Git("rev-parse --show-toplevel") ?? Environment.CurrentDirectory;
    }

    public static string? Git(string arguments)
    {
        try
        {
            var psi = new ProcessStartInfo("git", arguments) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            using var p = Process.Start(psi)!;
            string s = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return p.ExitCode == 0 ? s : null;
        }
        catch (System.ComponentModel.Win32Exception) { return null; }
    }
}

/// <summary>Median-of-N wall-clock timing for the quick modes.</summary>
public static class QuickTimer
{
    /// <summary>
    /// Seconds per call: warm-up (≥ <paramref name="warmup"/> calls and ≥ <paramref name="warmupSeconds"/>), then
    /// ≥ <paramref name="minRuns"/> timed calls, continuing up to <paramref name="maxRuns"/> while under
    /// <paramref name="budgetSeconds"/>. Calls of several functions alternate so that they share the background load.
    /// </summary>
    public static List<double>[] Time(IReadOnlyList<Action> fs, int minRuns = 5, int maxRuns = 50, double budgetSeconds = 2,
        int warmup = 2, double warmupSeconds = 0.3)
    {
        foreach (var f in fs)
        {
            var w = Stopwatch.StartNew();
            for (int i = 0; i < warmup || w.Elapsed.TotalSeconds < warmupSeconds; i++) f();
        }
        var times = fs.Select(_ => new List<double>()).ToArray();
        var total = Stopwatch.StartNew();
        while (times[0].Count < minRuns || (total.Elapsed.TotalSeconds < budgetSeconds && times[0].Count < maxRuns))
        {
            for (int k = 0; k < fs.Count; k++)
            {
                long t0 = Stopwatch.GetTimestamp();
                fs[k]();
                times[k].Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
            }
        }
        return times;
    }

    public static double Median(IEnumerable<double> xs)
    {
        var t = xs.Order().ToList();
        return t.Count == 0 ? double.NaN : t.Count % 2 == 1 ? t[t.Count / 2] : 0.5 * (t[t.Count / 2 - 1] + t[t.Count / 2]);
    }
}
