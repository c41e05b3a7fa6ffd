using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Checkpoints;

/// <summary>
/// A model directory in the bd3lms Hugging Face layout: config.json and model.safetensors whose keys are the
/// denoiser's parameter names prefixed with "backbone.". Every file is written atomically.
/// </summary>
public static class ModelCheckpoint
{
    public const string ConfigFile = "config.json", WeightsFile = "model.safetensors", Prefix = "backbone.";

    public static void Save(string dir, ModelConfig config, ParameterSet parameters, float[] weights)
    {
        Directory.CreateDirectory(dir);
        if (weights.Length != parameters.Count) throw new ArgumentException($"expected {parameters.Count} weights, got {weights.Length}");
        var mem = weights.AsMemory();
        SafetensorsFile.Write(Path.Combine(dir, WeightsFile),
            parameters.Infos.Select(p => (Prefix + p.Name, p.Shape, (ReadOnlyMemory<float>)mem.Slice(p.Offset, p.Length))),
            new Dictionary<string, string> { ["format"] = "pt", ["producer"] = "FastBlockDiff" });
        StoreTokenizer(dir, config.Tokenizer);
        AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), config.ToJson());
    }

    public const string TokenizerDir = "tokenizer";

    /// <summary>The files a tokenizer spec reads (GPT-2 vocab.json + merges.txt, or a tiktoken file); none for built-in ones.</summary>
    static string[] TokenizerFiles(string spec)
    {
        string path = spec.StartsWith("gpt2:", StringComparison.OrdinalIgnoreCase) ? spec[5..]
            : spec.StartsWith("tiktoken:", StringComparison.OrdinalIgnoreCase) ? spec[9..] : spec;
        if (Directory.Exists(path)) return [Path.Combine(path, "vocab.json"), Path.Combine(path, "merges.txt")];
        if (spec.StartsWith("gpt2:", StringComparison.OrdinalIgnoreCase)) return [Path.Combine(path, "vocab.json"), Path.Combine(path, "merges.txt")];
        if (spec.StartsWith("tiktoken:", StringComparison.OrdinalIgnoreCase) || spec.EndsWith(".tiktoken", StringComparison.OrdinalIgnoreCase)) return [path];
        return [];
    }

    /// <summary>Copies the tokenizer's files into DIR/tokenizer, so that a moved checkpoint still finds them.</summary>
    static void StoreTokenizer(string dir, string spec)
    {
        var files = TokenizerFiles(spec);
        if (files.Length == 0 || !files.All(File.Exists)) return;
        string target = Path.Combine(dir, TokenizerDir);
        Directory.CreateDirectory(target);
        foreach (var f in files)
        {
            string copy = Path.Combine(target, Path.GetFileName(f));
            if (Path.GetFullPath(copy) == Path.GetFullPath(f) || (File.Exists(copy) && new FileInfo(copy).Length == new FileInfo(f).Length)) continue;
            AtomicFile.Write(copy, s => { using var src = File.OpenRead(f); src.CopyTo(s); });
        }
    }

    /// <summary>
    /// The tokenizer spec to load for checkpoint <paramref name="dir"/>: the recorded one while its files exist, else
    /// the copies stored in DIR/tokenizer (the checkpoint was moved or the original files are gone).
    /// </summary>
    public static string TokenizerSpec(string dir, string spec)
    {
        var files = TokenizerFiles(spec);
        if (files.Length == 0 || files.All(File.Exists)) return spec;
        string stored = Path.Combine(dir, TokenizerDir);
        if (!files.All(f => File.Exists(Path.Combine(stored, Path.GetFileName(f))))) return spec;
        return files.Length == 2 ? $"gpt2:{stored}" : $"tiktoken:{Path.Combine(stored, Path.GetFileName(files[0]))}";
    }

    public static ModelConfig LoadConfig(string dir)
    {
        if (!Directory.Exists(dir)) throw new UserInputException($"checkpoint directory '{dir}' does not exist");
        string path = Path.Combine(dir, ConfigFile);
        if (!File.Exists(path)) throw new UserInputException($"checkpoint '{dir}' has no {ConfigFile}");
        var config = ModelConfig.FromJson(File.ReadAllText(path), path);
        return WithScheduleFromTensors(dir, config);
    }

    /// <summary>
    /// The clipped schedule the training ended with: the reference keeps it in the sampling_eps_min/max buffers (the
    /// tensors of its checkpoints), which its schedule search updates while config.json keeps the initial values.
    /// </summary>
    static ModelConfig WithScheduleFromTensors(string dir, ModelConfig config)
    {
        string weights = Path.Combine(dir, WeightsFile);
        if (!File.Exists(weights)) return config;
        using var file = SafetensorsFile.Read(weights);
        float? Scalar(string name) =>
            file.Contains(name) ? file.ReadFloat32(name) is { Length: 1 } v ? v[0] : throw new UserInputException($"{weights}: tensor '{name}' should hold one value")
            : file.Contains(Prefix + name) ? file.ReadFloat32(Prefix + name) is { Length: 1 } w ? w[0] : throw new UserInputException($"{weights}: tensor '{Prefix + name}' should hold one value")
            : null;
        if (Scalar("sampling_eps_min") is not { } lo || Scalar("sampling_eps_max") is not { } hi) return config;
        var c = config with { ScheduleMin = lo, ScheduleMax = hi };
        c.Validate();
        return c;
    }

    /// <summary>Reads the weights of <paramref name="config"/>'s parameter set, checking every name and shape.</summary>
    public static float[] LoadWeights(string dir, ModelConfig config, ParameterSet parameters)
    {
        string path = Path.Combine(dir, WeightsFile);
        if (!File.Exists(path)) throw new UserInputException($"checkpoint '{dir}' has no {WeightsFile}");
        using var file = SafetensorsFile.Read(path);
        var flat = new float[parameters.Count];
        foreach (var p in parameters.Infos)
        {
            string key = file.Contains(Prefix + p.Name) ? Prefix + p.Name : file.Contains(p.Name) ? p.Name
                : throw new UserInputException($"{path}: missing tensor '{Prefix + p.Name}' (is this a BD3-LM DiT checkpoint with {config.Layers} blocks?)");
            var info = file[key];
            if (!info.Shape.Select(d => (int)d).SequenceEqual(p.Shape))
                throw new UserInputException($"{path}: tensor '{key}' has shape [{string.Join(",", info.Shape)}] but config.json implies [{string.Join(",", p.Shape)}]: checkpoint of another shape");
            file.ReadFloat32(key).CopyTo(flat.AsSpan(p.Offset, p.Length));
        }
        return flat;
    }

    /// <summary>Loads config and weights onto a backend.</summary>
    public static Denoiser Load(string dir, IBackend backend)
    {
        var config = LoadConfig(dir);
        var model = new Denoiser(backend, config);
        model.LoadWeights(LoadWeights(dir, config, model.Params));
        return model;
    }
}
