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

    public static void Save(string dir, ModelConfig config, ParameterSet parameters, float[] weights) =>
        CheckpointSet.Publish(dir, null, Files(config, parameters, weights));

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

    public static ModelConfig LoadConfig(string dir)
    {
        if (!Directory.Exists(dir)) throw new UserInputException($"checkpoint directory '{dir}' does not exist");
        var (handle, path) = CheckpointSet.Open(dir, ConfigFile) ?? throw new UserInputException($"checkpoint '{dir}' has no {ConfigFile}");
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
            return ModelConfig.FromJson(System.Text.Encoding.UTF8.GetString(bytes), path);
        }
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
