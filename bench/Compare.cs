using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace FastBlockDiff.Bench;

/// <summary>
/// `bench compare [--device NAME] [--out-dir bench/results] [--title TEXT] FILE_OR_DIR...`: reads result JSONs (the
/// shared schema, and gemm-quick's own files, converted), pairs every result of ours (impl "fastblockdiff*") with every
/// peer result of the same suite and shape, prints the table of ratios peer_ms / ours_ms (&gt; 1 = we are faster),
/// and writes &lt;out-dir&gt;/&lt;date&gt;-&lt;device&gt;.json (all results, sources and ratios), a .md table and a .png chart.
/// </summary>
public static class Compare
{
    public static int Run(string[] args)
    {
        string? device = null, outDir = null, title = null;
        var inputs = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--device": device = args[++i]; break;
                case "--out-dir": outDir = args[++i]; break;
                case "--title": title = args[++i]; break;
                default: inputs.Add(args[i]); break;
            }
        }
        var files = inputs.SelectMany(p => Directory.Exists(p) ? Directory.GetFiles(p, "*.json").Order() : File.Exists(p) ? [p] : Warn(p)).ToList();
        if (files.Count == 0) { Console.Error.WriteLine("compare: no result files given"); return 2; }

        var docs = new List<(string File, BenchDoc Doc)>();
        foreach (var f in files)
        {
            try { docs.Add((f, Load(f))); }
            catch (Exception e) { Console.Error.WriteLine($"compare: skipping {f}: {e.Message}"); }
        }
        var merged = new BenchDoc
        {
            Device = device ?? string.Join(" + ", docs.Select(d => d.Doc.Device).Distinct()),
            Commit = string.Join(" ", docs.Select(d => d.Doc.Commit).Where(c => c.Length > 0).Distinct()),
            Command = "bench compare " + string.Join(' ', args),
            Timing = "see each source",
            Sources = [.. docs.Select(d => new Dictionary<string, string>
            {
                ["file"] = Path.GetFileName(d.File), ["device"] = d.Doc.Device, ["commit"] = d.Doc.Commit,
                ["command"] = d.Doc.Command, ["date_utc"] = d.Doc.DateUtc, ["load"] = d.Doc.Load ?? "",
            })],
        };
        foreach (var (_, d) in docs)
        {
            foreach (var kv in d.Software) merged.Software.TryAdd(kv.Key, kv.Value);
            merged.Results.AddRange(d.Results);
        }

        var comps = new List<Comparison>();
        foreach (var g in merged.Results.Where(r => r.Ms is > 0).GroupBy(r => (r.Suite, Shape: r.ShapeKey())))
        {
            var ours = g.Where(r => r.Impl.StartsWith("fastblockdiff", StringComparison.Ordinal)).ToList();
            var peers = g.Where(r => !r.Impl.StartsWith("fastblockdiff", StringComparison.Ordinal)).ToList();
            foreach (var o in ours)
            foreach (var p in peers)
                comps.Add(new Comparison
                {
                    Suite = g.Key.Suite, Shape = g.Key.Shape, Ours = o.Impl, Peer = p.Impl,
                    OursMs = o.Ms!.Value, PeerMs = p.Ms!.Value, Ratio = Math.Round(p.Ms!.Value / o.Ms!.Value, 3),
                });
        }
        merged.Comparisons = comps;

        var table = Table(comps, merged.Results);
        Console.WriteLine(table);
        outDir ??= Path.Combine(BenchEnv.RepoRoot(), "bench", "results");
        Directory.CreateDirectory(outDir);
        string stem = Path.Combine(outDir, $"{DateTime.UtcNow:yyyy-MM-dd}-{BenchEnv.DeviceTag(device ?? docs[0].Doc.Device)}");
        merged.Write(stem + ".json");
        File.WriteAllText(stem + ".md", table);
        Console.WriteLine($"wrote {stem}.md");
        if (comps.Count > 0)
        {
            try { Chart(comps, stem + ".png", title ?? $"FastBlockDiff vs peers — {merged.Device}"); Console.WriteLine($"wrote {stem}.png"); }
            catch (Exception e) { Console.Error.WriteLine($"compare: chart not written: {e.Message}"); }
        }
        return 0;
    }

    static IEnumerable<string> Warn(string p) { Console.Error.WriteLine($"compare: {p} does not exist"); return []; }

    /// <summary>Reads a shared-schema file, or a gemm-quick file (results with m, n, k) converted to it.</summary>
    public static BenchDoc Load(string path)
    {
        var root = JsonNode.Parse(File.ReadAllText(path))?.AsObject() ?? throw new InvalidDataException("not a JSON object");
        var results = root["results"]?.AsArray();
        bool legacyGemm = results is { Count: > 0 } && results[0]?["m"] != null && results[0]?["suite"] == null;
        if (!legacyGemm) return BenchDoc.Read(path);
        var doc = new BenchDoc
        {
            Device = root["device"]?.GetValue<string>() ?? "",
            Commit = root["commit"]?.GetValue<string>() ?? "",
            Command = root["command"]?.GetValue<string>() ?? "gemm-quick",
            DateUtc = root["date_utc"]?.GetValue<string>() ?? "",
            Timing = root["timing"]?.GetValue<string>(),
            Load = root["loadavg_start"]?.GetValue<string>(),
            Software = new() { ["dotnet"] = root["runtime"]?.GetValue<string>() ?? "", ["openblas"] = root["openblas"]?.GetValue<string>() ?? "" },
        };
        foreach (var r in results!)
        {
            int m = r!["m"]!.GetValue<int>(), n = r["n"]!.GetValue<int>(), k = r["k"]!.GetValue<int>();
            bool ta = r["transA"]?.GetValue<bool>() ?? false, tb = r["transB"]?.GetValue<bool>() ?? false;
            Dictionary<string, JsonNode?> Shape() => new() { ["M"] = m, ["N"] = n, ["K"] = k, ["transA"] = ta, ["transB"] = tb, ["dtype"] = "fp32" };
            double flops = 2.0 * m * n * k;
            void Add(string impl, string key)
            {
                if (r[key] is not JsonValue v || !v.TryGetValue<double>(out var ms)) return;
                doc.Results.Add(new BenchResult { Suite = "gemm", Impl = impl, Backend = "cpu", Shape = Shape(), Ms = ms, Tflops = Math.Round(flops / (ms * 1e-3) / 1e12, 6), Runs = r["runs"]?.GetValue<int>() });
            }
            Add("fastblockdiff-cpu", "ours_ms");
            Add("openblas", "openblas_ms");
        }
        return doc;
    }

    static string ShortShape(string key) => key.Replace(" dtype=", " ").Replace("transA=false", "").Replace("transB=false", "").Replace("  ", " ").Trim();

    static string Table(List<Comparison> comps, List<BenchResult> all)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| suite | shape | ours | ours ms | peer | peer ms | ratio (peer/ours, > 1 = ours faster) |");
        sb.AppendLine("|---|---|---|---:|---|---:|---:|");
        foreach (var c in comps.OrderBy(c => c.Suite, StringComparer.Ordinal).ThenBy(c => c.Shape, StringComparer.Ordinal).ThenBy(c => c.Peer, StringComparer.Ordinal))
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture, $"| {c.Suite} | {ShortShape(c.Shape)} | {c.Ours} | {c.OursMs:G5} | {c.Peer} | {c.PeerMs:G5} | **{c.Ratio:F2}** |"));
        var unpaired = all.Where(r => !comps.Any(c => c.Suite == r.Suite && c.Shape == r.ShapeKey())).ToList();
        if (unpaired.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine("Results without a peer in these files:");
            sb.AppendLine();
            sb.AppendLine("| suite | shape | impl | ms | TFLOP/s | tokens/s | NFE |");
            sb.AppendLine("|---|---|---|---:|---:|---:|---:|");
            foreach (var r in unpaired.OrderBy(r => r.Suite, StringComparer.Ordinal).ThenBy(r => r.ShapeKey(), StringComparer.Ordinal))
                sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {r.Suite} | {ShortShape(r.ShapeKey())} | {r.Impl} | {(r.Ms is { } ms ? ms.ToString("G5", CultureInfo.InvariantCulture) : "")} | {(r.Tflops is { } t ? t.ToString("G4", CultureInfo.InvariantCulture) : "")} | {(r.TokensPerS is { } tp ? tp.ToString("G5", CultureInfo.InvariantCulture) : "")} | {r.Nfe?.ToString() ?? ""} |"));
        }
        return sb.ToString();
    }

    /// <summary>Horizontal bars of log2(ratio): right of 0 = ours faster. Labels carry the ratio itself.</summary>
    static void Chart(List<Comparison> comps, string path, string title)
    {
        var ordered = comps.OrderBy(c => c.Suite, StringComparer.Ordinal).ThenBy(c => c.Shape, StringComparer.Ordinal).ThenBy(c => c.Peer, StringComparer.Ordinal).ToList();
        var plot = new ScottPlot.Plot();
        var bars = new List<ScottPlot.Bar>();
        var positions = new double[ordered.Count];
        var labels = new string[ordered.Count];
        for (int i = 0; i < ordered.Count; i++)
        {
            var c = ordered[i];
            double pos = ordered.Count - 1 - i;
            double v = Math.Log2(c.Ratio);
            bars.Add(new ScottPlot.Bar
            {
                Position = pos, Value = v, ValueBase = 0,
                FillColor = c.Ratio >= 1 ? ScottPlot.Colors.SeaGreen : ScottPlot.Colors.IndianRed,
                Label = c.Ratio.ToString("F2", CultureInfo.InvariantCulture) + "x",
            });
            positions[i] = pos;
            labels[i] = $"{c.Suite} {ShortShape(c.Shape)} vs {c.Peer}";
        }
        var bp = plot.Add.Bars(bars);
        bp.Horizontal = true;
        bp.ValueLabelStyle.FontSize = 11;
        plot.Axes.Left.SetTicks(positions, labels);
        plot.Axes.Left.TickLabelStyle.FontSize = 10;
        plot.Add.VerticalLine(0, 1, ScottPlot.Colors.Black);
        plot.Title(title);
        plot.XLabel("log2(peer time / our time): right of 0 = ours faster");
        plot.Axes.Margins(left: 0.1, right: 0.1);
        int height = Math.Max(400, 60 + 22 * ordered.Count);
        string tmp = path + ".tmp.png";
        plot.SavePng(tmp, 1400, height);
        File.Move(tmp, path, overwrite: true);
    }
}
