using System.CommandLine;
using FastBlockDiff.Engine;

namespace FastBlockDiff.Cli;

/// <summary>`eval`: validation NELBO → perplexity (and bits per byte for byte-level models), or with --gen-ppl the
/// generative perplexity of a file of samples under an L' = 1 scorer, as bd3lms computes it.</summary>
static class EvalCommand
{
    public static Command Create()
    {
        var ckpt = new Option<string?>("--checkpoint") { Description = "directory with config.json + model.safetensors" };
        var data = new Option<string?>("--data") { Description = "corpus to evaluate on" };
        var genPpl = new Option<bool>("--gen-ppl") { Description = "generative perplexity of --samples under --scorer (per-sample, averaged, EOS excluded)" };
        var scorer = new Option<string?>("--scorer") { Description = "--gen-ppl: checkpoint of an L' = 1 model (e.g. the experiment's models/ar)" };
        var samplesFile = new Option<string?>("--samples") { Description = "--gen-ppl: .jsonl of {\"text\": ...} or one sample per line" };
        var all = new Option<bool>("--all-rows") { Description = "every row of the corpus instead of its validation split" };
        var max = new Option<int>("--max-sequences") { Description = "evaluate at most N rows (0 = all)", DefaultValueFactory = _ => 0 };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 8 };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "override the tokenizer of config.json" };
        var backend = new Option<string>("--backend") { DefaultValueFactory = _ => "auto" };
        var noise = new Option<string?>("--noise-schedule") { Description = "linear, square, sqrt, log or cosine (default: the checkpoint's noise_type)" };
        var allowNonFinite = AllowNonFiniteOption.Create();
        var cmd = new Command("eval", "validation NELBO and perplexity (t ~ U[1e-3, 1])") { ckpt, data, all, max, batch, tokenizer, backend, allowNonFinite, noise, genPpl, scorer, samplesFile };
        cmd.SetAction(r => CliRunner.Run(cancel =>
        {
            if (r.GetValue(batch) <= 0) throw new UserInputException($"--batch-size must be positive, got {r.GetValue(batch)}");
            if (r.GetValue(genPpl)) return GenerativePerplexity(r.GetValue(scorer), r.GetValue(samplesFile), r.GetValue(batch), r.GetValue(tokenizer), r.GetValue(backend)!, r.GetValue(allowNonFinite));
            if (r.GetValue(ckpt) is null || r.GetValue(data) is null) throw new UserInputException("eval needs --checkpoint DIR and --data PATH (or --gen-ppl --scorer DIR --samples FILE)");
            if (r.GetValue(max) < 0) throw new UserInputException($"--max-sequences must be ≥ 0 (0 = all), got {r.GetValue(max)}");
            Engine.Data.Corpus.RequireReadable(r.GetValue(data)!);
            var noiseKind = r.GetValue(noise) is { } n ? Engine.Training.NoiseSchedule.Parse(n) : (Engine.Training.NoiseKind?)null;
            using var model = BlockDiffusionModel.Load(r.GetValue(ckpt)!, r.GetValue(tokenizer), r.GetValue(backend)!, r.GetValue(allowNonFinite));
            Console.Error.WriteLine($"backend {model.BackendReason}");
            var e = model.Evaluate(r.GetValue(data)!, r.GetValue(batch), r.GetValue(max), r.GetValue(all), cancel: cancel, noise: noiseKind);
            Console.WriteLine($"NELBO {e.Nelbo:F4} nats/token (±{Math.Sqrt(e.Variance / e.Sequences):F4}), perplexity {e.Perplexity:F3}" +
                (model.Tokenizer.Name == "byte" ? $", {e.BitsPerToken:F4} bits/byte" : "") + $", {e.Sequences} sequences, {e.Tokens:N0} tokens");
            return 0;
        }));
        return cmd;
    }

    static int GenerativePerplexity(string? scorerDir, string? samplesPath, int batch, string? tokenizer, string backend, bool allowNonFinite)
    {
        if (scorerDir is null || samplesPath is null) throw new UserInputException("--gen-ppl needs --scorer DIR (an L' = 1 checkpoint) and --samples FILE");
        var texts = Engine.Experiments.SampleFile.Read(samplesPath);
        using var model = BlockDiffusionModel.Load(scorerDir, tokenizer, backend, allowNonFinite);
        if (model.Config.BlockSize != 1)
            throw new UserInputException($"--scorer '{scorerDir}' has L' = {model.Config.BlockSize}; generative perplexity needs an autoregressive (L' = 1) model, e.g. the experiment's models/ar");
        var tok = model.Tokenizer;
        var scores = new Engine.Experiments.ArScorer(model.Denoiser, tok.BosId, tok.PadId ?? tok.EosId, batch)
            .ScoreEach([.. texts.Select(tok.Encode)], excludeTarget: tok.EosId);
        var g = Engine.Experiments.GenerativePerplexity.FromScores(scores);
        if (g.Samples == 0) throw new UserInputException($"--samples '{samplesPath}': no sample has a token to score");
        Console.WriteLine($"generative perplexity {g.Mean:F3} ± {g.Std:F3} (mean ± std over {g.Samples} samples, EOS excluded); pooled {g.Pooled:F3}; {scores.Sum(s => s.Tokens):N0} tokens");
        return 0;
    }
}
