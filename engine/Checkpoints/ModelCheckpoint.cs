using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Checkpoints;

/// <summary>
/// A model directory in the bd3lms Hugging Face layout: config.json and model.safetensors whose keys are the
/// denoiser's parameter names prefixed with "backbone.". Written as one <see cref="CheckpointSet"/>; read with or
/// without its manifest (published bd3lms checkpoints have none).
/// </summary>
public static class ModelCheckpoint
{
    public const string ConfigFile = "config.json", WeightsFile = "model.safetensors", Prefix = "backbone.";
    public const string AllowNonFiniteAdvice = "the checkpoint is corrupt or its training diverged; use --allow-nonfinite to load it anyway";

    public static void Save(string dir, ModelConfig config, ParameterSet parameters, float[] weights)
    {
        CheckpointSet.Publish(dir, null, Files(config, parameters, weights));
        StoreTokenizer(dir, config.Tokenizer);
    }

    /// <summary>config.json and model.safetensors, for publishing with other files; refuses non-finite weights.</summary>
    public static IReadOnlyList<CheckpointFile> Files(ModelConfig config, ParameterSet parameters, float[] weights)
    {
        if (weights.Length != parameters.Count) throw new ArgumentException($"expected {parameters.Count} weights, got {weights.Length}");
        foreach (var p in parameters.Infos)
            NonFiniteValues.Refuse(weights.AsSpan(p.Offset, p.Length), $"weights '{Prefix + p.Name}' to be saved",
                "nothing was written; lower --lr (or raise --warmup) and train again from the last checkpoint");
        var mem = weights.AsMemory();
        var writeWeights = SafetensorsFile.Writer(WeightsFile,
            parameters.Infos.Select(p => SafetensorsTensorData.F32(Prefix + p.Name, p.Shape, mem.Slice(p.Offset, p.Length))),
            new Dictionary<string, string> { ["format"] = "pt", ["producer"] = "FastBlockDiff" });
        var configBytes = new System.Text.UTF8Encoding(false).GetBytes(config.ToJson());
        return [new CheckpointFile(ConfigFile, s => s.Write(configBytes)), new CheckpointFile(WeightsFile, writeWeights)];
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
    /// <summary>Copies the tokenizer files config.json names into DIR/tokenizer, so that a moved checkpoint still finds them.</summary>
    public static void StoreTokenizer(string dir, string spec)
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
        var (handle, path) = CheckpointSet.Open(dir, ConfigFile) ?? throw new UserInputException($"checkpoint '{dir}' has no {ConfigFile}");
        ModelConfig config;
        using (handle)
        {
            long length = RandomAccess.GetLength(handle);
            if (length > 1 << 24) throw new UserInputException($"{path}: {length:N0} bytes is far too large for a model config");
            var bytes = new byte[length];
            for (int at = 0; at < bytes.Length;)
            {
                int n = RandomAccess.Read(handle, bytes.AsSpan(at), at);
                if (n <= 0) throw new UserInputException($"{path}: unexpected end of file");
                at += n;
            }
            if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new UserInputException($"{path}: not valid UTF-8 text");
            config = ModelConfig.FromJson(System.Text.Encoding.UTF8.GetString(bytes), path);
        }
        return WithScheduleFromTensors(dir, config);
    }

    /// <summary>
    /// The clipped schedule the training ended with: the reference keeps it in the sampling_eps_min/max buffers (the
    /// tensors of its checkpoints), which its schedule search updates while config.json keeps the initial values.
    /// </summary>
    static ModelConfig WithScheduleFromTensors(string dir, ModelConfig config)
    {
        var opened = CheckpointSet.Open(dir, WeightsFile);
        if (opened is not var (handle, weights)) return config;
        using var file = SafetensorsFile.Read(weights, handle);
        float? Scalar(string name) =>
            file.Contains(name) ? file.ReadFloat32(name) is { Length: 1 } v ? v[0] : throw new UserInputException($"{weights}: tensor '{name}' should hold one value")
            : file.Contains(Prefix + name) ? file.ReadFloat32(Prefix + name) is { Length: 1 } w ? w[0] : throw new UserInputException($"{weights}: tensor '{Prefix + name}' should hold one value")
            : null;
        if (Scalar("sampling_eps_min") is not { } lo || Scalar("sampling_eps_max") is not { } hi) return config;
        var c = config with { ScheduleMin = lo, ScheduleMax = hi };
        c.Validate();
        return c;
    }

    /// <summary>
    /// The parameter layout <paramref name="config"/> describes, computed without allocating it; a layout past 2^31
    /// parameters is refused (no file of ours holds one).
    /// </summary>
    public static ParameterSet Parameters(ModelConfig config, string source)
    {
        try { return Denoiser.BuildParameterSet(config); }
        catch (OverflowException) { throw new UserInputException($"{source}: the model it describes has more than 2^31 parameters (vocab_size {config.VocabSize}, hidden_dim {config.HiddenDim}, n_blocks {config.Layers})"); }
    }

    /// <summary>
    /// Reads the weights of <paramref name="parameters"/>, checking every name and shape against the file before
    /// allocating, and refusing NaN/Inf unless <paramref name="allowNonFinite"/>.
    /// </summary>
    public static float[] LoadWeights(string dir, ModelConfig config, ParameterSet parameters, bool allowNonFinite = false)
    {
        var (handle, path) = CheckpointSet.Open(dir, WeightsFile) ?? throw new UserInputException($"checkpoint '{dir}' has no {WeightsFile}");
        using var file = SafetensorsFile.Read(path, handle);
        var keys = new List<string>(parameters.Infos.Count);
        foreach (var p in parameters.Infos)
        {
            string key = file.Contains(Prefix + p.Name) ? Prefix + p.Name : file.Contains(p.Name) ? p.Name
                : throw new UserInputException($"{path}: missing tensor '{Prefix + p.Name}' (is this a BD3-LM DiT checkpoint with {config.Layers} blocks?)");
            var info = file[key];
            if (!info.Shape.SequenceEqual(p.Shape.Select(d => (long)d)))
                throw new UserInputException($"{path}: tensor '{key}' has shape [{string.Join(",", info.Shape)}] but config.json implies [{string.Join(",", p.Shape)}]: checkpoint of another shape");
            keys.Add(key);
        }
        var flat = new float[parameters.Count];
        for (int i = 0; i < keys.Count; i++)
        {
            var p = parameters.Infos[i];
            var slice = flat.AsSpan(p.Offset, p.Length);
            file.ReadFloat32(keys[i]).CopyTo(slice);
            if (!allowNonFinite) NonFiniteValues.Refuse(slice, $"{path}: tensor '{keys[i]}'", AllowNonFiniteAdvice);
        }
        return flat;
    }

    /// <summary>Loads config and weights onto a backend.</summary>
    public static Denoiser Load(string dir, IBackend backend, bool allowNonFinite = false)
    {
        var config = LoadConfig(dir);
        var weights = LoadWeights(dir, config, Parameters(config, Path.Combine(dir, ConfigFile)), allowNonFinite);
        var model = new Denoiser(backend, config);
        model.LoadWeights(weights);
        return model;
    }
}
