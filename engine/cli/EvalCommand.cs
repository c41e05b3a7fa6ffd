using System.CommandLine;
using FastBlockDiff.Engine;

namespace FastBlockDiff.Cli;

/// <summary>`eval`: validation NELBO → perplexity (and bits per byte for byte-level models).</summary>
static class EvalCommand
{
    public static Command Create()
    {
        var ckpt = new Option<string>("--checkpoint") { Description = "directory with config.json + model.safetensors", Required = true };
        var data = new Option<string>("--data") { Description = "corpus to evaluate on", Required = true };
        var all = new Option<bool>("--all-rows") { Description = "every row of the corpus instead of its validation split" };
        var max = new Option<int>("--max-sequences") { Description = "evaluate at most N rows (0 = all)", DefaultValueFactory = _ => 0 };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 8 };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "override the tokenizer of config.json" };
        var backend = new Option<string>("--backend") { DefaultValueFactory = _ => "auto" };
        var noise = new Option<string?>("--noise-schedule") { Description = "linear, square, sqrt, log or cosine (default: the checkpoint's noise_type)" };
        var allowNonFinite = AllowNonFiniteOption.Create();
        var cmd = new Command("eval", "validation NELBO and perplexity (t ~ U[1e-3, 1])") { ckpt, data, all, max, batch, tokenizer, backend, allowNonFinite, noise };
        cmd.SetAction(r => CliRunner.Run(cancel =>
        {
            if (r.GetValue(batch) <= 0) throw new UserInputException($"--batch-size must be positive, got {r.GetValue(batch)}");
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
}
