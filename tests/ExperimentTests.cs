using System.CommandLine;
using System.Text;
using System.Text.Json;
using FastBlockDiff.Cli;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Experiments;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

public sealed class ExperimentTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("fbd-experiment-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    /// <summary>A small deterministic English-like corpus (paragraphs separated by blank lines).</summary>
    string ToyCorpus()
    {
        string[] words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "house", "of", "old", "man", "with", "red", "hat"];
        var r = new Random(5);
        var sb = new StringBuilder();
        for (int p = 0; p < 120; p++)
        {
            for (int s = 0; s < 4; s++)
            {
                int n = 4 + r.Next(6);
                var sentence = string.Join(' ', Enumerable.Range(0, n).Select(_ => words[r.Next(words.Length)]));
                sb.Append(char.ToUpperInvariant(sentence[0])).Append(sentence.AsSpan(1)).Append(". ");
            }
            sb.Append("\n\n");
        }
        string path = Path.Combine(_dir, "toy.txt");
        File.WriteAllText(path, sb.ToString());
        return path;
    }

    int RunCli(string data, string outDir, float lr, int evalSequences, params string[] extra)
    {
        string config = Path.Combine(_dir, "config.json");
        File.WriteAllText(config, """
            {
              // small enough for seconds on a CPU; one seed, every model from scratch
              "seeds": [],
              "pretrain_steps": 0,
              "schedule_search_sequences": 4,
              "ablation_sequences": 8,
              "eval_batch_size": 4,
              "warmup_steps": 1,
              "sample_entropy_threshold": 0,
              "schedule_grid": [[0, 1], [0.3, 0.8], [0.2, 0.9]],
            }
            """);
        var root = new RootCommand { ExperimentCommand.Create() };
        string[] args =
        [
            "experiment", "--data", data, "--out", outDir, "--config", config, "--backend", "cpu",
            "--model", "custom", "--hidden-dim", "16", "--layers", "1", "--heads", "2", "--seq-len", "32",
            "--steps", "3", "--batch-size", "4", "--lr", lr.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--block-sizes", "4,8", "--eval-sequences", evalSequences.ToString(System.Globalization.CultureInfo.InvariantCulture), "--samples", "2", "--sample-max-tokens", "40", .. extra,
        ];
        return root.Parse(args).Invoke();
    }

    static void AssertTablesWellFormed(string markdown)
    {
        var lines = markdown.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        int tables = 0;
        for (int i = 0; i < lines.Length; i++)
        {
            if (!lines[i].StartsWith('|') || (i > 0 && lines[i - 1].StartsWith('|'))) continue;
            tables++;
            int columns = lines[i].Count(c => c == '|');
            Assert.True(i + 1 < lines.Length && lines[i + 1].StartsWith("|---", StringComparison.Ordinal), $"table at line {i + 1} has no separator row");
            int rows = 0;
            for (int j = i; j < lines.Length && lines[j].StartsWith('|'); j++, rows++)
            {
                Assert.EndsWith("|", lines[j]);
                Assert.Equal(columns, lines[j].Count(c => c == '|'));
            }
            Assert.True(rows >= 3, $"table at line {i + 1} has no data row");
        }
        Assert.True(tables >= 4, $"expected the likelihood, search, ablation and generation tables, found {tables}");
    }

    [Fact]
    public void Pipeline_on_a_toy_corpus_writes_every_artefact_with_well_formed_tables()
    {
        string data = ToyCorpus(), outDir = Path.Combine(_dir, "out");
        Assert.Equal(0, RunCli(data, outDir, 3e-3f, 8));

        foreach (var f in new[] { "results.md", "results.json", "config.json", "ppl_vs_block_size.png", "schedule_ablation.png" })
            Assert.True(File.Exists(Path.Combine(outDir, f)), $"{f} missing");
        foreach (var png in Directory.GetFiles(outDir, "*.png"))
            Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(png)[..4]);

        var r = ExperimentResult.FromJson(File.ReadAllText(Path.Combine(outDir, "results.json")));
        Assert.True(r.Complete);
        Assert.Equal(["AR", "BD3-LM L'=4", "BD3-LM L'=8", "MDLM", "ablation L'=4 linear", "ablation L'=4 clipped"], r.Models.Select(m => m.Name));
        Assert.Equal([1, 4, 8, 32, 4, 4], r.Models.Select(m => m.BlockSize));
        Assert.All(r.Models, m =>
        {
            Assert.True(double.IsFinite(m.Nelbo) && m.Nelbo > 0, $"{m.Name}: NELBO {m.Nelbo}");
            Assert.Equal(Math.Exp(m.Nelbo), m.Perplexity, 1e-9);
            Assert.Equal(m.Nelbo / Math.Log(2), m.BitsPerToken, 1e-9);
            Assert.Equal(3L * 4 * 32, m.TrainTokens);   // the same token budget for every model
            Assert.True(File.Exists(Path.Combine(m.CheckpointDirectory!, "model.safetensors")));
        });
        var ar = r.Models[0];
        Assert.Equal("AR NLL (t = 1)", ar.Objective);
        Assert.Equal((1f, 1f), (ar.ScheduleMin, ar.ScheduleMax));
        var bd3 = r.Models[1];
        Assert.Equal(3, bd3.ScheduleSearch!.Count);
        Assert.Equal(bd3.ScheduleSearch!.MinBy(c => c.Variance)!.Min, bd3.ScheduleMin);
        Assert.Equal((0f, 1f), (r.Models[3].ScheduleMin, r.Models[3].ScheduleMax));   // MDLM: linear

        Assert.Equal(["linear U[0, 1]", "clipped U[0.3, 0.8]", "searched (β, ω)"], r.Ablation.Select(a => a.Name));
        Assert.All(r.Ablation, a => Assert.True(double.IsFinite(a.NelboVariance) && a.NelboVariance >= 0));

        Assert.Equal(r.Models.Count, r.Generation.Count);
        Assert.All(r.Generation, g =>
        {
            Assert.Equal(2, g.Samples);
            Assert.InRange(g.MaxLength, 1, 40);
            Assert.True(g.Nfe > 0 && g.TokensPerSecond > 0);
            Assert.True(g.GenerativePerplexity is > 1 and < 1000, $"{g.Model}: gen. PPL {g.GenerativePerplexity}");
        });

        string md = File.ReadAllText(Path.Combine(outDir, "results.md"));
        AssertTablesWellFormed(md);
        Assert.Contains("(exact NLL)", md);
        Assert.Contains("![perplexity against block size](ppl_vs_block_size.png)", md);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "results.json")));
        Assert.Equal(JsonValueKind.Array, doc.RootElement.GetProperty("models").ValueKind);
    }

    [Fact]
    public void Quick_preset_runs_three_seeds_of_pretrain_then_finetune_and_reports_mean_and_std()
    {
        string data = ToyCorpus(), outDir = Path.Combine(_dir, "quick");
        var starts = new List<(string Name, ulong Seed, float[] Weights)>();
        var cfg = ExperimentConfig.ForPreset("quick") with { DataPath = data, OutputDirectory = outDir, Backend = "cpu", LearningRate = 3e-3f };
        var r = ExperimentRunner.Run(cfg, new ExperimentObserver { OnModelStart = (n, s, m) => starts.Add((n, s, m.DownloadWeights())) });
        Assert.True(r.Complete);

        // per seed: AR from scratch, the MDLM pre-train, BD3-LM L'=4 and 8 and MDLM fine-tuned from it; the ablation with the first seed
        string[] perSeed = ["AR", ExperimentRunner.PretrainName, "BD3-LM L'=4", "BD3-LM L'=8", "MDLM"];
        Assert.Equal([.. perSeed, "ablation L'=4 linear", "ablation L'=4 clipped", .. perSeed, .. perSeed], r.Models.Select(m => m.Name));
        Assert.Equal(Enumerable.Repeat(1UL, 7).Concat(Enumerable.Repeat(2UL, 5)).Concat(Enumerable.Repeat(3UL, 5)), r.Models.Select(m => m.Seed));
        foreach (var m in r.Models)
        {
            bool finetune = m.Kind is "bd3" or "mdlm";
            Assert.Equal(finetune ? ExperimentRunner.PretrainName : null, m.InitializedFrom);
            // the same token budget: AR trains pre-train + fine-tune steps from scratch
            Assert.Equal(m.Kind switch { "ar" => 5, "pretrain" => 3, _ => 2 }, m.Steps);
        }

        // the wiring: each fine-tune starts from its own seed's pre-trained (EMA) weights, as saved in its checkpoint
        foreach (ulong seed in new ulong[] { 1, 2, 3 })
        {
            var pre = r.Models.Single(m => m.Seed == seed && m.Kind == "pretrain");
            var preConfig = FastBlockDiff.Engine.Checkpoints.ModelCheckpoint.LoadConfig(pre.CheckpointDirectory!);
            var saved = FastBlockDiff.Engine.Checkpoints.ModelCheckpoint.LoadWeights(pre.CheckpointDirectory!, preConfig, Denoiser.BuildParameterSet(preConfig));
            foreach (var (name, s, w) in starts.Where(x => x.Seed == seed))
            {
                if (name is "AR" || name == ExperimentRunner.PretrainName) Assert.NotEqual(saved, w);
                else Assert.Equal(saved, w);
            }
        }
        var fresh = starts.Where(x => x.Name == ExperimentRunner.PretrainName).Select(x => x.Weights).ToList();
        Assert.NotEqual(fresh[0], fresh[1]);   // seeds differ in their initialisation

        // the summary: mean and sample std over the 3 seeds of every reported model, gen. PPL likewise
        Assert.Equal(["AR", "BD3-LM L'=4", "BD3-LM L'=8", "MDLM"], r.Summary.Select(s => s.Model));
        foreach (var s in r.Summary)
        {
            var ppl = r.Models.Where(m => m.Name == s.Model).Select(m => m.Perplexity).ToArray();
            Assert.Equal(3, s.Seeds);
            Assert.Equal(ppl.Average(), s.Perplexity, 9);
            Assert.Equal(Math.Sqrt(ppl.Sum(p => (p - ppl.Average()) * (p - ppl.Average())) / 2), s.PerplexityStd, 9);
            Assert.True(s.PerplexityStd > 0, $"{s.Model}: three seeds gave the same perplexity");
            var gen = r.Generation.Where(g => g.Model == s.Model).Select(g => g.GenerativePerplexity!.Value).ToArray();
            Assert.Equal(3, gen.Length);
            Assert.Equal(gen.Average(), s.GenerativePerplexity, 9);
        }
        Assert.DoesNotContain(r.Generation, g => g.Model == ExperimentRunner.PretrainName);
        // the ordering, link by link on the means
        Assert.Equal([("AR", "BD3-LM L'=4"), ("BD3-LM L'=4", "BD3-LM L'=8"), ("BD3-LM L'=8", "MDLM")], r.Ordering.Select(o => (o.Lower, o.Higher)));
        foreach (var o in r.Ordering)
        {
            double lo = r.Summary.Single(s => s.Model == o.Lower).Perplexity, hi = r.Summary.Single(s => s.Model == o.Higher).Perplexity;
            Assert.Equal(lo < hi, o.Holds);
            Assert.Equal(hi - lo, o.Gap, 9);
        }
        string md = File.ReadAllText(Path.Combine(outDir, "results.md"));
        AssertTablesWellFormed(md);
        Assert.Contains("## Summary over 3 seeds (mean ± std)", md);
        var ar = r.Summary[0];
        Assert.Contains($"| AR | 1 | 3 | {ar.Perplexity:F3} ± {ar.PerplexityStd:F3} |", md);
        Assert.Contains(r.Ordering.All(o => o.Holds) ? "**holds**" : "**does not hold**", md);
        Assert.True(Directory.Exists(Path.Combine(outDir, "models", "bd3-lm-l-4-seed-2")));
    }

    [Fact]
    public void Untrained_models_have_perplexity_near_the_vocabulary_size()
    {
        // lr 1e-9: the weights stay at their initialisation (zero output layer → uniform over the V-1 non-mask tokens)
        string data = ToyCorpus(), outDir = Path.Combine(_dir, "untrained");
        Assert.Equal(0, RunCli(data, outDir, 1e-9f, 0, "--ablation-block-size", "0"));
        var r = ExperimentResult.FromJson(File.ReadAllText(Path.Combine(outDir, "results.json")));
        double v1 = 259;   // byte tokenizer: 260 ids including MASK
        Assert.Equal(v1, r.Models.Single(m => m.Kind == "ar").Perplexity, 0.01);   // exact: ln 259 per token
        // the diffusion NELBO is ln 259 in expectation, but its estimate is heavy-tailed (rare masks at small t carry
        // weight 1/t), so 26 rows at t ~ U[0, 1] land within about half a nat
        Assert.All(r.Models, m => Assert.InRange(m.Nelbo - Math.Log(v1), -0.7, 0.7));
        // the untrained AR model scores every token at ln 259, whatever the samples are
        Assert.All(r.Generation, g => Assert.Equal(v1, g.GenerativePerplexity!.Value, 0.01));
        Assert.Empty(r.Ablation);
    }

    [Fact]
    public void Fixed_schedule_masks_every_token_with_weight_one_and_is_the_only_degenerate_range()
    {
        NoiseSchedule.Autoregressive.Validate();
        Assert.True(NoiseSchedule.Autoregressive.IsFixed);
        Assert.Throws<UserInputException>(() => new NoiseSchedule(0.6f, 0.3f).Validate());
        Assert.Throws<UserInputException>(() => NoiseSchedule.Fixed(0f).Validate());
        Assert.Throws<UserInputException>(() => NoiseSchedule.Fixed(0.5f).Validate());
        var batch = new Bd3Batch(2, 8, 1);
        var clean = TinyModels.Tokens(16, 12, 3);
        batch.Noise(clean, NoiseSchedule.Autoregressive, 12, new Rng(1), resample: true, ignoreBos: false);
        Assert.All(batch.Noisy, t => Assert.Equal(12, t));
        Assert.All(batch.Weights, w => Assert.Equal(1f, w));
        (TinyModels.Config() with { BlockSize = 1, ScheduleMin = 1f, ScheduleMax = 1f }).Validate();
    }

    [Fact]
    public void ArScorer_matches_the_exact_AR_objective_and_windows_long_samples()
    {
        var config = TinyModels.Config(length: 8, blockSize: 1);
        var model = TinyModels.Random(config);
        int bos = 10, pad = 11;
        var scorer = new ArScorer(model, bos, pad, batchSize: 3);
        // a sample of L-1 tokens = one full row BOS ⊕ sample: equals the t = 1 NELBO of that row minus the BOS position
        var sample = TinyModels.Tokens(7, 10, 4);
        var (nll, n) = scorer.Score([sample]);
        Assert.Equal(7, n);
        var row = new[] { bos }.Concat(sample).ToArray();
        var batch = new Bd3Batch(1, 8, 1);
        var rates = Enumerable.Repeat(1f, 8).ToArray();
        batch.NoiseWithRates(row, rates, config.MaskId, new Rng(0));
        batch.Weights[0] = 0f;
        var obj = new Bd3Objective(model);
        obj.Run(batch, backward: false);
        Assert.Equal(obj.PerSequenceLoss(batch)[0] * 8, nll, 1e-4);
        // a shorter sample is padded, and padding does not change its score (causal)
        var (nllShort, nShort) = scorer.Score([sample[..3]]);
        Assert.Equal(3, nShort);
        Assert.True(nllShort > 0 && nllShort < nll);
        // longer than L: every token is scored exactly once
        var (_, nLong) = scorer.Score([TinyModels.Tokens(30, 10, 5), sample]);
        Assert.Equal(37, nLong);
        Assert.Throws<UserInputException>(() => new ArScorer(TinyModels.Random(TinyModels.Config()), bos, pad));
    }

    [Fact]
    public void Config_file_overrides_the_preset_and_rejects_unknown_keys()
    {
        string path = Path.Combine(_dir, "c.json");
        File.WriteAllText(path, """{ "steps": 7, "block_sizes": [2, 4] }""");
        var c = ExperimentConfig.Load(path, ExperimentConfig.ForPreset("small"));
        Assert.Equal(7, c.Steps);
        Assert.Equal([2, 4], c.BlockSizes);
        Assert.Equal(1024, c.SeqLen);   // from the preset
        Assert.Equal("small", c.Preset);
        Assert.Equal(2, (c with { TokenBudget = 32L * 1024 * 2 - 1, BatchSize = 32 }).StepsPerModel);
        File.WriteAllText(path, """{ "stepz": 7 }""");
        Assert.Throws<UserInputException>(() => ExperimentConfig.Load(path));
        Assert.Throws<UserInputException>(() => ExperimentConfig.ForPreset("huge"));
        Assert.All(ExperimentConfig.ForPreset("default").SearchGrid(), g => Assert.True(g.Max - g.Min >= 0.5f - 1e-6f));
    }
}
