namespace FastBlockDiff.Bench;

/// <summary>`--key value` and `--flag` options of the quick modes, with per-mode defaults.</summary>
public sealed class QuickOptions
{
    readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);
    readonly HashSet<string> _flags = [];
    static readonly HashSet<string> FlagNames = ["no-dense", "no-uncached", "quick", "split"];

    public QuickOptions(string[] args, Dictionary<string, string>? defaults = null)
    {
        if (defaults != null) foreach (var kv in defaults) _values[kv.Key] = kv.Value;
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--")) throw new ArgumentException($"unexpected argument '{args[i]}'");
            string key = args[i][2..];
            if (FlagNames.Contains(key)) { _flags.Add(key); continue; }
            if (i + 1 >= args.Length) throw new ArgumentException($"option --{key} needs a value");
            _values[key] = args[++i];
        }
    }

    public bool Flag(string name) => _flags.Contains(name);
    public string? Get(string key) => _values.TryGetValue(key, out var v) ? v : null;
    public string Str(string key, string fallback) => Get(key) ?? fallback;
    public int Int(string key, int fallback) => Get(key) is { } v ? int.Parse(v) : fallback;
    public int[] Ints(string key) => (Get(key) ?? throw new ArgumentException($"missing --{key}"))
        .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
    public string[] Backends => Str("backend", "cpu").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    /// <summary>The precision label; the CPU backend computes fp32 only.</summary>
    public string Dtype => Str("dtype", "fp32");
    public double Budget => double.Parse(Str("budget", "2"), System.Globalization.CultureInfo.InvariantCulture);
    public int MinRuns => Int("runs", 5);

    /// <summary>Writes to --out, or bench/results/raw/&lt;date&gt;-&lt;device&gt;-&lt;kind&gt;.json.</summary>
    public void WriteDoc(BenchDoc doc, string kind)
    {
        string path = Get("out") ?? Path.Combine(BenchEnv.RepoRoot(), "bench", "results", "raw",
            $"{DateTime.UtcNow:yyyy-MM-dd}-{BenchEnv.DeviceTag(doc.Device)}-{kind}.json");
        doc.Write(path);
    }

    /// <summary>Each backend named by --backend that starts (disposed after its iteration); the others are reported and skipped.</summary>
    public IEnumerable<FastBlockDiff.Kernels.IBackend> StartedBackends()
    {
        foreach (var name in Backends)
        {
            FastBlockDiff.Kernels.IBackend b;
            try { b = FastBlockDiff.Engine.BackendChoice.Create(name, Dtype).Backend; }   // --dtype is the backend's precision
            catch (Exception e) { Console.WriteLine($"backend {name}: unavailable ({e.Message}); skipped"); continue; }
            using (b) yield return b;
        }
    }
}
