using System.Diagnostics;
using System.Text.Json.Nodes;

namespace FastBlockDiff.Tests;

/// <summary>
/// The PyTorch peers of the CPU comparison (bench/run-cpu-compare.sh) run for one step on a tiny configuration and
/// write the bench schema with the shape keys our side writes for the same configuration (bench/EndToEndQuick.cs
/// BenchModels.Shape: B, H, L, Lp, d, dtype, V, width, layers [, tokens, steps]) — otherwise the report pairs nothing.
/// They need /usr/bin/python3 with torch (Debian's python3-torch) and skip with that reason where it is missing.
/// </summary>
public class CpuComparePeerTests
{
    const string Python = "/usr/bin/python3";

    static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "FastBlockDiff.sln"))) dir = dir.Parent;
        if (dir == null) Assert.Skip("repository not found above the test binary");
        return dir!.FullName;
    }

    static (int Code, string Output) Run(params string[] args)
    {
        var psi = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["FBD_COMMIT"] = "test";   // no git calls from the scripts
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output + err.Result);
    }

    static void RequireTorch()
    {
        if (!File.Exists(Python)) Assert.Skip($"{Python} not found");
        if (Run("-c", "import torch").Code != 0) Assert.Skip($"{Python} has no torch (apt-get install python3-torch)");
    }

    static JsonObject RunPeer(string script, params string[] args)
    {
        RequireTorch();
        string root = RepoRoot();
        string output = Path.Combine(Path.GetTempPath(), $"fbd-peer-{Guid.NewGuid():N}.json");
        try
        {
            var (code, text) = Run([Path.Combine(root, script), .. args, "--threads", "1", "--out", output]);
            Assert.True(code == 0, $"{script} exited with {code}:\n{text}");
            return JsonNode.Parse(File.ReadAllText(output))!.AsObject();
        }
        finally { File.Delete(output); }
    }

    static Dictionary<string, string> Shape(JsonNode r) =>
        r["shape"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.ToJsonString().Trim('"'));

    [Fact]
    public void TheTorchObjectivePeerTimesATrainingStepAndAnEvalForwardOfTheSameShapeAsOurs()
    {
        var doc = RunPeer("bench/cpu/torch_objective.py", "--model", "tiny", "--vocab", "40", "--L", "16", "--Lp", "4", "--batch", "2",
            "--warmup", "0", "--steps", "1");
        var results = doc["results"]!.AsArray();
        Assert.Equal(["train_step", "eval_forward"], results.Select(r => r!["suite"]!.GetValue<string>()));
        var expected = new Dictionary<string, string>
        {
            ["B"] = "2", ["H"] = "4", ["L"] = "16", ["Lp"] = "4", ["d"] = "64", ["dtype"] = "fp32", ["V"] = "40", ["width"] = "256", ["layers"] = "4",
        };
        foreach (var r in results)
        {
            Assert.Equal(expected, Shape(r!));
            Assert.False(r!["impl"]!.GetValue<string>().StartsWith("fastblockdiff"), "a peer must not be named as ours");
            double ms = r["ms"]!.GetValue<double>(), tps = r["tokens_per_s"]!.GetValue<double>();
            Assert.True(ms > 0);
            Assert.Equal(2 * 16 / (ms / 1e3), tps, tps * 1e-3 + 0.01);   // tokens/s = batch·L per call
            Assert.Equal(1, r["runs"]!.GetValue<int>());
        }
        Assert.Contains("cores", doc["device"]!.GetValue<string>());   // the engine's device words, so both sides name one machine
    }

    [Fact]
    public void TheTorchSamplerPeerRunsOnTheCpuAndCountsItsFunctionEvaluations()
    {
        var doc = RunPeer("bench/flex/sampler.py", "--device", "cpu", "--model", "tiny", "--vocab", "40", "--L", "32", "--Lp", "4",
            "--batch", "2", "--tokens", "8", "--repeat", "1");
        var r = doc["results"]!.AsArray().Single()!;
        Assert.Equal("sample", r["suite"]!.GetValue<string>());
        Assert.Equal("cpu", r["backend"]!.GetValue<string>());
        Assert.Equal(new Dictionary<string, string>
        {
            ["B"] = "2", ["H"] = "4", ["L"] = "32", ["Lp"] = "4", ["d"] = "64", ["dtype"] = "fp32", ["V"] = "40", ["width"] = "256", ["layers"] = "4",
            ["tokens"] = "8", ["steps"] = "4",
        }, Shape(r));
        // BOS + 8 tokens = 3 blocks of 4; each block takes between 1 and T = 4 function evaluations
        int nfe = r["nfe"]!.GetValue<int>();
        Assert.InRange(nfe, 3, 12);
        Assert.Equal(2 * 8 / (r["ms"]!.GetValue<double>() / 1e3), r["tokens_per_s"]!.GetValue<double>(), 0.05);
    }

    [Fact]
    public void TheTorchAttentionPeerIsCreditedWithTheAllowedPairsOfTheBd3Mask()
    {
        var doc = RunPeer("bench/cpu/torch_attention.py", "--L", "64", "--Lp", "4", "--B", "1", "--H", "2", "--d", "16", "--warmup", "0", "--runs", "1");
        var bySuite = doc["results"]!.AsArray().ToDictionary(r => r!["suite"]!.GetValue<string>(), r => r!);
        Assert.Equal(["attn_bd3_fwd", "attn_bd3_bwd", "attn_bd3_fwd_bwd"], bySuite.Keys);
        // 2L = 128 tokens, L' = 4, n = 16 blocks: noisy queries see their own block and the earlier clean blocks, clean
        // queries the clean blocks up to their own: 16·(16 + 120) + 16·136 = 4352 allowed pairs per head
        double pairs = 4352, fwdFlops = 4.0 * 16 * pairs * 1 * 2;
        foreach (var (suite, factor) in new[] { ("attn_bd3_fwd", 1.0), ("attn_bd3_bwd", 2.5), ("attn_bd3_fwd_bwd", 3.5) })
        {
            var r = bySuite[suite];
            double flops = r["tflops"]!.GetValue<double>() * 1e12 * r["ms"]!.GetValue<double>() * 1e-3;
            Assert.Equal(factor * fwdFlops, flops, factor * fwdFlops * 0.05);   // tflops has 7 decimals in the file
        }
        Assert.Equal(bySuite["attn_bd3_fwd"]["ms"]!.GetValue<double>() + bySuite["attn_bd3_bwd"]["ms"]!.GetValue<double>(),
            bySuite["attn_bd3_fwd_bwd"]["ms"]!.GetValue<double>(), 1e-3);
    }
}
