using System.Text.Json;
using System.Text.Json.Serialization;

namespace FastBlockDiff.Engine.Experiments;

/// <summary>
/// Everything an experiment run needs: data, model, the models to train on one token budget, the schedule
/// ablation and the generation study. Load from JSON (<see cref="FromJson"/>) or start from a preset
/// (<see cref="ForPreset"/>) and override with <c>with</c>.
/// </summary>
public sealed record ExperimentConfig
{
    /// <summary>Name of the preset this configuration started from (informational).</summary>
    public string Preset { get; init; } = "default";
    public string DataPath { get; init; } = "";
    public string OutputDirectory { get; init; } = "";
    public string Tokenizer { get; init; } = "byte";
    public string Backend { get; init; } = "auto";

    /// <summary>tiny, small or custom (HiddenDim/Layers/Heads).</summary>
    public string ModelSize { get; init; } = "custom";
    public int? HiddenDim { get; init; } = 128;
    public int? Layers { get; init; } = 2;
    public int? Heads { get; init; } = 4;
    public float Dropout { get; init; } = 0.1f;
    /// <summary>Sequence length L.</summary>
    public int SeqLen { get; init; } = 128;

    /// <summary>Optimiser steps per model; every model sees Steps·BatchSize·L training tokens. With
    /// <see cref="PretrainSteps"/> &gt; 0, the steps of each fine-tune (the AR model gets PretrainSteps + Steps).</summary>
    public int Steps { get; init; } = 250;
    /// <summary>
    /// The paper's recipe when &gt; 0: one MDLM (L' = L, linear) pre-trained for this many steps per seed, from which
    /// every BD3-LM L' (with the schedule search), the MDLM row and the ablation models are fine-tuned for
    /// <see cref="Steps"/>; AR is trained from scratch for PretrainSteps + Steps, the same token budget.
    /// 0: every model from scratch for Steps.
    /// </summary>
    public int PretrainSteps { get; init; } = 500;
    /// <summary>Seeds of repeated runs (initialisation, data order, noise, samples); every perplexity is reported as
    /// mean ± std over them. Empty: the one <see cref="Seed"/>.</summary>
    public ulong[] Seeds { get; init; } = [1, 2, 3];
    /// <summary>If set, overrides Steps: the per-model token budget, rounded up to whole steps.</summary>
    public long? TokenBudget { get; init; }
    public int BatchSize { get; init; } = 16;
    public float LearningRate { get; init; } = 1e-3f;
    public int WarmupSteps { get; init; } = 30;
    public string LrSchedule { get; init; } = "cosine";
    public ulong Seed { get; init; } = 1;

    /// <summary>BD3-LM block sizes L' (each must divide L; L' = L is MDLM and is reported as such).</summary>
    public int[] BlockSizes { get; init; } = [4, 8, 16];
    public bool IncludeAr { get; init; } = true;
    public bool IncludeMdlm { get; init; } = true;

    /// <summary>Noise schedule of the diffusion models: linear, square, sqrt, log or cosine (the reference's schedule ablation).</summary>
    public string NoiseSchedule { get; init; } = "linear";

    /// <summary>Fraction of the steps trained with the linear schedule before the (β, ω) search picks the clipped one.</summary>
    public double ScheduleSearchAt { get; init; } = 0.3;
    /// <summary>(β, ω) grid of the search, as [[β, ω], ...]; empty = the cells of ScheduleSearch.DefaultGrid() at least
    /// <see cref="MinGridWidth"/> wide (a very narrow range always has the lowest variance but trains on few mask rates).</summary>
    public float[][] ScheduleGrid { get; init; } = [];
    public float MinGridWidth { get; init; } = 0.5f;
    /// <summary>Held-out rows the search scores each cell on.</summary>
    public int ScheduleSearchSequences { get; init; } = 32;

    /// <summary>Block size of the schedule ablation (linear vs fixed clipped vs searched; first seed only); 0 = no ablation.</summary>
    public int AblationBlockSize { get; init; } = 4;
    /// <summary>The fixed clipped schedule of the ablation, U[β, ω].</summary>
    public float[] AblationClipped { get; init; } = [0.3f, 0.8f];
    /// <summary>Held-out rows of the ablation's NELBO mean/variance (training estimator, with resampling).</summary>
    public int AblationSequences { get; init; } = 128;

    /// <summary>Validation rows of the final NELBO/perplexity of each model (0 = the whole split).</summary>
    public int EvalSequences { get; init; } = 256;
    public int EvalBatchSize { get; init; } = 16;

    /// <summary>Samples generated per model (0 = skip generation).</summary>
    public int Samples { get; init; } = 8;
    /// <summary>Hard length limit of a sample (may exceed L: the KV cache slides).</summary>
    public int SampleMaxTokens { get; init; } = 256;
    /// <summary>Denoising steps per block (0 = the block size).</summary>
    public int SampleStepsPerBlock { get; init; }
    public float SampleTopP { get; init; } = 0.9f;
    /// <summary>Entropy stop (nats over the last EntropyWindow tokens; 0 = never).</summary>
    public float SampleEntropyThreshold { get; init; } = 1.5f;
    public int SampleEntropyWindow { get; init; } = 64;

    public const double ValidFraction = 0.05;

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true, DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    /// <summary>
    /// The named presets: <c>default</c> (2 CPU cores, about 35 minutes on Brown: 3 seeds of the paper's recipe),
    /// <c>small</c> (one GPU) and <c>quick</c> (seconds: the default's shape at toy size, for tests and smoke runs).
    /// </summary>
    public static ExperimentConfig ForPreset(string name) => name switch
    {
        "default" => new ExperimentConfig(),
        "quick" => new ExperimentConfig
        {
            Preset = "quick", HiddenDim = 16, Layers = 1, Heads = 2, SeqLen = 32, PretrainSteps = 3, Steps = 2, BatchSize = 4,
            WarmupSteps = 1, BlockSizes = [4, 8], ScheduleGrid = [[0f, 1f], [0.3f, 0.8f]], ScheduleSearchSequences = 4,
            AblationSequences = 8, EvalSequences = 8, EvalBatchSize = 4, Samples = 2, SampleMaxTokens = 24, SampleEntropyThreshold = 0f,
        },
        "small" => new ExperimentConfig
        {
            Preset = "small", ModelSize = "small", HiddenDim = null, Layers = null, Heads = null, SeqLen = 1024,
            Steps = 20000, PretrainSteps = 0, Seeds = [], BatchSize = 32, LearningRate = 3e-4f, WarmupSteps = 1000, LrSchedule = "cosine",
            ScheduleSearchSequences = 128, AblationSequences = 512, EvalSequences = 0, EvalBatchSize = 16,
            Samples = 32, SampleMaxTokens = 2048, SampleEntropyWindow = 256, SampleEntropyThreshold = 0f, Backend = "auto",
        },
        _ => throw new UserInputException($"unknown preset '{name}': use default, small or quick"),
    };

    public static ExperimentConfig FromJson(string json, string source)
    {
        try { return JsonSerializer.Deserialize<ExperimentConfig>(json, Json) ?? throw new UserInputException($"{source}: empty configuration"); }
        catch (JsonException e) { throw new UserInputException($"{source}: {e.Message}"); }
    }

    /// <summary>Reads a JSON configuration; keys not in the file keep the values of <paramref name="baseConfig"/>.</summary>
    public static ExperimentConfig Load(string path, ExperimentConfig? baseConfig = null)
    {
        if (!File.Exists(path)) throw new UserInputException($"config file '{path}' does not exist");
        Formats.InputFile.RequireRegular(path, "config file");
        var node = System.Text.Json.Nodes.JsonNode.Parse(JsonSerializer.Serialize(baseConfig ?? new ExperimentConfig(), Json))!.AsObject();
        System.Text.Json.Nodes.JsonObject file;
        try { file = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true })!.AsObject(); }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { throw new UserInputException($"{path}: {e.Message}"); }
        foreach (var (k, v) in file)
        {
            if (!node.ContainsKey(k)) throw new UserInputException($"{path}: unknown key '{k}'");
            node[k] = v?.DeepClone();
        }
        return FromJson(node.ToJsonString(), path);
    }

    /// <summary>The (β, ω) cells the schedule search scores.</summary>
    public IReadOnlyList<(float Min, float Max)> SearchGrid() => ScheduleGrid.Length > 0
        ? [.. ScheduleGrid.Select(g => (g[0], g[1]))]
        : [.. Training.ScheduleSearch.DefaultGrid().Where(g => g.Item2 - g.Item1 >= MinGridWidth - 1e-6f)];

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>The seeds of the run: <see cref="Seeds"/>, or the one <see cref="Seed"/>.</summary>
    public IReadOnlyList<ulong> SeedList => Seeds.Length > 0 ? Seeds : [Seed];

    /// <summary>Optimiser steps per model after applying the token budget.</summary>
    public int StepsPerModel => TokenBudget is { } t ? (int)Math.Max(1, (t + (long)BatchSize * SeqLen - 1) / ((long)BatchSize * SeqLen)) : Steps;

    public void Validate()
    {
        void Require(bool ok, string what) { if (!ok) throw new UserInputException($"experiment: {what}"); }
        Require(DataPath.Length > 0, "--data is required");
        Require(OutputDirectory.Length > 0, "--out is required");
        Require(File.Exists(DataPath) || Directory.Exists(DataPath), $"corpus '{DataPath}' does not exist");
        Require(SeqLen >= 4, $"sequence length {SeqLen} is too small");
        Require(AblationBlockSize >= 0, $"--ablation-block-size must be ≥ 0 (0 = none), got {AblationBlockSize}");
        Require(EvalSequences >= 0, $"--eval-sequences must be ≥ 0 (0 = the whole split), got {EvalSequences}");
        Require(ModelSize is "custom" || Model.ModelConfig.SizeNames.Contains(ModelSize), $"--model '{ModelSize}': use tiny, small or custom");
        Require(HiddenDim is null or > 0 && Layers is null or > 0 && Heads is null or > 0,
            $"--hidden-dim, --layers and --heads must be positive, got {HiddenDim}, {Layers}, {Heads}");
        Require(float.IsFinite(LearningRate) && LearningRate > 0, $"--lr must be a positive number, got {LearningRate}");
        Require(WarmupSteps >= 0, $"warmup_steps must be ≥ 0, got {WarmupSteps}");
        Require(LrSchedule is "constant" or "cosine", $"lr_schedule must be constant or cosine, got '{LrSchedule}'");
        Require(Dropout is >= 0f and < 1f, $"dropout must be in [0, 1), got {Dropout}");
        Require(MinGridWidth is >= 0f and <= 1f, $"min_grid_width must be in [0, 1], got {MinGridWidth}");
        Require(SampleStepsPerBlock >= 0 && SampleTopP is > 0f and <= 1f && SampleEntropyWindow > 0
            && float.IsFinite(SampleEntropyThreshold) && SampleEntropyThreshold >= 0,
            "sample_steps_per_block ≥ 0, sample_top_p in (0, 1], sample_entropy_window > 0 and sample_entropy_threshold ≥ 0 are required");
        Require(StepsPerModel > 0 && BatchSize > 0, "steps and batch size must be positive");
        Require(TokenBudget is null or > 0, "token budget must be positive");
        Training.NoiseSchedule.Parse(NoiseSchedule, "noise_schedule");
        Require(PretrainSteps >= 0, $"--pretrain-steps must be ≥ 0 (0 = every model from scratch), got {PretrainSteps}");
        Require(Seeds.Distinct().Count() == Seeds.Length, $"--seeds must be distinct, got {string.Join(",", Seeds)}");
        foreach (var b in BlockSizes) Require(b > 0 && SeqLen % b == 0, $"block size {b} does not divide L={SeqLen}");
        Require(BlockSizes.Length > 0 || IncludeAr || IncludeMdlm, "nothing to train: no block sizes, no AR, no MDLM");
        Require(ScheduleSearchAt is >= 0 and < 1, $"schedule_search_at {ScheduleSearchAt} must be in [0, 1)");
        foreach (var g in ScheduleGrid) Require(g.Length == 2 && g[0] >= 0 && g[0] < g[1] && g[1] <= 1, "schedule grid cells must be [β, ω] with 0 ≤ β < ω ≤ 1");
        Require(AblationBlockSize == 0 || (AblationBlockSize > 0 && SeqLen % AblationBlockSize == 0), $"ablation block size {AblationBlockSize} does not divide L={SeqLen}");
        Require(AblationClipped.Length == 2 && AblationClipped[0] >= 0 && AblationClipped[0] < AblationClipped[1] && AblationClipped[1] <= 1,
            "ablation_clipped must be [β, ω] with 0 ≤ β < ω ≤ 1");
        Require(EvalSequences >= 0 && EvalBatchSize > 0 && AblationSequences > 0 && ScheduleSearchSequences > 0, "evaluation sizes must be positive");
        Require(Samples >= 0 && SampleMaxTokens > 0, $"--samples must be ≥ 0 and --sample-max-tokens positive, got {Samples} and {SampleMaxTokens}");
    }
}
