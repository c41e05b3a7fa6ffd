using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace FastBlockDiff.Engine.Experiments;

/// <summary>One trained model of the experiment and its validation numbers.</summary>
public sealed record ModelResult
{
    public required string Name { get; init; }
    /// <summary>ar, bd3 or mdlm.</summary>
    public required string Kind { get; init; }
    public required int BlockSize { get; init; }
    public ulong Seed { get; init; }
    /// <summary>The model whose weights this one started from (the MDLM pre-train of the same seed), or null: from scratch.</summary>
    public string? InitializedFrom { get; init; }
    /// <summary>The training schedule at the end of training (after the search, if any).</summary>
    public required string Schedule { get; init; }
    public float ScheduleMin { get; init; }
    public float ScheduleMax { get; init; }
    /// <summary>What <see cref="Nelbo"/> is: the exact AR NLL (t = 1) for the AR row, else the NELBO with t ~ U[0, 1].</summary>
    public required string Objective { get; init; }
    /// <summary>Validation nats per token.</summary>
    public double Nelbo { get; init; }
    public double Perplexity { get; init; }
    /// <summary>Bits per byte (byte tokenizer) or bits per token.</summary>
    public double BitsPerToken { get; init; }
    /// <summary>The BD3 bound with t ~ U[0, 1] (for the AR row: the L' = 1 diffusion bound of the same weights).</summary>
    public double NelboUniform { get; init; }
    /// <summary>The training estimator (its own schedule, with resampling) on held-out rows: mean and variance over sequences.</summary>
    public double TrainEstimatorMean { get; init; }
    public double TrainEstimatorVariance { get; init; }
    public int Steps { get; init; }
    public long TrainTokens { get; init; }
    public double TrainSeconds { get; init; }
    public double EvalSeconds { get; init; }
    public double FinalTrainLoss { get; init; }
    public long Parameters { get; init; }
    public int EvalSequences { get; init; }
    public IReadOnlyList<ScheduleCellResult>? ScheduleSearch { get; init; }
    public int? ScheduleSearchStep { get; init; }
    public string? CheckpointDirectory { get; init; }
}

public sealed record ScheduleCellResult(float Min, float Max, double Mean, double Variance);

/// <summary>A row of the schedule ablation (one L', schedules differ).</summary>
public sealed record AblationRow(string Name, string Model, float Min, float Max, double NelboMean, double NelboVariance, double Perplexity, int Sequences);

/// <summary>One reported model over the seeds (mean ± sample std; std 0 with one seed).</summary>
public sealed record SeedSummary(string Model, string Kind, int BlockSize, int Seeds, double Perplexity, double PerplexityStd,
    double BitsPerToken, double BitsPerTokenStd, double GenerativePerplexity, double GenerativePerplexityStd, int GenerativeSeeds);

/// <summary>One link of the paper's ordering: whether <see cref="Lower"/>'s mean perplexity is below <see cref="Higher"/>'s,
/// the gap (Higher − Lower; negative where the order fails) and the two stds summed, to judge it against.</summary>
public sealed record OrderingCheck(string Lower, string Higher, double LowerPerplexity, double HigherPerplexity, bool Holds, double Gap, double CombinedStd);

/// <summary>Generation statistics of one model.</summary>
public sealed record GenerationResult
{
    public required string Model { get; init; }
    public ulong Seed { get; init; }
    public int Samples { get; init; }
    public double MeanLength { get; init; }
    public double StdLength { get; init; }
    public int MinLength { get; init; }
    public int MaxLength { get; init; }
    public Dictionary<string, int> StopReasons { get; init; } = [];
    /// <summary>Denoiser calls of the batched run (all samples at once), and per generated token.</summary>
    public int Nfe { get; init; }
    public double NfePerToken { get; init; }
    public int GeneratedTokens { get; init; }
    public double TokensPerSecond { get; init; }
    public double Seconds { get; init; }
    /// <summary>The mean over samples of each sample's exp(NLL per token) under the experiment's AR model, EOS targets
    /// excluded (bd3lms's gen. PPL); null without an AR model.</summary>
    public double? GenerativePerplexity { get; init; }
    /// <summary>exp(ΣNLL / Σtokens) over all samples together, for comparison.</summary>
    public double? GenerativePerplexityPooled { get; init; }
    public string Example { get; init; } = "";
}

/// <summary>Everything an experiment produced; written as results.json and results.md.</summary>
public sealed record ExperimentResult
{
    public required ExperimentConfig Config { get; init; }
    public string Machine { get; init; } = "";
    public string Backend { get; init; } = "";
    public string Commit { get; init; } = "";
    public DateTime StartedUtc { get; init; }
    public DateTime FinishedUtc { get; set; }
    public double TotalSeconds { get; set; }
    public string DataSummary { get; init; } = "";
    public bool Complete { get; set; }
    public List<ModelResult> Models { get; init; } = [];
    public List<AblationRow> Ablation { get; init; } = [];
    public List<GenerationResult> Generation { get; init; } = [];
    /// <summary>Each reported model over the seeds: perplexity and gen. PPL as mean ± std.</summary>
    public List<SeedSummary> Summary { get; init; } = [];
    /// <summary>The paper's ordering AR &lt; BD3-LM L'=4 &lt; 8 &lt; … &lt; MDLM, pair by pair on the seed means.</summary>
    public List<OrderingCheck> Ordering { get; init; } = [];
    /// <summary>PNG files written next to the results (names relative to the output directory).</summary>
    public List<string> Plots { get; init; } = [];

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Recomputes <see cref="Summary"/> and <see cref="Ordering"/> from the models trained so far.</summary>
    public void Summarize()
    {
        Summary.Clear();
        Ordering.Clear();
        foreach (var group in Models.Where(m => m.Kind is "ar" or "bd3" or "mdlm" && !m.Name.StartsWith("ablation", StringComparison.Ordinal)).GroupBy(m => m.Name))
        {
            var first = group.First();
            var (ppl, pplStd) = MeanStd([.. group.Select(m => m.Perplexity)]);
            var (bits, bitsStd) = MeanStd([.. group.Select(m => m.BitsPerToken)]);
            var gen = Generation.Where(g => g.Model == group.Key && g.GenerativePerplexity is not null).Select(g => g.GenerativePerplexity!.Value).ToArray();
            var (genMean, genStd) = gen.Length > 0 ? MeanStd(gen) : (double.NaN, double.NaN);
            Summary.Add(new SeedSummary(group.Key, first.Kind, first.BlockSize, group.Count(), ppl, pplStd, bits, bitsStd, genMean, genStd, gen.Length));
        }
        // the paper's order: AR, then BD3-LM by growing L', then MDLM
        var chain = Summary.OrderBy(s => s.Kind switch { "ar" => 0, "bd3" => 1, _ => 2 }).ThenBy(s => s.BlockSize).ToList();
        for (int i = 0; i + 1 < chain.Count; i++)
        {
            var (a, b) = (chain[i], chain[i + 1]);
            Ordering.Add(new OrderingCheck(a.Model, b.Model, a.Perplexity, b.Perplexity, a.Perplexity < b.Perplexity,
                b.Perplexity - a.Perplexity, a.PerplexityStd + b.PerplexityStd));
        }
    }

    /// <summary>Mean and sample standard deviation (0 for one value).</summary>
    public static (double Mean, double Std) MeanStd(IReadOnlyList<double> x)
    {
        double mean = x.Average();
        return (mean, x.Count > 1 ? Math.Sqrt(x.Sum(v => (v - mean) * (v - mean)) / (x.Count - 1)) : 0);
    }

    public static ExperimentResult FromJson(string json) => JsonSerializer.Deserialize<ExperimentResult>(json, Json)!;

    static string F(double x, string fmt) => double.IsFinite(x) ? x.ToString(fmt, CultureInfo.InvariantCulture) : "n/a";

    public string ToMarkdown()
    {
        var c = Config;
        bool bytes = c.Tokenizer == "byte";
        string unit = bytes ? "bits/byte" : "bits/token";
        var sb = new StringBuilder();
        sb.AppendLine("# FastBlockDiff experiment");
        sb.AppendLine();
        sb.AppendLine($"- preset `{c.Preset}`, data `{c.DataPath}` ({DataSummary})");
        string dims = c.ModelSize == "custom" ? $"custom {c.Layers} layers × {c.HiddenDim} wide, {c.Heads} heads" : c.ModelSize;
        string recipe = c.PretrainSteps > 0
            ? $"the paper's recipe: one MDLM pre-trained {c.PretrainSteps} steps per seed, each diffusion model fine-tuned from it for {c.StepsPerModel} steps, AR from scratch for {c.PretrainSteps + c.StepsPerModel} steps"
            : $"{c.StepsPerModel} steps per model, each from scratch";
        sb.AppendLine($"- model {dims}, L = {c.SeqLen}, tokenizer {c.Tokenizer}, batch {c.BatchSize}, lr {c.LearningRate.ToString(CultureInfo.InvariantCulture)} ({c.LrSchedule}), noise schedule {c.NoiseSchedule}");
        sb.AppendLine($"- {recipe}; seeds {string.Join(", ", c.SeedList)}");
        sb.AppendLine($"- machine: {Machine}; backend {Backend}; commit {Commit}");
        sb.AppendLine($"- started {StartedUtc:yyyy-MM-dd HH:mm:ss} UTC, {F(TotalSeconds / 60, "F1")} min in all{(Complete ? "" : " — **incomplete run**")}");
        sb.AppendLine();
        bool seeds = c.SeedList.Count > 1;
        if (Summary.Count > 0)
        {
            sb.AppendLine($"## Summary over {c.SeedList.Count} seed{(seeds ? "s" : "")} (mean ± std)");
            sb.AppendLine();
            sb.AppendLine($"| model | L' | seeds | PPL (≤) | {unit} | gen. PPL (AR-scored) |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|");
            foreach (var s in Summary.OrderBy(s => s.Kind switch { "ar" => 0, "bd3" => 1, _ => 2 }).ThenBy(s => s.BlockSize))
                sb.AppendLine($"| {s.Model} | {s.BlockSize} | {s.Seeds} | {F(s.Perplexity, "F3")} ± {F(s.PerplexityStd, "F3")} | {F(s.BitsPerToken, "F4")} ± {F(s.BitsPerTokenStd, "F4")} | " +
                              $"{(s.GenerativeSeeds > 0 ? $"{F(s.GenerativePerplexity, "F2")} ± {F(s.GenerativePerplexityStd, "F2")}" : "n/a")} |");
            sb.AppendLine();
            if (Ordering.Count > 0)
            {
                bool all = Ordering.All(o => o.Holds);
                sb.AppendLine($"The paper's ordering {string.Join(" < ", Ordering.Select(o => o.Lower).Append(Ordering[^1].Higher))} " +
                              $"{(all ? "**holds**" : "**does not hold**")} on the seed means:");
                sb.AppendLine();
                foreach (var o in Ordering)
                    sb.AppendLine(o.Holds
                        ? $"- {o.Lower} < {o.Higher}: holds, {F(o.LowerPerplexity, "F3")} < {F(o.HigherPerplexity, "F3")} (gap {F(o.Gap, "F3")}; stds summed {F(o.CombinedStd, "F3")})"
                        : $"- {o.Lower} < {o.Higher}: **fails** by {F(-o.Gap, "F3")} ({F(o.LowerPerplexity, "F3")} vs {F(o.HigherPerplexity, "F3")}, {F(-o.Gap / o.HigherPerplexity * 100, "F1")}% of the latter; stds summed {F(o.CombinedStd, "F3")})");
                sb.AppendLine();
            }
        }
        sb.AppendLine("## Likelihood across block sizes");
        sb.AppendLine();
        sb.AppendLine($"Validation perplexity on {Models.FirstOrDefault()?.EvalSequences ?? 0} held-out rows. BD3-LM and MDLM: NELBO with t ~ U[0, 1] (an upper bound on the NLL). " +
                      "AR: the exact NLL (L' = 1, every token masked, t = 1); the column “U[0,1] bound” gives the same weights' L' = 1 diffusion bound for comparison.");
        sb.AppendLine();
        sb.AppendLine($"| model | seed | L' | training schedule | PPL (≤) | {unit} | U[0,1] bound PPL | train tokens | train time (s) | params |");
        sb.AppendLine("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
        foreach (var m in Models.Where(m => !m.Name.StartsWith("ablation", StringComparison.Ordinal)))
            sb.AppendLine($"| {m.Name}{(m.InitializedFrom != null ? " (fine-tuned)" : "")} | {m.Seed} | {m.BlockSize} | {m.Schedule} | {F(m.Perplexity, "F3")}{(m.Kind == "ar" ? " (exact NLL)" : "")} | {F(m.BitsPerToken, "F4")} | {F(Math.Exp(m.NelboUniform), "F3")} | {m.TrainTokens:N0} | {F(m.TrainSeconds, "F0")} | {m.Parameters:N0} |");
        sb.AppendLine();
        if (Plots.Contains("ppl_vs_block_size.png")) { sb.AppendLine("![perplexity against block size](ppl_vs_block_size.png)"); sb.AppendLine(); }

        var searched = Models.Where(m => m.ScheduleSearch is { Count: > 0 }).ToList();
        if (searched.Count > 0)
        {
            sb.AppendLine("Schedule search (lowest NELBO variance of the training estimator on held-out rows, after the linear warm-up):");
            sb.AppendLine();
            sb.AppendLine("| model | seed | at step | picked (β, ω) | its variance | variance under U[0,1] |");
            sb.AppendLine("|---|---:|---:|---|---:|---:|");
            foreach (var m in searched)
            {
                var best = m.ScheduleSearch!.MinBy(x => x.Variance)!;
                var lin = m.ScheduleSearch!.FirstOrDefault(x => x.Min == 0f && x.Max == 1f);
                sb.AppendLine($"| {m.Name} | {m.Seed} | {m.ScheduleSearchStep} | ({best.Min:0.00}, {best.Max:0.00}) | {F(best.Variance, "F4")} | {(lin is null ? "not in grid" : F(lin.Variance, "F4"))} |");
            }
            sb.AppendLine();
        }

        if (Ablation.Count > 0)
        {
            sb.AppendLine($"## Schedule ablation (L' = {c.AblationBlockSize})");
            sb.AppendLine();
            sb.AppendLine($"Each model trained on the same budget with its schedule. NELBO mean and variance: the training estimator (the model's own schedule, blocks re-masked into [β, ω]) over {Ablation[0].Sequences} held-out sequences (variance across sequences). PPL: the t ~ U[0, 1] bound.");
            sb.AppendLine();
            sb.AppendLine("| schedule | β | ω | NELBO mean | NELBO variance | PPL (≤) |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|");
            foreach (var a in Ablation)
                sb.AppendLine($"| {a.Name} | {a.Min:0.00} | {a.Max:0.00} | {F(a.NelboMean, "F4")} | {F(a.NelboVariance, "F4")} | {F(a.Perplexity, "F3")} |");
            sb.AppendLine();
            if (Plots.Contains("schedule_ablation.png")) { sb.AppendLine("![schedule ablation](schedule_ablation.png)"); sb.AppendLine(); }
        }

        if (Generation.Count > 0)
        {
            sb.AppendLine("## Generation");
            sb.AppendLine();
            sb.AppendLine($"{c.Samples} samples per model from BOS, up to {c.SampleMaxTokens} tokens, stopping at EOS or when the token entropy of the last {c.SampleEntropyWindow} tokens falls below {c.SampleEntropyThreshold.ToString(CultureInfo.InvariantCulture)} nats; " +
                          $"top-p {c.SampleTopP.ToString(CultureInfo.InvariantCulture)}, {(c.SampleStepsPerBlock > 0 ? c.SampleStepsPerBlock.ToString(CultureInfo.InvariantCulture) : "L'")} denoising steps per block, KV cache. " +
                          "NFEs: batched denoiser calls (all samples at once). Gen. PPL: the samples scored by this experiment's AR model (the stand-in for GPT-2 Large), as bd3lms computes it: each sample's perplexity with EOS left out, averaged over samples.");
            sb.AppendLine();
            sb.AppendLine("| model | seed | mean length | std | min | max | stops | NFEs | NFEs/token | tokens/s | gen. PPL |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|");
            foreach (var g in Generation)
                sb.AppendLine($"| {g.Model} | {g.Seed} | {F(g.MeanLength, "F1")} | {F(g.StdLength, "F1")} | {g.MinLength} | {g.MaxLength} | {string.Join(", ", g.StopReasons.Select(kv => $"{kv.Key} {kv.Value}"))} | {g.Nfe} | {F(g.NfePerToken, "F3")} | {F(g.TokensPerSecond, "F1")} | {(g.GenerativePerplexity is { } p ? F(p, "F2") : "n/a")} |");
            sb.AppendLine();
            sb.AppendLine($"First sample of each model{(seeds ? $", seed {c.SeedList[0]}" : "")} (truncated):");
            sb.AppendLine();
            foreach (var g in Generation.Where(g => g.Seed == c.SeedList[0]))
            {
                string ex = g.Example.Length > 200 ? g.Example[..200] + "…" : g.Example;
                sb.AppendLine($"- **{g.Model}**: `{ex.Replace("`", "'").Replace("\n", "⏎").Replace("\r", "")}`");
            }
            sb.AppendLine();
        }
        return sb.ToString();
    }
}
