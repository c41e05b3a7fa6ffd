using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FastBlockDiff.Bench;

/// <summary>
/// `bench cpu-compare-report RAW_DIR [--out-stem bench/results/DATE-DEVICE-cpu-compare]`: the merged table of the CPU
/// comparison (bench/run-cpu-compare.sh). Every JSON in RAW_DIR is one run of one side (the script alternates ours and
/// PyTorch, process by process); results of the same suite, shape and impl are reduced to the median of their runs'
/// medians, and each of ours is paired with each peer of the same suite and shape: ratio = peer median / our median
/// (&gt; 1 = ours faster). Figures are also given as a share of the FMA peak measured in the same run (`bench peak`,
/// the most threads), model FLOPs counted as <see cref="ModelFlops"/> for training, evaluation and sampling and as each
/// result's own tflops for attention and GEMM. load-before.txt, load-after.txt, timing.txt and failed.txt in RAW_DIR
/// (written by the script) go into the header.
/// </summary>
public static class CpuCompareReport
{
    sealed record Group(string Suite, string Shape, string Impl, List<BenchResult> Runs)
    {
        public double Ms => QuickTimer.Median(Runs.Select(r => r.Ms!.Value));
        public double? TokensPerS => Runs.Any(r => r.TokensPerS != null) ? QuickTimer.Median(Runs.Where(r => r.TokensPerS != null).Select(r => r.TokensPerS!.Value)) : null;
        public int? Nfe => Runs.FirstOrDefault(r => r.Nfe != null)?.Nfe;
        /// <summary>FLOPs of one call (the median over runs), or null where no convention applies.</summary>
        public double? Flops
        {
            get
            {
                var f = Runs.Select(r => ModelFlops.Of(r) ?? (r.Tflops is { } t ? t * 1e12 * r.Ms!.Value * 1e-3 : (double?)null)).Where(x => x != null).Select(x => x!.Value).ToList();
                return f.Count == 0 ? null : QuickTimer.Median(f);
            }
        }
        public double? Gflops => Flops is { } f ? f / (Ms * 1e-3) / 1e9 : null;
    }

    public static int Run(string[] args)
    {
        string? raw = null, stem = null;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--out-stem") stem = args[++i];
            else raw = args[i];
        }
        if (raw == null || !Directory.Exists(raw)) { Console.Error.WriteLine("cpu-compare-report: give the raw directory"); return 2; }
        var docs = new List<(string File, BenchDoc Doc)>();
        foreach (var f in Directory.GetFiles(raw, "*.json").Order())
        {
            try { docs.Add((f, Compare.Load(f))); }
            catch (Exception e) { Console.Error.WriteLine($"cpu-compare-report: skipping {Path.GetFileName(f)}: {e.Message}"); }
        }
        string Text(string name) => File.Exists(Path.Combine(raw, name)) ? File.ReadAllText(Path.Combine(raw, name)).Trim() : "";
        string device = docs.Select(d => d.Doc.Device).FirstOrDefault(d => d.Contains("cores")) ?? BenchEnv.Device();
        stem ??= Path.Combine(BenchEnv.RepoRoot(), "bench", "results", $"{DateTime.UtcNow:yyyy-MM-dd}-{BenchEnv.DeviceTag(device)}-cpu-compare");

        var groups = docs.SelectMany(d => d.Doc.Results).Where(r => r.Ms is > 0)
            .GroupBy(r => (r.Suite, Shape: r.ShapeKey(), r.Impl))
            .Select(g => new Group(g.Key.Suite, g.Key.Shape, g.Key.Impl, [.. g])).ToList();
        var peakGroups = groups.Where(g => g.Suite == "fma_peak").ToList();
        int Threads(Group g) => int.Parse(g.Runs[0].Shape["threads"]!.ToJsonString(), CultureInfo.InvariantCulture);
        double? peak = peakGroups.Count == 0 ? null : peakGroups.Where(g => Threads(g) == peakGroups.Max(Threads)).Max(g => g.Gflops);
        double? peak1 = peakGroups.Where(g => Threads(g) == 1).Select(g => g.Gflops).Max();
        string? Share(double? gflops) => gflops is { } x && peak is { } p ? (100 * x / p).ToString("F1", CultureInfo.InvariantCulture) + "%" : null;

        var rows = new List<(Group Ours, Group? Peer)>();
        foreach (var g in groups.Where(g => g.Suite != "fma_peak").GroupBy(g => (g.Suite, g.Shape)))
        {
            var ours = g.Where(x => x.Impl.StartsWith("fastblockdiff", StringComparison.Ordinal)).ToList();
            var peers = g.Where(x => !x.Impl.StartsWith("fastblockdiff", StringComparison.Ordinal)).ToList();
            if (ours.Count == 0) foreach (var p in peers) rows.Add((p, null));
            foreach (var o in ours)
            {
                if (peers.Count == 0) rows.Add((o, null));
                foreach (var p in peers) rows.Add((o, p));
            }
        }
        rows = [.. rows.OrderBy(r => SuiteOrder(r.Ours.Suite)).ThenBy(r => r.Ours.Suite, StringComparer.Ordinal)
            .ThenBy(r => r.Ours.Shape, StringComparer.Ordinal).ThenBy(r => r.Peer?.Impl, StringComparer.Ordinal)];

        var md = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        md.AppendLine($"# CPU comparison: FastBlockDiff vs PyTorch (and OpenBLAS) — {device}");
        md.AppendLine();
        md.AppendLine($"- commit(s): {string.Join(", ", docs.Select(d => d.Doc.Commit).Where(c => c.Length > 0).Distinct())}");
        md.AppendLine($"- software: {string.Join("; ", docs.SelectMany(d => d.Doc.Software).Where(kv => kv.Key is "dotnet" or "torch" or "openblas" or "simd").GroupBy(kv => kv.Key).Select(g => $"{g.Key} {g.First().Value}"))}");
        md.AppendLine($"- load before: `{Text("load-before.txt")}`; after: `{Text("load-after.txt")}`");
        if (Busy(Text("load-before.txt")) || Busy(Text("load-after.txt")))
            md.AppendLine($"- **the machine was busy** (1-minute load above its {Environment.ProcessorCount} cores): two-thread figures, PyTorch's above all, suffer most; take ratios from a quiet run");
        if (Text("timing.txt") is { Length: > 0 } timing) md.AppendLine($"- suite time: {timing.Replace("\n", "; ")}");
        if (Text("failed.txt") is { Length: > 0 } failed) md.AppendLine($"- **failed steps**: {failed.Replace("\n", "; ")}");
        md.AppendLine((peak is { } pk ? $"- FMA peak (bench peak): {pk.ToString("F1", inv)} GFLOP/s on all threads, {(peak1 is { } p1 ? p1.ToString("F1", inv) : "n/a")} on one; every share below is of the all-threads peak" : "- FMA peak: not measured in this run (no shares of it)"));
        md.AppendLine($"- ratio = median of the peer's per-run medians / median of ours (> 1 = ours faster); runs alternate ours and the peer process by process");
        md.AppendLine($"- FLOPs: {ModelFlops.Convention}; attention: allowed pairs only (bench/README.md); GEMM 2·M·N·K");
        md.AppendLine();
        md.AppendLine("| suite | shape | ours | ours ms (runs) | ours tokens/s | ours GFLOP/s (% peak) | peer | peer ms (runs) | peer tokens/s | peer GFLOP/s (% peak) | ratio |");
        md.AppendLine("|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|");
        string Num(double? x, string fmt) => x is { } v ? v.ToString(fmt, inv) : "";
        string Tps(double? x) => x is { } v ? v.ToString(v >= 100 ? "N0" : "G3", inv) : "";
        string Gf(Group? g) => g?.Gflops is { } x ? x.ToString("F1", inv) + (Share(x) is { } sh ? $" ({sh})" : "") : "";
        var json = new JsonArray();
        foreach (var (o, p) in rows)
        {
            double? ratio = p != null ? p.Ms / o.Ms : null;
            md.AppendLine($"| {o.Suite} | {ShortShape(o.Shape)} | {o.Impl} | {Num(o.Ms, "G5")} ({o.Runs.Count}) | {Tps(o.TokensPerS)} | {Gf(o)} | " +
                $"{p?.Impl ?? ""} | {(p != null ? $"{Num(p.Ms, "G5")} ({p.Runs.Count})" : "")} | {Tps(p?.TokensPerS)} | {Gf(p)} | {(ratio is { } r ? $"**{r.ToString(r >= 10 ? "F1" : "F2", inv)}**" : "")} |");
            json.Add(new JsonObject
            {
                ["suite"] = o.Suite, ["shape"] = o.Shape, ["ours"] = o.Impl, ["ours_ms"] = Math.Round(o.Ms, 4), ["ours_runs"] = o.Runs.Count,
                ["ours_tokens_per_s"] = o.TokensPerS, ["ours_gflops"] = Round(o.Gflops), ["ours_peak_share"] = Share1(o.Gflops, peak), ["ours_nfe"] = o.Nfe,
                ["peer"] = p?.Impl, ["peer_ms"] = p != null ? Math.Round(p.Ms, 4) : null, ["peer_runs"] = p?.Runs.Count,
                ["peer_tokens_per_s"] = p?.TokensPerS, ["peer_gflops"] = Round(p?.Gflops), ["peer_peak_share"] = Share1(p?.Gflops, peak), ["peer_nfe"] = p?.Nfe,
                ["ratio"] = ratio is { } rr ? Math.Round(rr, 3) : null,
            });
        }
        Scaling(md, groups, inv);
        foreach (var note in docs.SelectMany(d => d.Doc.Results).Where(r => r.Suite == "parity").Select(r => r.Note).Distinct())
            md.AppendLine().AppendLine($"Parity (our CPU engine vs the PyTorch peer on the same weights): {note}");

        var outDoc = new JsonObject
        {
            ["device"] = device, ["command"] = "bench cpu-compare-report " + string.Join(' ', args), ["date_utc"] = DateTime.UtcNow.ToString("O"),
            ["commits"] = new JsonArray([.. docs.Select(d => d.Doc.Commit).Distinct().Select(c => (JsonNode?)c)]),
            ["load_before"] = Text("load-before.txt"), ["load_after"] = Text("load-after.txt"), ["timing"] = Text("timing.txt"), ["failed"] = Text("failed.txt"),
            ["peak_gflops"] = Round(peak), ["peak_gflops_one_thread"] = Round(peak1), ["flops_convention"] = ModelFlops.Convention,
            ["rows"] = json,
            ["sources"] = new JsonArray([.. docs.Select(d => (JsonNode?)new JsonObject
            {
                ["file"] = Path.GetFileName(d.File), ["command"] = d.Doc.Command, ["commit"] = d.Doc.Commit, ["load"] = d.Doc.Load ?? "", ["date_utc"] = d.Doc.DateUtc,
            })]),
        };
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(stem))!);
        File.WriteAllText(stem + ".json", outDoc.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n");
        File.WriteAllText(stem + ".md", md.ToString());
        Console.WriteLine(md.ToString());
        Console.WriteLine($"wrote {stem}.json and {stem}.md");
        return 0;
    }

    /// <summary>Whether an `uptime` line's 1-minute load exceeds the core count.</summary>
    static bool Busy(string uptime)
    {
        int i = uptime.IndexOf("load average:", StringComparison.Ordinal);
        if (i < 0) return false;
        string first = uptime[(i + "load average:".Length)..].Split(',')[0].Trim();
        return double.TryParse(first, CultureInfo.InvariantCulture, out double load) && load > Environment.ProcessorCount;
    }

    static double? Round(double? x) => x is { } v ? Math.Round(v, 2) : null;
    static double? Share1(double? gflops, double? peak) => gflops is { } g && peak is { } p ? Math.Round(g / p, 4) : null;

    static int SuiteOrder(string suite) => suite switch
    {
        "train_step" => 0, "eval_forward" => 1, "sample" => 2, "gemm" => 4, "parity" => 9,
        _ when suite.StartsWith("attn", StringComparison.Ordinal) => 3, _ => 5,
    };

    static string ShortShape(string key) => key.Replace(" dtype=fp32", "").Replace("dtype=fp32 ", "").Replace("transA=false", "").Replace("transB=false", "").Replace("  ", " ").Trim();

    /// <summary>Tokens/s of the training step as L doubles, per model and impl (same width, layers, V, L').</summary>
    static void Scaling(StringBuilder md, List<Group> groups, CultureInfo inv)
    {
        string Key(Group g, string k) => g.Runs[0].Shape.TryGetValue(k, out var v) && v != null ? v.ToJsonString().Trim('"') : "";
        var series = groups.Where(g => g.Suite == "train_step" && g.TokensPerS != null)
            .GroupBy(g => (g.Impl, Model: $"{Key(g, "layers")}×{Key(g, "width")} V={Key(g, "V")} L'={Key(g, "Lp")}"))
            .Where(s => s.Select(g => Key(g, "L")).Distinct().Count() > 2).ToList();
        if (series.Count == 0) return;
        md.AppendLine().AppendLine("How training tokens/s change as L doubles (batch·L as configured; tokens/s relative to the previous L):").AppendLine();
        md.AppendLine("| impl | model | L | batch | tokens/s | × previous L | GFLOP/s |");
        md.AppendLine("|---|---|---:|---:|---:|---:|---:|");
        foreach (var s in series.OrderBy(s => s.Key.Model, StringComparer.Ordinal).ThenBy(s => s.Key.Impl, StringComparer.Ordinal))
        {
            double? prev = null;
            foreach (var g in s.OrderBy(g => int.Parse(Key(g, "L"), inv)))
            {
                double tps = g.TokensPerS!.Value;
                md.AppendLine($"| {s.Key.Impl} | {s.Key.Model} | {Key(g, "L")} | {Key(g, "B")} | {tps.ToString("N1", inv)} | {(prev is { } p ? (tps / p).ToString("F2", inv) : "")} | {(g.Gflops is { } x ? x.ToString("F1", inv) : "")} |");
                prev = tps;
            }
        }
    }
}
