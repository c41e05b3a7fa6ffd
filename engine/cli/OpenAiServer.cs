using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Serving;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FastBlockDiff.Cli;

/// <summary>Limits and address of <see cref="OpenAiServer"/>.</summary>
public sealed record ServerOptions
{
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>0 = any free port (tests read it back from the started app).</summary>
    public int Port { get; init; } = 8000;
    public long MaxBodyBytes { get; init; } = 1 << 20;
    /// <summary>Most tokens one request may ask for (max_tokens) and most tokens a prompt may have.</summary>
    public int MaxTokens { get; init; } = 4096;
    public int MaxPromptTokens { get; init; } = 8192;
}

/// <summary>
/// OpenAI-compatible HTTP over a <see cref="RequestScheduler"/> (ASP.NET Core minimal API): /v1/completions and
/// /v1/chat/completions (JSON or SSE with "stream": true), /v1/models, /health, /metrics (Prometheus text) and the
/// playground page at /.
/// Errors are OpenAI-shaped JSON: 400 for a bad request, 404 for an unknown model, 413 for a body over the limit,
/// 429 when the queue is full. A client that disconnects cancels its request at the next denoising step.
/// </summary>
public static class OpenAiServer
{
    public static WebApplication Build(RequestScheduler scheduler, string modelId, ServerOptions options, Action<ILoggingBuilder>? logging = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = options.MaxBodyBytes);
        builder.WebHost.UseUrls($"http://{options.Host}:{options.Port}");
        if (logging != null) logging(builder.Logging);
        var app = builder.Build();
        var client = new BlockDiffusionChatClient(scheduler, modelId, logger: app.Services.GetRequiredService<ILoggerFactory>().CreateLogger<BlockDiffusionChatClient>());
        var metrics = new ServerMetrics(scheduler);
        var created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

        app.MapGet("/health", () => Results.Text(new JsonObject { ["status"] = "ok", ["model"] = modelId }.ToJsonString(), "application/json"));
        app.MapGet("/metrics", () => Results.Text(metrics.Render(), "text/plain; version=0.0.4"));
        app.MapGet("/v1/models", () => Results.Text(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(new JsonObject { ["id"] = modelId, ["object"] = "model", ["created"] = created, ["owned_by"] = "fastblockdiff" }),
        }.ToJsonString(), "application/json"));
        app.MapPost("/v1/completions", (HttpContext http) => Handle(http, chat: false));
        app.MapPost("/v1/chat/completions", (HttpContext http) => Handle(http, chat: true));
        Playground.Map(app, scheduler, modelId);
        return app;

        async Task Handle(HttpContext http, bool chat)
        {
            metrics.Requests(chat ? "chat" : "completions");
            IAsyncEnumerator<ChatResponseUpdate>? updates = null;
            JsonObject body;
            bool stream, includeUsage;
            try
            {
                body = await ReadBody(http);
                string model = body["model"]?.GetValue<string>() ?? modelId;
                if (model != modelId) { await Error(http, 404, $"The model '{model}' does not exist; this server serves '{modelId}'", "model_not_found", "model"); return; }
                stream = Bool(body, "stream");
                includeUsage = body["stream_options"] is JsonObject so && Bool(so, "include_usage");
                var messages = chat ? Messages(body) : [new ChatMessage(ChatRole.User, Str(body, "prompt") ?? "")];
                var chatOptions = Options(body);
                if (chatOptions.MaxOutputTokens > options.MaxTokens) throw new UserInputException($"max_tokens is {chatOptions.MaxOutputTokens}; this server generates at most {options.MaxTokens}");
                int promptTokens = scheduler.Tokenizer.Encode(PlainTextPrompt.Format(messages)).Length;
                if (promptTokens > options.MaxPromptTokens) throw new UserInputException($"the prompt has {promptTokens} tokens; this server takes at most {options.MaxPromptTokens}");
                updates = client.GetStreamingResponseAsync(messages, chatOptions, http.RequestAborted).GetAsyncEnumerator(http.RequestAborted);
                await updates.MoveNextAsync();   // option and queue errors surface here, before any response is sent
            }
            catch (SchedulerFullException e) { metrics.Rejected(); await Error(http, 429, e.Message, "rate_limit_exceeded"); return; }
            catch (BadHttpRequestException e) when (e.StatusCode == 413) { await Error(http, 413, $"the request body is over the limit of {options.MaxBodyBytes} bytes", "request_too_large"); return; }
            catch (UserInputException e) { await Error(http, 400, e.Message, "invalid_request"); return; }
            catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested) { metrics.Disconnected(); return; }

            string id = (chat ? "chatcmpl-" : "cmpl-") + updates.Current.ResponseId;
            long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            JsonObject Envelope(string kind) => new() { ["id"] = id, ["object"] = kind, ["created"] = now, ["model"] = modelId };
            var text = new StringBuilder();
            try
            {
                if (stream)
                {
                    http.Response.ContentType = "text/event-stream";
                    http.Response.Headers.CacheControl = "no-cache";
                    bool first = true;
                    do
                    {
                        var u = updates.Current;
                        var chunk = Envelope(chat ? "chat.completion.chunk" : "text_completion");
                        var choice = new JsonObject { ["index"] = 0, ["finish_reason"] = u.FinishReason is { } f ? Finish(f) : null };
                        if (chat)
                        {
                            var delta = new JsonObject { ["content"] = u.Text };
                            if (first) delta["role"] = "assistant";
                            choice["delta"] = delta;
                        }
                        else { choice["text"] = u.Text; choice["logprobs"] = null; }
                        chunk["choices"] = new JsonArray(choice);
                        if (u.FinishReason != null && includeUsage) chunk["usage"] = Usage(u);
                        await Sse(http, chunk.ToJsonString());
                        first = false;
                    } while (await updates.MoveNextAsync());
                    await Sse(http, "[DONE]");
                }
                else
                {
                    ChatResponseUpdate last;
                    do { last = updates.Current; text.Append(last.Text); } while (await updates.MoveNextAsync());
                    var response = Envelope(chat ? "chat.completion" : "text_completion");
                    var choice = new JsonObject { ["index"] = 0, ["finish_reason"] = Finish(last.FinishReason!.Value) };
                    if (chat) choice["message"] = new JsonObject { ["role"] = "assistant", ["content"] = text.ToString() };
                    else { choice["text"] = text.ToString(); choice["logprobs"] = null; }
                    response["choices"] = new JsonArray(choice);
                    response["usage"] = Usage(last);
                    await Results.Text(response.ToJsonString(), "application/json").ExecuteAsync(http);
                }
            }
            catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested) { metrics.Disconnected(); }
            finally { await updates.DisposeAsync(); }
        }
    }

    static async Task<JsonObject> ReadBody(HttpContext http)
    {
        JsonNode? node;
        try { node = await JsonNode.ParseAsync(http.Request.Body, cancellationToken: http.RequestAborted); }
        catch (JsonException e) { throw new UserInputException($"the request body is not valid JSON: {e.Message}"); }
        return node as JsonObject ?? throw new UserInputException("the request body must be a JSON object");
    }

    static IList<ChatMessage> Messages(JsonObject body)
    {
        if (body["messages"] is not JsonArray list || list.Count == 0) throw new UserInputException("'messages' must be a non-empty array");
        return [.. list.Select((m, i) =>
        {
            if (m is not JsonObject o) throw new UserInputException($"messages[{i}] must be an object");
            string role = Str(o, "role") ?? throw new UserInputException($"messages[{i}].role is missing");
            string content = o["content"] switch
            {
                null => "",
                JsonValue v when v.TryGetValue(out string? s) => s,
                JsonArray parts => string.Concat(parts.Select(p => p?["text"]?.GetValue<string>() ?? "")),
                _ => throw new UserInputException($"messages[{i}].content must be a string or an array of text parts"),
            };
            return new ChatMessage(new ChatRole(role), content);
        })];
    }

    static ChatOptions Options(JsonObject body)
    {
        var o = new ChatOptions
        {
            MaxOutputTokens = Int(body, "max_completion_tokens") ?? Int(body, "max_tokens"),
            Temperature = Float(body, "temperature"),
            TopP = Float(body, "top_p"),
            Seed = body["seed"] is { } s ? Number<long>(s, "seed") : null,
            AdditionalProperties = [],
        };
        o.StopSequences = body["stop"] switch
        {
            null => null,
            JsonValue v when v.TryGetValue(out string? one) => [one],
            JsonArray a => [.. a.Select(x => x?.GetValue<string>() ?? throw new UserInputException("'stop' must hold strings"))],
            _ => throw new UserInputException("'stop' must be a string or an array of strings"),
        };
        foreach (var key in new[] { ChatOptionsMapping.Sampler, ChatOptionsMapping.Steps, ChatOptionsMapping.Confidence, ChatOptionsMapping.StopOnEos, ChatOptionsMapping.EntropyStop, ChatOptionsMapping.EntropyWindow })
            if (body[key] is { } v) o.AdditionalProperties[key] = v.ToString();
        return o;
    }

    static bool Bool(JsonObject o, string key) => o[key] switch
    {
        null => false,
        JsonValue v when v.TryGetValue(out bool b) => b,
        _ => throw new UserInputException($"'{key}' must be true or false"),
    };
    static string? Str(JsonObject o, string key) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        _ => throw new UserInputException($"'{key}' must be a string"),
    };
    static int? Int(JsonObject o, string key) => o[key] is { } v ? Number<int>(v, key) : null;
    static float? Float(JsonObject o, string key) => o[key] is { } v ? Number<float>(v, key) : null;
    static T Number<T>(JsonNode v, string key)
    {
        try { return v.GetValue<T>(); }
        catch (Exception e) when (e is InvalidOperationException or FormatException or OverflowException) { throw new UserInputException($"'{key}' must be a number in range, got {v.ToJsonString()}"); }
    }

    static string Finish(ChatFinishReason f) => f == ChatFinishReason.Length ? "length" : "stop";

    static JsonObject Usage(ChatResponseUpdate final)
    {
        var u = final.Contents.OfType<UsageContent>().Single().Details;
        return new JsonObject { ["prompt_tokens"] = u.InputTokenCount, ["completion_tokens"] = u.OutputTokenCount, ["total_tokens"] = u.TotalTokenCount };
    }

    static async Task Sse(HttpContext http, string data)
    {
        await http.Response.WriteAsync($"data: {data}\n\n", http.RequestAborted);
        await http.Response.Body.FlushAsync(http.RequestAborted);
    }

    static Task Error(HttpContext http, int status, string message, string code, string? param = null)
    {
        var error = new JsonObject
        {
            ["error"] = new JsonObject { ["message"] = message, ["type"] = status == 429 ? "rate_limit_error" : "invalid_request_error", ["param"] = param, ["code"] = code },
        };
        http.Response.StatusCode = status;
        http.Response.ContentType = "application/json";
        return http.Response.WriteAsync(error.ToJsonString(), http.RequestAborted);
    }
}
