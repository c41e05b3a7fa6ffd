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
        AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), config.ToJson());
    }

    public static ModelConfig LoadConfig(string dir)
    {
        if (!Directory.Exists(dir)) throw new UserInputException($"checkpoint directory '{dir}' does not exist");
        string path = Path.Combine(dir, ConfigFile);
        if (!File.Exists(path)) throw new UserInputException($"checkpoint '{dir}' has no {ConfigFile}");
        InputFile.RequireRegular(path, "checkpoint config");
        return ModelConfig.FromJson(File.ReadAllText(path), path);
    }

    /// <summary>Reads the weights of <paramref name="config"/>'s parameter set, checking every name and shape.</summary>
    public static float[] LoadWeights(string dir, ModelConfig config, ParameterSet parameters)
    {
        string path = Path.Combine(dir, WeightsFile);
        if (!File.Exists(path)) throw new UserInputException($"checkpoint '{dir}' has no {WeightsFile}");
        using var file = SafetensorsFile.Read(path);
        var keys = new List<string>(parameters.Infos.Count);
        foreach (var p in parameters.Infos)   // every name and shape first: nothing is allocated for a file that does not match
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
            file.ReadFloat32(keys[i]).CopyTo(flat.AsSpan(p.Offset, p.Length));
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
