using System.CommandLine;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Sampling;

namespace FastBlockDiff.Cli;

/// <summary>`sample`: block-by-block generation with the KV cache, streamed to stdout.</summary>
static class SampleCommand
{
    public static Command Create()
    {
        var ckpt = new Option<string>("--checkpoint") { Description = "directory with config.json + model.safetensors", Required = true };
        var maxTokens = new Option<int>("--max-tokens") { Description = "most tokens to generate", DefaultValueFactory = _ => 256 };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 0UL };
        var prompt = new Option<string>("--prompt") { Description = "text the generation continues", DefaultValueFactory = _ => "" };
        var batch = new Option<int>("--batch") { Description = "sequences sampled together", DefaultValueFactory = _ => 1 };
        var steps = new Option<int>("--steps") { Description = "denoising steps T per block (0 = block size)", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { DefaultValueFactory = _ => 0.9f };
        var temperature = new Option<float>("--temperature") { DefaultValueFactory = _ => 1f };
        var sampler = new Option<string>("--sampler") { Description = "ddpm, first-hitting or confidence", DefaultValueFactory = _ => "first-hitting" };
        var confidence = new Option<float>("--confidence") { Description = "threshold of the confidence sampler", DefaultValueFactory = _ => 0.9f };
        var noCache = new Option<bool>("--no-kv-cache") { Description = "recompute the whole prefix every step (for comparison)" };
        var noEos = new Option<bool>("--fixed-length") { Description = "the reference's fixed-length mode: do not stop at EOS; regenerate a low-entropy sample" };
        noEos.Aliases.Add("--ignore-eos");
        var entropy = new Option<float?>("--entropy-stop") { Description = "stop when the token entropy of the last 256 tokens falls below this (nats; 0 = never)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "override the tokenizer of config.json (e.g. gpt2:DIR)" };
        var backend = new Option<string>("--backend") { DefaultValueFactory = _ => "auto" };
        var allowNonFinite = AllowNonFiniteOption.Create();
        var cmd = new Command("sample", "generate text block by block with the KV cache")
        { ckpt, maxTokens, seed, prompt, batch, steps, topP, temperature, sampler, confidence, noCache, noEos, entropy, tokenizer, backend, allowNonFinite };
        cmd.SetAction(r => CliRunner.Run(cancel =>
        {
            var kind = r.GetValue(sampler) switch
            {
                "ddpm" => SamplerKind.Ddpm,
                "first-hitting" => SamplerKind.FirstHitting,
                "confidence" => SamplerKind.Confidence,
                var s => throw new UserInputException($"unknown sampler '{s}': use ddpm, first-hitting or confidence"),
            };
            var opts = new SamplingOptions
            {
                MaxTokens = r.GetValue(maxTokens), Seed = r.GetValue(seed), BatchSize = r.GetValue(batch), StepsPerBlock = r.GetValue(steps),
                TopP = r.GetValue(topP), Temperature = r.GetValue(temperature), Kind = kind, ConfidenceThreshold = r.GetValue(confidence),
                UseKvCache = !r.GetValue(noCache), StopOnEos = !r.GetValue(noEos), EntropyThreshold = r.GetValue(entropy),
            };
            opts.Validate();
            Engine.Model.MemoryEstimate.ForInference(Engine.Checkpoints.ModelCheckpoint.LoadConfig(r.GetValue(ckpt)!), opts.BatchSize).EnsureFits("use a smaller --batch");
            using var model = BlockDiffusionModel.Load(r.GetValue(ckpt)!, r.GetValue(tokenizer), r.GetValue(backend)!, r.GetValue(allowNonFinite));
            Console.Error.WriteLine($"backend {model.BackendReason}; L={model.Config.ModelLength}, L'={model.Config.BlockSize}, sampler {kind}, KV cache {(opts.UseKvCache ? "on" : "off")}");
            string p = r.GetValue(prompt)!;
            bool stream = opts.BatchSize == 1;
            if (stream) Console.Write(p);
            var (texts, result) = model.Sample(p, opts, (s, piece) => { if (stream) Console.Write(piece); }, cancel);
            if (stream) Console.WriteLine();
            else
                for (int i = 0; i < texts.Length; i++) Console.WriteLine($"--- sample {i} ({result.Tokens[i].Length} tokens, {result.Reasons[i]})\n{p}{texts[i]}");
            Console.Error.WriteLine($"generated {result.GeneratedTokens} tokens in {result.Elapsed.TotalSeconds:F2} s: {result.TokensPerSecond:N1} tokens/s, " +
                $"{result.Nfe} NFEs (+{result.CachePasses} cache passes), stop: {string.Join(", ", result.Reasons.Distinct())}");
            return 0;
        }));
        return cmd;
    }
}
