using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// Every field the checkpoint loaders read is checked where it enters: config.json, the safetensors header, the
/// training-state metadata and tensors. Each bad value is a <see cref="UserInputException"/> naming the file and field.
/// </summary>
public sealed class CheckpointValidationTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("fbd-ckval-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static string ConfigJson(string key, JsonNode? value)
    {
        var o = JsonNode.Parse(TinyModels.Config().ToJson())!.AsObject();
        o[key] = value;
        return o.ToJsonString();
    }

    [Theory]
    [InlineData("hidden_dim", "256.9", "whole number")]
    [InlineData("hidden_dim", "\"256\"", "must be an integer")]
    [InlineData("hidden_dim", "[16]", "must be an integer")]
    [InlineData("hidden_dim", "1e300", "fits in 32 bits")]
    [InlineData("hidden_dim", "-16", "hidden_dim")]
    [InlineData("hidden_dim", "0", "hidden_dim")]
    [InlineData("n_blocks", "0", "n_blocks")]
    [InlineData("n_heads", "-2", "n_heads")]
    [InlineData("vocab_size", "null", "vocab_size")]
    [InlineData("vocab_size", "true", "must be an integer")]
    [InlineData("model_length", "-8", "model_length")]
    [InlineData("block_size", "0", "block")]
    [InlineData("dropout", "\"0.1\"", "'dropout' must be a finite number")]
    [InlineData("dropout", "1e39", "'dropout' must be a finite number")]
    [InlineData("sampling_eps_min", "1.5", "schedule")]
    [InlineData("tokenizer", "7", "'tokenizer' must be a string")]
    [InlineData("mask_index", "99", "mask id")]
    public void BadConfigFieldIsRefusedByName(string key, string value, string expected)
    {
        string json = ConfigJson(key, JsonNode.Parse(value));
        var e = Assert.Throws<UserInputException>(() => ModelConfig.FromJson(json, "somewhere/config.json"));
        Assert.Contains("somewhere/config.json", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void WholeNumbersWrittenAsFloatsAndBd3lmsConfigsStillLoad()
    {
        var c = ModelConfig.FromJson(ConfigJson("hidden_dim", JsonNode.Parse("16.0")), "c.json");
        Assert.Equal(16, c.HiddenDim);
        // a bd3lms config: no mask_index, no tokenizer, extra keys we do not use
        string bd3 = """{"block_size": 4, "vocab_size": 50258, "model_length": 1024, "hidden_dim": 768, "cond_dim": 128, "n_blocks": 12, "n_heads": 12, "dropout": 0.1, "time_conditioning": false, "var_min": true, "attn_backend": "sdpa", "auto_map": {"AutoConfig": "configuration_bd3lm.BD3LMConfig"}}""";
        var b = ModelConfig.FromJson(bd3, "bd3.json");
        Assert.Equal((50257, "gpt2", 768), (b.MaskId, b.Tokenizer, b.HiddenDim));
        Assert.Throws<UserInputException>(() => ModelConfig.FromJson("""{"vocab_size": 13, "vocab_size": 14}""", "dup.json"));
    }

    [Fact]
    public void SafetensorsHeaderWithInvalidUtf8IsRefused()
    {
        string path = Path.Combine(_dir, "bad.safetensors");
        var header = Encoding.UTF8.GetBytes("{\"a\u00e9\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}");
        int at = Array.IndexOf(header, (byte)0xC3);
        header[at] = 0xFF; // an invalid lead byte inside the tensor name
        var bytes = new byte[8 + header.Length + 4];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<UserInputException>(() => SafetensorsFile.Read(path).Dispose());
        Assert.Contains("UTF-8", e.Message);
        Assert.Contains("bad.safetensors", e.Message);
    }

    [Fact]
    public void ConfigThatImpliesAHugeModelIsRefusedBeforeAllocating()
    {
        var c = TinyModels.Config();
        var m = TinyModels.Random(c);
        ModelCheckpoint.Save(_dir, c, m.Params, m.DownloadWeights());
        File.Delete(Path.Combine(_dir, CheckpointSet.ManifestFile));
        // 2^30 × 16 parameters overflow the layout; 5·10^7 × 16 (twice: embedding and output) fit it but not the file: neither allocates anything
        foreach (var (vocab, expected) in new[] { (1 << 30, "2^31 parameters"), (50_000_000, "another shape") })
        {
            File.WriteAllText(Path.Combine(_dir, ModelCheckpoint.ConfigFile), ConfigJson("vocab_size", vocab));
            long before = GC.GetTotalAllocatedBytes(precise: true);
            var e = Assert.Throws<UserInputException>(() => ModelCheckpoint.Load(_dir, new CpuBackend()));
            Assert.Contains(expected, e.Message);
            Assert.True(GC.GetTotalAllocatedBytes(precise: true) - before < 64 << 20, "the refusal allocated more than 64 MB");
        }
    }

    /// <summary>Saves a training state of a 3-step run and returns it with the path of its state file.</summary>
    string TrainedRun()
    {
        string corpus = CheckpointTests.WriteCorpus(_dir);
        string run = Path.Combine(_dir, "run");
        TrainingRun.Run(CheckpointTests.TinyRequest(corpus, run, 3));
        File.Delete(Path.Combine(run, CheckpointSet.ManifestFile)); // the edits below are the point of the test
        return run;
    }

    /// <summary>Rewrites training_state.safetensors with one metadata value or tensor replaced.</summary>
    static void EditState(string run, Action<Dictionary<string, string>, Dictionary<string, SafetensorsTensorData>> edit)
    {
        string path = Path.Combine(run, TrainingCheckpoint.StateFile);
        Dictionary<string, string> meta;
        var tensors = new Dictionary<string, SafetensorsTensorData>();
        using (var f = SafetensorsFile.Read(path))
        {
            meta = f.Metadata.ToDictionary();
            foreach (var t in f.Tensors)
                tensors[t.Name] = t.DType == SafetensorsDType.F32
                    ? SafetensorsTensorData.F32(t.Name, t.ShapeInt32, f.ReadFloat32(t.Name))
                    : SafetensorsTensorData.I64(t.Name, t.ShapeInt32, f.ReadInt64(t.Name));
        }
        edit(meta, tensors);
        SafetensorsFile.Write(path, tensors.Values, meta);
    }

    [Theory]
    [InlineData("step", "abc", "'step'")]
    [InlineData("step", "-1", "'step'")]
    [InlineData("step", "2", "loss log holds 3 entries but the state is at step 2")]
    [InlineData("step", "99999999999", "'step'")]
    [InlineData("schedule_min", "NaN", "'schedule_min'")]
    [InlineData("schedule_max", "Infinity", "'schedule_max'")]
    [InlineData("schedule_max", "0", "schedule")]
    public void BadTrainingStateMetadataIsRefusedByName(string key, string value, string expected)
    {
        string run = TrainedRun();
        EditState(run, (meta, _) => meta[key] = value);
        var e = Assert.Throws<UserInputException>(() => TrainingCheckpoint.Load(run));
        Assert.Contains(TrainingCheckpoint.StateFile, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void BadTrainingStateTensorsAreRefusedByName()
    {
        string run = TrainedRun();
        void Expect(string expected, Action<Dictionary<string, SafetensorsTensorData>> edit)
        {
            string path = Path.Combine(run, TrainingCheckpoint.StateFile);
            var good = File.ReadAllBytes(path);
            EditState(run, (_, t) => edit(t));
            var e = Assert.Throws<UserInputException>(() => TrainingCheckpoint.Load(run));
            Assert.Contains(expected, e.Message);
            File.WriteAllBytes(path, good);
        }
        Expect("'rng' must hold 4 words", t => t["rng"] = SafetensorsTensorData.I64("rng", [3], new long[] { 1, 2, 3 }));
        Expect("'rng' must hold 4 words, not all zero", t => t["rng"] = SafetensorsTensorData.I64("rng", [4], new long[4]));
        Expect("loss log has 2 steps but 3 losses", t => t["loss_log_step"] = SafetensorsTensorData.I64("loss_log_step", [2], new long[] { 1, 2 }));
        Expect("loss log entry 1 is for step 7", t => t["loss_log_step"] = SafetensorsTensorData.I64("loss_log_step", [3], new long[] { 1, 7, 3 }));
        Expect("'data_position' must hold 3 values", t => t["data_position"] = SafetensorsTensorData.I64("data_position", [1], new long[] { 0 }));
        Expect("'adam_m' has shape [2]", t => t["adam_m"] = SafetensorsTensorData.F32("adam_m", [2], new float[2]));
        Expect("negative second moment", t => t["adam_v"] = WithValue(t["adam_v"], "adam_v", -1f));
        Expect("tensor 'ema' holds 1 non-finite value", t => t["ema"] = WithValue(t["ema"], "ema", float.NaN));
        Expect("tensor 'adam_m' holds 1 non-finite value", t => t["adam_m"] = WithValue(t["adam_m"], "adam_m", float.PositiveInfinity));
        Assert.Equal(3, TrainingCheckpoint.Load(run).Step); // the restored file is good again
    }

    static SafetensorsTensorData WithValue(SafetensorsTensorData t, string name, float value)
    {
        var x = new float[t.Length];
        x[x.Length / 2] = value;
        return SafetensorsTensorData.F32(name, [x.Length], x);
    }
}
