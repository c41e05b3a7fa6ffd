using System.CommandLine;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Serving;

namespace FastBlockDiff.Cli;

/// <summary>`serve`: the OpenAI-compatible HTTP server over one checkpoint, with requests batched together.</summary>
static class ServeCommand
{
    public static Command Create()
    {
        var ckpt = new Option<string>("--checkpoint") { Description = "directory with config.json + model.safetensors", Required = true };
        var host = new Option<string>("--host") { Description = "address to listen on", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { DefaultValueFactory = _ => 8000 };
        var maxBatch = new Option<int>("--max-batch") { Description = "most requests denoised together", DefaultValueFactory = _ => 16 };
        var maxQueue = new Option<int>("--max-queue") { Description = "most requests waiting; more get 429", DefaultValueFactory = _ => 256 };
        var maxTokens = new Option<int>("--max-tokens-limit") { Description = "most tokens one request may generate", DefaultValueFactory = _ => 4096 };
        var maxBody = new Option<long>("--max-body-bytes") { Description = "largest request body", DefaultValueFactory = _ => 1L << 20 };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "override the tokenizer of config.json (e.g. gpt2:DIR)" };
        var backend = new Option<string>("--backend") { DefaultValueFactory = _ => "auto" };
        var cmd = new Command("serve", "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /metrics)")
        { ckpt, host, port, maxBatch, maxQueue, maxTokens, maxBody, tokenizer, backend };
        cmd.SetAction(r => CliRunner.Run(cancel =>
        {
            int p = r.GetValue(port);
            if (p is < 0 or > 65535) throw new UserInputException($"--port must be in [0, 65535], got {p}");
            if (r.GetValue(maxTokens) <= 0) throw new UserInputException($"--max-tokens-limit must be positive, got {r.GetValue(maxTokens)}");
            if (r.GetValue(maxBody) <= 0) throw new UserInputException($"--max-body-bytes must be positive, got {r.GetValue(maxBody)}");
            string dir = r.GetValue(ckpt)!;
            using var model = BlockDiffusionModel.Load(dir, r.GetValue(tokenizer), r.GetValue(backend)!);
            using var scheduler = new RequestScheduler(model, r.GetValue(maxBatch), r.GetValue(maxQueue));
            string id = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)));
            var app = OpenAiServer.Build(scheduler, id, new ServerOptions
            {
                Host = r.GetValue(host)!, Port = p, MaxTokens = r.GetValue(maxTokens), MaxBodyBytes = r.GetValue(maxBody),
            });
            Console.Error.WriteLine($"backend {model.BackendReason}; serving '{id}' on http://{r.GetValue(host)}:{p} (Ctrl+C stops)");
            Microsoft.Extensions.Hosting.HostingAbstractionsHostExtensions.RunAsync(app, cancel).GetAwaiter().GetResult();
            return 0;
        }));
        return cmd;
    }
}
