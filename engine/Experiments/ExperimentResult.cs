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

/// <summary>Generation statistics of one model.</summary>
public sealed record GenerationResult
{
    public required string Model { get; init; }
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
    /// <summary>PNG files written next to the results (names relative to the output directory).</summary>
    public List<string> Plots { get; init; } = [];

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);
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
        sb.AppendLine($"- model {dims}, L = {c.SeqLen}, tokenizer {c.Tokenizer}, batch {c.BatchSize}, {c.StepsPerModel} steps per model, lr {c.LearningRate.ToString(CultureInfo.InvariantCulture)} ({c.LrSchedule}), seed {c.Seed}");
        sb.AppendLine($"- machine: {Machine}; backend {Backend}; commit {Commit}");
        sb.AppendLine($"- started {StartedUtc:yyyy-MM-dd HH:mm:ss} UTC, {F(TotalSeconds / 60, "F1")} min in all{(Complete ? "" : " — **incomplete run**")}");
        sb.AppendLine();
        sb.AppendLine("## Likelihood across block sizes");
        sb.AppendLine();
        sb.AppendLine($"Validation perplexity on {Models.FirstOrDefault()?.EvalSequences ?? 0} held-out rows. BD3-LM and MDLM: NELBO with t ~ U[0, 1] (an upper bound on the NLL). " +
                      "AR: the exact NLL (L' = 1, every token masked, t = 1); the column “U[0,1] bound” gives the same weights' L' = 1 diffusion bound for comparison.");
        sb.AppendLine();
        sb.AppendLine($"| model | L' | training schedule | PPL (≤) | {unit} | U[0,1] bound PPL | train tokens | train time (s) | params |");
        sb.AppendLine("|---|---:|---|---:|---:|---:|---:|---:|---:|");
        foreach (var m in Models.Where(m => !m.Name.StartsWith("ablation", StringComparison.Ordinal)))
            sb.AppendLine($"| {m.Name} | {m.BlockSize} | {m.Schedule} | {F(m.Perplexity, "F3")}{(m.Kind == "ar" ? " (exact NLL)" : "")} | {F(m.BitsPerToken, "F4")} | {F(Math.Exp(m.NelboUniform), "F3")} | {m.TrainTokens:N0} | {F(m.TrainSeconds, "F0")} | {m.Parameters:N0} |");
        sb.AppendLine();
        if (Plots.Contains("ppl_vs_block_size.png")) { sb.AppendLine("![perplexity against block size](ppl_vs_block_size.png)"); sb.AppendLine(); }

        var searched = Models.Where(m => m.ScheduleSearch is { Count: > 0 }).ToList();
        if (searched.Count > 0)
        {
            sb.AppendLine("Schedule search (lowest NELBO variance of the training estimator on held-out rows, after the linear warm-up):");
            sb.AppendLine();
            sb.AppendLine("| model | at step | picked (β, ω) | its variance | variance under U[0,1] |");
            sb.AppendLine("|---|---:|---|---:|---:|");
            foreach (var m in searched)
            {
                var best = m.ScheduleSearch!.MinBy(x => x.Variance)!;
                var lin = m.ScheduleSearch!.FirstOrDefault(x => x.Min == 0f && x.Max == 1f);
                sb.AppendLine($"| {m.Name} | {m.ScheduleSearchStep} | ({best.Min:0.00}, {best.Max:0.00}) | {F(best.Variance, "F4")} | {(lin is null ? "not in grid" : F(lin.Variance, "F4"))} |");
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
            sb.AppendLine("| model | mean length | std | min | max | stops | NFEs | NFEs/token | tokens/s | gen. PPL |");
            sb.AppendLine("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|");
            foreach (var g in Generation)
                sb.AppendLine($"| {g.Model} | {F(g.MeanLength, "F1")} | {F(g.StdLength, "F1")} | {g.MinLength} | {g.MaxLength} | {string.Join(", ", g.StopReasons.Select(kv => $"{kv.Key} {kv.Value}"))} | {g.Nfe} | {F(g.NfePerToken, "F3")} | {F(g.TokensPerSecond, "F1")} | {(g.GenerativePerplexity is { } p ? F(p, "F2") : "n/a")} |");
            sb.AppendLine();
            sb.AppendLine("First sample of each model (truncated):");
            sb.AppendLine();
            foreach (var g in Generation)
            {
                string ex = g.Example.Length > 200 ? g.Example[..200] + "…" : g.Example;
                sb.AppendLine($"- **{g.Model}**: `{ex.Replace("`", "'").Replace("\n", "⏎").Replace("\r", "")}`");
            }
            sb.AppendLine();
        }
        return sb.ToString();
    }
}
