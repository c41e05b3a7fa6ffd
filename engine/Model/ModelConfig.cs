using System.Text.Json;
using System.Text.Json.Nodes;

namespace FastBlockDiff.Engine.Model;

/// <summary>
/// Architecture and training-time constants of a BD3-LM denoiser. Serialised as config.json using the
/// key names of the bd3lms Hugging Face configs (hidden_dim, n_blocks, ...) plus our own extras.
/// </summary>
public sealed record ModelConfig
{
    /// <summary>Output/embedding rows, MASK included (bd3lms: 50258 for GPT-2).</summary>
    public int VocabSize { get; init; }
    public int HiddenDim { get; init; }
    public int CondDim { get; init; }
    public int Layers { get; init; }
    public int Heads { get; init; }
    /// <summary>Training sequence length L (the KV window when sampling).</summary>
    public int ModelLength { get; init; }
    /// <summary>Block size L'.</summary>
    public int BlockSize { get; init; }
    public float Dropout { get; init; } = 0.1f;
    public int MaskId { get; init; }
    /// <summary>Tokenizer spec understood by the tokenizer factory (e.g. "byte", "gpt2:DIR").</summary>
    public string Tokenizer { get; init; } = "byte";
    /// <summary>Clipped mask-rate range used in training, [β, ω].</summary>
    public float ScheduleMin { get; init; } = 0f;
    public float ScheduleMax { get; init; } = 1f;
    /// <summary>The noise schedule of training, evaluation and DDPM sampling (the reference's noise.type).</summary>
    public Training.NoiseKind Noise { get; init; } = Training.NoiseKind.Linear;

    public int HeadDim => HiddenDim / Heads;
    public int MlpDim => 4 * HiddenDim;
    public const int FrequencyDim = 256;

    public static readonly string[] SizeNames = ["tiny", "small"];

    /// <summary>Named sizes of DESIGN.md section 5 for a given vocabulary (MASK included) and length.</summary>
    public static ModelConfig Named(string size, int vocabSize, int maskId, int? modelLength = null, int blockSize = 4) => size switch
    {
        "tiny" => new() { VocabSize = vocabSize, MaskId = maskId, HiddenDim = 256, CondDim = 128, Layers = 4, Heads = 4, ModelLength = modelLength ?? 256, BlockSize = blockSize },
        "small" => new() { VocabSize = vocabSize, MaskId = maskId, HiddenDim = 768, CondDim = 128, Layers = 12, Heads = 12, ModelLength = modelLength ?? 1024, BlockSize = blockSize },
        _ => throw new UserInputException($"unknown model size '{size}': use tiny, small, or custom dims"),
    };

    public void Validate()
    {
        void Require(bool ok, string what) { if (!ok) throw new UserInputException($"invalid model config: {what}"); }
        Require(VocabSize > 1, $"vocab_size {VocabSize}");
        Require(HiddenDim > 0 && Heads > 0 && HiddenDim % Heads == 0, $"hidden_dim {HiddenDim} must be a positive multiple of n_heads {Heads}");
        Require(HeadDim % 2 == 0, $"head dim {HeadDim} must be even for rotary");
        Require(Layers > 0 && CondDim > 0, "n_blocks and cond_dim must be positive");
        Require(ModelLength > 0, $"model_length {ModelLength}");
        Require(BlockSize > 0 && ModelLength % BlockSize == 0, $"sequence length {ModelLength} is not divisible by block size {BlockSize}");
        Require(MaskId >= 0 && MaskId < VocabSize, $"mask id {MaskId} outside vocab {VocabSize}");
        Require(Dropout is >= 0f and < 1f, $"dropout {Dropout}");
        Require(ScheduleMin >= 0f && ScheduleMax <= 1f && (ScheduleMin < ScheduleMax || (ScheduleMin == ScheduleMax && ScheduleMax > 0f)),
            $"schedule [β={ScheduleMin}, ω={ScheduleMax}] needs 0 ≤ β < ω ≤ 1 (or β = ω > 0, a fixed rate)");
    }

    /// <summary>
    /// config.json with the whole key set of bd3lms's BD3LMConfig (models/hf/configuration_bd3lm.py), so that its
    /// code reads our checkpoints (with its configuration_bd3lm.py and modeling_bd3lm.py next to config.json), plus
    /// our mask_index, tokenizer and noise_type (the reference's noise.type).
    /// </summary>
    public string ToJson()
    {
        var o = new JsonObject
        {
            ["model_type"] = "bd3lm",
            ["architectures"] = new JsonArray("BD3LM"),
            ["auto_map"] = new JsonObject
            {
                ["AutoConfig"] = "configuration_bd3lm.BD3LMConfig",
                ["AutoModelForMaskedLM"] = "modeling_bd3lm.BD3LM",
            },
            ["block_size"] = BlockSize,
            ["vocab_size"] = VocabSize,
            ["model_length"] = ModelLength,
            ["cross_attn"] = true,
            ["adaln"] = true,
            ["attn_backend"] = "sdpa",
            ["causal"] = false,
            ["hidden_dim"] = HiddenDim,
            ["cond_dim"] = CondDim,
            ["n_blocks"] = Layers,
            ["n_heads"] = Heads,
            ["dropout"] = Dropout,
            ["time_conditioning"] = false,
            ["var_min"] = true,
            ["sampling_eps_min"] = ScheduleMin,
            ["sampling_eps_max"] = ScheduleMax,
            ["noise_type"] = Training.NoiseSchedule.ReferenceName(Noise),
            ["return_dict"] = false,
            ["mask_index"] = MaskId,
            ["tokenizer"] = Tokenizer,
        };
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>
    /// Reads our config.json or a bd3lms one (missing mask index → vocab_size-1, missing tokenizer → gpt2 when vocab is
    /// 50258). Every field is checked where it is read: integers must be whole numbers in range (256.9 is refused,
    /// not truncated), floats finite, strings strings; a problem is a <see cref="UserInputException"/> naming
    /// <paramref name="source"/> and the field.
    /// </summary>
    static Training.NoiseKind ParseNoise(string name, string source)
    {
        try { return Training.NoiseSchedule.Parse(name, "noise_type"); }
        catch (UserInputException e) { throw new UserInputException($"{source}: {e.Message}", e); }
    }

    public static ModelConfig FromJson(string json, string source)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false }); }
        catch (JsonException e) { throw new UserInputException($"{source}: not valid JSON ({e.Message})"); }
        if (root is not JsonObject o) throw new UserInputException($"{source}: expected a JSON object");
        JsonValue? Field(string key, string kind)
        {
            var node = o[key];
            if (node is null) return null;
            if (node is JsonValue v) return v;
            throw new UserInputException($"{source}: '{key}' must be {kind}, found {node.GetValueKind().ToString().ToLowerInvariant()}");
        }
        int Int(string key, int? fallback = null)
        {
            var v = Field(key, "an integer");
            if (v is null) return fallback ?? throw new UserInputException($"{source}: missing integer '{key}'");
            if (v.GetValueKind() != JsonValueKind.Number || !v.TryGetValue<double>(out var d))
                throw new UserInputException($"{source}: '{key}' must be an integer, found {v.ToJsonString()}");
            if (d != Math.Floor(d) || d < int.MinValue || d > int.MaxValue)
                throw new UserInputException($"{source}: '{key}' is {v.ToJsonString()}; it must be a whole number that fits in 32 bits");
            return (int)d;
        }
        float Float(string key, float fallback)
        {
            var v = Field(key, "a number");
            if (v is null) return fallback;
            if (v.GetValueKind() != JsonValueKind.Number || !v.TryGetValue<double>(out var d) || !float.IsFinite((float)d))
                throw new UserInputException($"{source}: '{key}' must be a finite number, found {v.ToJsonString()}");
            return (float)d;
        }
        string? Text(string key)
        {
            var v = Field(key, "a string");
            if (v is null) return null;
            if (v.GetValueKind() != JsonValueKind.String) throw new UserInputException($"{source}: '{key}' must be a string, found {v.ToJsonString()}");
            return v.GetValue<string>();
        }
        bool? Bool(string key)
        {
            var v = Field(key, "true or false");
            if (v is null) return null;
            if (v.GetValueKind() is not (JsonValueKind.True or JsonValueKind.False))
                throw new UserInputException($"{source}: '{key}' must be true or false, found {v.ToJsonString()}");
            return v.GetValue<bool>();
        }
        // what the engine cannot honour: a time-conditioned, causal or non-vectorised (cross_attn = false) model
        if (Bool("time_conditioning") == true)
            throw new UserInputException($"{source}: time_conditioning is true, but the engine runs BD3-LM's unconditioned denoiser (σ = 0); this checkpoint needs the reference code");
        if (Bool("causal") == true)
            throw new UserInputException($"{source}: causal is true (an autoregressive backbone), but the engine's denoiser attends bidirectionally within a block; train an L' = 1 BD3-LM instead");
        if (Bool("cross_attn") == false)
            throw new UserInputException($"{source}: cross_attn is false, but the engine trains and samples with the x_noisy ⊕ x_clean attention of BD3-LM (cross_attn = true)");
        int vocab = Int("vocab_size");
        var cfg = new ModelConfig
        {
            VocabSize = vocab,
            HiddenDim = Int("hidden_dim"),
            CondDim = Int("cond_dim"),
            Layers = Int("n_blocks"),
            Heads = Int("n_heads"),
            ModelLength = Int("model_length"),
            BlockSize = Int("block_size"),
            Dropout = Float("dropout", 0.1f),
            MaskId = Int("mask_index", vocab - 1),
            Tokenizer = Text("tokenizer") ?? (vocab == 50258 ? "gpt2" : "byte"),
            ScheduleMin = Float("sampling_eps_min", 0f),
            ScheduleMax = Float("sampling_eps_max", 1f),
            Noise = Text("noise_type") is { } noise ? ParseNoise(noise, source) : Training.NoiseKind.Linear,
        };
        try { cfg.Validate(); }
        catch (UserInputException e) { throw new UserInputException($"{source}: {e.Message}", e); }
        return cfg;
    }
}
