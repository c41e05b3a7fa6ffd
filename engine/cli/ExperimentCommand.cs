using System.CommandLine;
using System.Globalization;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Experiments;

namespace FastBlockDiff.Cli;

/// <summary>
/// `experiment`: AR, BD3-LM for several L' and MDLM on one token budget, the schedule ablation and generation,
/// reported as results.md / results.json / PNG plots (see docs/experiments.md).
/// </summary>
public static class ExperimentCommand
{
    public static Command Create()
    {
        var data = new Option<string?>("--data") { Description = "corpus: text file, folder of .txt, or .jsonl" };
        var outDir = new Option<string?>("--out") { Description = "output directory (results.md, results.json, *.png, models/)" };
        var preset = new Option<string>("--preset") { Description = "default (3 seeds of the paper's recipe, 2 CPU cores, ~35 min on Brown), small (one GPU) or quick (seconds)", DefaultValueFactory = _ => "default" };
        var config = new Option<string?>("--config") { Description = "JSON configuration (snake_case keys of ExperimentConfig) applied over the preset" };
        var model = new Option<string?>("--model") { Description = "tiny, small or custom" };
        var hidden = new Option<int?>("--hidden-dim");
        var layers = new Option<int?>("--layers");
        var heads = new Option<int?>("--heads");
        var seqLen = new Option<int?>("--seq-len") { Description = "sequence length L" };
        var steps = new Option<int?>("--steps") { Description = "optimiser steps per model (per fine-tune with --pretrain-steps)" };
        var pretrain = new Option<int?>("--pretrain-steps") { Description = "steps of the shared MDLM pre-train the diffusion models are fine-tuned from (0 = all from scratch)" };
        var seeds = new Option<string?>("--seeds") { Description = "seeds of repeated runs, comma separated (e.g. 1,2,3): perplexities as mean ± std" };
        var noise = new Option<string?>("--noise-schedule") { Description = "linear, square, sqrt, log or cosine" };
        var budget = new Option<long?>("--token-budget") { Description = "training tokens per model (overrides --steps)" };
        var batch = new Option<int?>("--batch-size");
        var lr = new Option<float?>("--lr");
        var blockSizes = new Option<string?>("--block-sizes") { Description = "BD3-LM block sizes, comma separated (e.g. 4,8,16)" };
        var noAr = new Option<bool>("--no-ar") { Description = "skip the AR baseline (no generative perplexity then)" };
        var noMdlm = new Option<bool>("--no-mdlm") { Description = "skip the MDLM baseline" };
        var ablation = new Option<int?>("--ablation-block-size") { Description = "L' of the schedule ablation (0 = none)" };
        var samples = new Option<int?>("--samples") { Description = "samples generated per model (0 = none)" };
        var maxTokens = new Option<int?>("--sample-max-tokens");
        var evalSeqs = new Option<int?>("--eval-sequences") { Description = "validation rows per model (0 = the whole split)" };
        var seed = new Option<ulong?>("--seed") { Description = "one seed (instead of the preset's --seeds)" };
        var backend = new Option<string?>("--backend") { Description = "auto, cpu, cuda or ilgpu" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "byte (bits per byte), gpt2:DIR, ..." };
        var cmd = new Command("experiment", "AR vs BD3-LM (several L') vs MDLM on one budget, schedule ablation, generation: tables and plots")
        {
            data, outDir, preset, config, model, hidden, layers, heads, seqLen, steps, budget, batch, lr, blockSizes, noAr, noMdlm,
            ablation, samples, maxTokens, evalSeqs, seed, backend, tokenizer, pretrain, seeds, noise,
        };
        cmd.SetAction(r => CliRunner.Run(cancel =>
        {
            var c = ExperimentConfig.ForPreset(r.GetValue(preset)!);
            if (r.GetValue(config) is { } file) c = ExperimentConfig.Load(file, c);
            c = c with
            {
                DataPath = r.GetValue(data) ?? c.DataPath, OutputDirectory = r.GetValue(outDir) ?? c.OutputDirectory,
                ModelSize = r.GetValue(model) ?? c.ModelSize, SeqLen = r.GetValue(seqLen) ?? c.SeqLen,
                Steps = r.GetValue(steps) ?? c.Steps, TokenBudget = r.GetValue(budget) ?? c.TokenBudget, BatchSize = r.GetValue(batch) ?? c.BatchSize,
                LearningRate = r.GetValue(lr) ?? c.LearningRate, IncludeAr = c.IncludeAr && !r.GetValue(noAr), IncludeMdlm = c.IncludeMdlm && !r.GetValue(noMdlm),
                AblationBlockSize = r.GetValue(ablation) ?? c.AblationBlockSize, Samples = r.GetValue(samples) ?? c.Samples,
                SampleMaxTokens = r.GetValue(maxTokens) ?? c.SampleMaxTokens, EvalSequences = r.GetValue(evalSeqs) ?? c.EvalSequences,
                Seed = r.GetValue(seed) ?? c.Seed, Backend = r.GetValue(backend) ?? c.Backend, Tokenizer = r.GetValue(tokenizer) ?? c.Tokenizer,
            };
            if (r.GetValue(hidden) is { } h) c = c with { HiddenDim = h };
            if (r.GetValue(layers) is { } l) c = c with { Layers = l };
            if (r.GetValue(heads) is { } hd) c = c with { Heads = hd };
            if (r.GetValue(blockSizes) is { } bs) c = c with { BlockSizes = ParseList(bs, "--block-sizes") };
            if (r.GetValue(pretrain) is { } pre) c = c with { PretrainSteps = pre };
            if (r.GetValue(noise) is { } n) c = c with { NoiseSchedule = n };
            if (r.GetValue(seed) is not null) c = c with { Seeds = [] };
            if (r.GetValue(seeds) is { } ss) c = c with { Seeds = [.. ParseList(ss, "--seeds").Select(x => x >= 0 ? (ulong)x : throw new UserInputException($"--seeds '{ss}': seeds must be ≥ 0"))] };
            var lastLine = DateTime.MinValue;
            var observer = new ExperimentObserver
            {
                OnMessage = m => Console.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}] {m}"),
                OnStep = (name, i, n, p) =>
                {
                    if (p.Step != p.TotalSteps && (DateTime.UtcNow - lastLine).TotalSeconds < 15) return;
                    lastLine = DateTime.UtcNow;
                    Console.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}]   {name} ({i + 1}/{n}) step {p.Step}/{p.TotalSteps} loss {p.Loss:F4} {p.TokensPerSecond:N0} tok/s eta {p.Eta:hh\\:mm\\:ss}");
                },
                Plotter = ExperimentPlots.Write,
            };
            var result = ExperimentRunner.Run(c, observer, cancel);
            Console.WriteLine();
            Console.WriteLine(result.ToMarkdown());
            return result.Complete ? 0 : 130;
        }));
        return cmd;
    }

    static int[] ParseList(string s, string option)
    {
        try { return [.. s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x => int.Parse(x, CultureInfo.InvariantCulture))]; }
        catch (Exception e) when (e is FormatException or OverflowException) { throw new UserInputException($"{option} '{s}': expected comma-separated integers such as {(option == "--seeds" ? "1,2,3" : "4,8,16")}"); }
    }
}

/// <summary>The experiment's PNG plots (ScottPlot): perplexity against L', and the schedule ablation.</summary>
public static class ExperimentPlots
{
    public static IReadOnlyList<string> Write(ExperimentResult result, string dir)
    {
        var written = new List<string>();
        // one point per reported model: the mean over seeds, with its std as an error bar
        var models = result.Summary.OrderBy(m => m.BlockSize).ToList();
        if (models.Count > 0)
        {
            var plot = new ScottPlot.Plot();
            double[] xs = [.. models.Select(m => Math.Log2(m.BlockSize))], ys = [.. models.Select(m => m.Perplexity)];
            var line = plot.Add.Scatter(xs, ys);
            line.LineWidth = 2; line.MarkerSize = 9;
            line.LegendText = $"validation PPL, mean over {result.Config.SeedList.Count} seed(s) (AR: exact NLL; others: NELBO bound)";
            if (models.Any(m => m.Seeds > 1)) plot.Add.ErrorBar(xs, ys, [.. models.Select(m => m.PerplexityStd)]);
            foreach (var m in models)
            {
                var t = plot.Add.Text($"{m.Perplexity:F2}", Math.Log2(m.BlockSize), m.Perplexity);
                t.LabelFontSize = 12; t.OffsetY = -8;
            }
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(xs,
                [.. models.Select(m => m.Kind switch { "ar" => "1 (AR)", "mdlm" => $"{m.BlockSize} (MDLM)", _ => $"{m.BlockSize}" })]);
            plot.Title("Perplexity against block size L'");
            plot.XLabel("block size L' (log scale)"); plot.YLabel("validation perplexity");
            plot.ShowLegend();
            Save(plot, Path.Combine(dir, "ppl_vs_block_size.png"));
            written.Add("ppl_vs_block_size.png");
        }
        if (result.Ablation.Count > 0)
        {
            var plot = new ScottPlot.Plot();
            var a = result.Ablation;
            double[] pos = [.. Enumerable.Range(0, a.Count).Select(i => (double)i)];
            var bars = plot.Add.Bars(pos, [.. a.Select(x => x.NelboVariance)]);
            bars.LegendText = "NELBO variance (training estimator)";
            for (int i = 0; i < a.Count; i++)
            {
                var t = plot.Add.Text($"PPL {a[i].Perplexity:F2}", i, a[i].NelboVariance);
                t.LabelFontSize = 12; t.OffsetY = -8; t.LabelAlignment = ScottPlot.Alignment.LowerCenter;
            }
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(pos,
                [.. a.Select(x => $"{x.Name}\n({x.Min:0.##}, {x.Max:0.##})")]);
            plot.Axes.Margins(bottom: 0, top: 0.2);
            plot.Title($"Schedule ablation, L' = {result.Config.AblationBlockSize}");
            plot.YLabel("variance of the per-sequence NELBO");
            plot.ShowLegend(ScottPlot.Alignment.UpperRight);
            Save(plot, Path.Combine(dir, "schedule_ablation.png"));
            written.Add("schedule_ablation.png");
        }
        return written;
    }

    static void Save(ScottPlot.Plot plot, string path)
    {
        string tmp = path + ".tmp.png";
        plot.SavePng(tmp, 900, 550);
        File.Move(tmp, path, overwrite: true);
    }
}
