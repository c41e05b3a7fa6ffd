using System.Text.Json.Nodes;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>config.json as the reference reads it, its schedule buffers, what the engine refuses, and the stored tokenizer.</summary>
public sealed class CheckpointMetadataTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("fbd-meta-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>The arguments of bd3lms's BD3LMConfig.__init__ (models/hf/configuration_bd3lm.py).</summary>
    static readonly string[] ReferenceKeys =
    [
        "block_size", "vocab_size", "model_length", "cross_attn", "adaln", "attn_backend", "causal", "hidden_dim", "cond_dim",
        "n_blocks", "n_heads", "dropout", "time_conditioning", "var_min", "sampling_eps_min", "sampling_eps_max",
    ];

    [Fact]
    public void ConfigJsonCarriesTheReferencesKeySet()
    {
        var c = TinyModels.Config() with { ScheduleMin = 0.3f, ScheduleMax = 0.8f };
        var o = JsonNode.Parse(c.ToJson())!.AsObject();
        foreach (var k in ReferenceKeys) Assert.True(o.ContainsKey(k), $"config.json lacks '{k}'");
        Assert.Equal("bd3lm", (string)o["model_type"]!);
        Assert.True((bool)o["cross_attn"]!);
        Assert.False((bool)o["causal"]!);
        Assert.False((bool)o["time_conditioning"]!);
        Assert.NotNull(o["auto_map"]!["AutoModelForMaskedLM"]);
        Assert.Equal(c, ModelConfig.FromJson(c.ToJson(), "test"));
    }

    [Theory]
    [InlineData("time_conditioning", true)]
    [InlineData("causal", true)]
    [InlineData("cross_attn", false)]
    public void RefusesWhatTheEngineCannotHonour(string key, bool value)
    {
        var o = JsonNode.Parse(TinyModels.Config().ToJson())!.AsObject();
        o[key] = value;
        var e = Assert.Throws<UserInputException>(() => ModelConfig.FromJson(o.ToJsonString(), "ckpt/config.json"));
        Assert.Contains(key, e.Message);
        Assert.Contains("ckpt/config.json", e.Message);
    }

    [Fact]
    public void ScheduleComesFromTheCheckpointsTensorsWhenPresent()
    {
        var c = TinyModels.Config();   // config.json says [0, 1]
        var m = TinyModels.Random(c, 3);
        ModelCheckpoint.Save(_dir, c, m.Params, m.DownloadWeights());
        Assert.Equal((0f, 1f), (ModelCheckpoint.LoadConfig(_dir).ScheduleMin, ModelCheckpoint.LoadConfig(_dir).ScheduleMax));

        // as the reference's state dict: 0-dimensional buffers next to the backbone's weights
        string path = Path.Combine(_dir, ModelCheckpoint.WeightsFile);
        var w = m.DownloadWeights();
        var tensors = m.Params.Infos.Select(p => (ModelCheckpoint.Prefix + p.Name, p.Shape, (ReadOnlyMemory<float>)w.AsMemory(p.Offset, p.Length)))
            .Append(("sampling_eps_min", Array.Empty<int>(), new float[] { 0.3f }.AsMemory()))
            .Append(("sampling_eps_max", Array.Empty<int>(), new float[] { 0.8f }.AsMemory()));
        SafetensorsFile.Write(path, tensors);
        // a hand-edited weights file is no longer the set the manifest recorded: load the files as they are
        File.Delete(Path.Combine(_dir, CheckpointSet.ManifestFile));
        var loaded = ModelCheckpoint.LoadConfig(_dir);
        Assert.Equal((0.3f, 0.8f), (loaded.ScheduleMin, loaded.ScheduleMax));
        Assert.Equal(w, ModelCheckpoint.Load(_dir, new CpuBackend()).DownloadWeights());
    }

    [Fact]
    public void AMovedCheckpointFindsItsTokenizer()
    {
        string tokDir = Path.Combine(_dir, "gpt2-files");
        Directory.CreateDirectory(tokDir);
        var vocab = new Dictionary<string, int> { ["h"] = 0, ["i"] = 1, ["hi"] = 2, ["<|endoftext|>"] = 3 };
        File.WriteAllText(Path.Combine(tokDir, "vocab.json"), System.Text.Json.JsonSerializer.Serialize(vocab));
        File.WriteAllText(Path.Combine(tokDir, "merges.txt"), "#version: 0.2\nh i\n");
        var c = TinyModels.Config(vocab: 5) with { MaskId = 4, Tokenizer = "gpt2:" + tokDir };
        var m = TinyModels.Random(c, 3);
        string ckpt = Path.Combine(_dir, "ckpt");
        ModelCheckpoint.Save(ckpt, c, m.Params, m.DownloadWeights());

        string moved = Path.Combine(_dir, "elsewhere");
        Directory.Move(ckpt, moved);
        Directory.Delete(tokDir, recursive: true);
        using var model = BlockDiffusionModel.Load(moved, backend: "cpu");
        Assert.Equal([2], model.Tokenizer.Encode("hi"));
        Assert.StartsWith(Path.Combine(moved, ModelCheckpoint.TokenizerDir), model.Tokenizer.Describe().Spec["gpt2:".Length..]);
    }
}
