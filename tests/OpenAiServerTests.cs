#pragma warning disable OPENAI001 // Seed is marked experimental in the OpenAI library
using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using FastBlockDiff.Cli;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Serving;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenAI;
using OpenAI.Chat;

namespace FastBlockDiff.Tests;

/// <summary>`serve`'s HTTP API on loopback, through the official OpenAI client, Microsoft.Extensions.AI.OpenAI and raw HTTP.</summary>
public class OpenAiServerTests
{
    /// <summary>A started server on a free loopback port over a fresh tiny byte model.</summary>
    sealed class Server : IAsyncDisposable
    {
        public readonly BlockDiffusionModel Model = ConcurrencyTests.FreshByteModel();
        public readonly RequestScheduler Scheduler;
        public readonly WebApplication App;
        public readonly Uri BaseUri;
        public readonly HttpClient Http;

        public Server(int maxBatch = 16, int maxQueue = 64)
        {
            Scheduler = new RequestScheduler(Model, maxBatch, maxQueue);
            App = OpenAiServer.Build(Scheduler, "tiny", new ServerOptions { Port = 0, MaxBodyBytes = 16 * 1024, MaxTokens = 1_000_000 }, l => l.ClearProviders());
            App.StartAsync().GetAwaiter().GetResult();
            BaseUri = new Uri(App.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
            Http = new HttpClient { BaseAddress = BaseUri };
        }

        public ChatClient OpenAi() => new("tiny", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(BaseUri, "/v1") });

        public Task<HttpResponseMessage> Post(string path, string json, HttpCompletionOption read = HttpCompletionOption.ResponseContentRead, CancellationToken cancel = default) =>
            Http.SendAsync(new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") }, read, cancel);

        public async ValueTask DisposeAsync()
        {
            Http.Dispose();
            await App.StopAsync();
            await App.DisposeAsync();
            Scheduler.Dispose();
            Model.Dispose();
        }
    }

    static string Expected(Server s, string prompt, int maxTokens, ulong seed) => s.Model.Sample(prompt, new SamplingOptions { MaxTokens = maxTokens, Seed = seed }).Texts[0];

    [Fact]
    public async Task TheOpenAiClientGetsTheModelsText()
    {
        await using var s = new Server();
        var r = await s.OpenAi().CompleteChatAsync([new UserChatMessage("hello")], new ChatCompletionOptions { MaxOutputTokenCount = 9, Seed = 4 });
        Assert.Equal(Expected(s, "hello", 9, 4), r.Value.Content[0].Text);
        Assert.Equal(5, r.Value.Usage.InputTokenCount);
        Assert.Equal("tiny", r.Value.Model);
        Assert.Contains(r.Value.FinishReason, new[] { OpenAI.Chat.ChatFinishReason.Length, OpenAI.Chat.ChatFinishReason.Stop });
    }

    [Fact]
    public async Task TheOpenAiClientStreams()
    {
        await using var s = new Server();
        var text = new StringBuilder();
        OpenAI.Chat.ChatFinishReason? finish = null;
        int updates = 0;
        await foreach (var u in s.OpenAi().CompleteChatStreamingAsync([new UserChatMessage("abc")], new ChatCompletionOptions { MaxOutputTokenCount = 13, Seed = 2 }))
        {
            updates++;
            foreach (var part in u.ContentUpdate) text.Append(part.Text);
            finish ??= u.FinishReason;
        }
        Assert.Equal(Expected(s, "abc", 13, 2), text.ToString());
        Assert.NotNull(finish);
        Assert.True(updates >= 2, $"{updates} updates: expected one per block and a final one");
    }

    [Fact]
    public async Task MicrosoftExtensionsAiOpenAiClientWorks()
    {
        await using var s = new Server();
        IChatClient client = s.OpenAi().AsIChatClient();
        var r = await client.GetResponseAsync("xy", new ChatOptions { MaxOutputTokens = 7, Seed = 8 });
        Assert.Equal(Expected(s, "xy", 7, 8), r.Text);
        Assert.Equal(2, r.Usage!.InputTokenCount);
        Assert.Equal(Expected(s, "xy", 7, 8).Length > 0, r.Usage.OutputTokenCount > 0);
    }

    [Fact]
    public async Task CompletionsEndpointJsonAndServerSentEvents()
    {
        await using var s = new Server();
        var r = await s.Post("/v1/completions", """{"model":"tiny","prompt":"pq","max_tokens":6,"seed":3,"sampler":"first-hitting"}""");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var body = JsonNode.Parse(await r.Content.ReadAsStringAsync())!;
        string expected = s.Model.Sample("pq", new SamplingOptions { MaxTokens = 6, Seed = 3, Kind = SamplerKind.FirstHitting }).Texts[0];
        Assert.Equal(expected, body["choices"]![0]!["text"]!.GetValue<string>());
        Assert.Equal("text_completion", body["object"]!.GetValue<string>());
        Assert.Equal(2, body["usage"]!["prompt_tokens"]!.GetValue<int>());

        var sse = await s.Post("/v1/completions", """{"prompt":"pq","max_tokens":6,"seed":3,"sampler":"first-hitting","stream":true,"stream_options":{"include_usage":true}}""");
        Assert.Equal("text/event-stream", sse.Content.Headers.ContentType!.MediaType);
        var events = (await sse.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e["data: ".Length..]).ToList();
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonNode.Parse(e)!).ToList();
        Assert.Equal(expected, string.Concat(chunks.Select(c => c["choices"]![0]!["text"]!.GetValue<string>())));
        Assert.NotNull(chunks[^1]["choices"]![0]!["finish_reason"]);
        Assert.NotNull(chunks[^1]["usage"]);
    }

    [Theory]
    [InlineData("{not json", 400, "not valid JSON")]
    [InlineData("[1,2]", 400, "JSON object")]
    [InlineData("""{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}""", 404, "gpt-4")]
    [InlineData("""{"messages":[{"role":"user","content":"x"}],"max_tokens":-5}""", 400, "max-tokens")]
    [InlineData("""{"messages":[]}""", 400, "messages")]
    [InlineData("""{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}""", 400, "temperature")]
    [InlineData("""{"messages":[{"role":"user","content":"x"}],"sampler":"beam"}""", 400, "beam")]
    [InlineData("""{"messages":[{"role":"user","content":"x"}],"max_tokens":2000000}""", 400, "at most")]
    public async Task BadRequestsGetOpenAiShapedErrors(string json, int status, string mentions)
    {
        await using var s = new Server();
        var r = await s.Post("/v1/chat/completions", json);
        Assert.Equal(status, (int)r.StatusCode);
        var error = JsonNode.Parse(await r.Content.ReadAsStringAsync())!["error"]!;
        Assert.Contains(mentions, error["message"]!.GetValue<string>());
        Assert.NotNull(error["type"]);
    }

    [Fact]
    public async Task AnOversizedBodyIsRefused()
    {
        await using var s = new Server();
        string big = $$"""{"prompt":"{{new string('a', 64 * 1024)}}"}""";
        var r = await s.Post("/v1/completions", big);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, r.StatusCode);
        Assert.Contains("limit", JsonNode.Parse(await r.Content.ReadAsStringAsync())!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task ModelsHealthAndMetrics()
    {
        await using var s = new Server();
        var models = JsonNode.Parse(await s.Http.GetStringAsync("/v1/models"))!;
        Assert.Equal("tiny", models["data"]![0]!["id"]!.GetValue<string>());
        Assert.Equal("ok", JsonNode.Parse(await s.Http.GetStringAsync("/health"))!["status"]!.GetValue<string>());
        await s.Post("/v1/completions", """{"prompt":"m","max_tokens":5}""");
        string metrics = await s.Http.GetStringAsync("/metrics");
        Assert.Contains("fastblockdiff_requests_total{endpoint=\"completions\"} 1", metrics);
        Assert.Contains("fastblockdiff_requests_completed_total 1", metrics);
        Assert.Contains("fastblockdiff_generated_tokens_total", metrics);
        Assert.Contains("fastblockdiff_nfe_total", metrics);
        Assert.Contains("fastblockdiff_queue_depth 0", metrics);
        Assert.Contains("fastblockdiff_tokens_per_second", metrics);
    }

    const string Endless = """{"prompt":"z","max_tokens":1000000,"stream":true,"stop_on_eos":false,"entropy_stop":0}""";

    [Fact]
    public async Task AClientThatDisconnectsMidStreamCancelsItsWork()
    {
        await using var s = new Server();
        using (var cts = new CancellationTokenSource())
        {
            var r = await s.Post("/v1/completions", Endless, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            using var reader = new StreamReader(await r.Content.ReadAsStreamAsync(cts.Token));
            Assert.StartsWith("data: ", await reader.ReadLineAsync(cts.Token));
            Assert.Equal(1, s.Scheduler.ActiveRequests);
            cts.Cancel();
            r.Dispose();
        }
        // a million tokens would take far longer than the guard: reaching 0 means the disconnect cancelled it
        using var guard = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (s.Scheduler.ActiveRequests > 0 || s.Scheduler.QueueDepth > 0) await Task.Delay(5, guard.Token);
        Assert.Equal(0, s.Scheduler.CompletedRequests);
    }

    [Fact]
    public async Task AFullQueueGets429()
    {
        await using var s = new Server(maxBatch: 1, maxQueue: 1);
        using var cts = new CancellationTokenSource();
        var running = await s.Post("/v1/completions", Endless, HttpCompletionOption.ResponseHeadersRead, cts.Token);
        Assert.Equal(HttpStatusCode.OK, running.StatusCode);
        var queued = s.Post("/v1/completions", Endless, HttpCompletionOption.ResponseHeadersRead, cts.Token);
        while (s.Scheduler.QueueDepth == 0) await Task.Delay(5);
        var refused = await s.Post("/v1/completions", Endless);
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Contains("queue is full", await refused.Content.ReadAsStringAsync());
        cts.Cancel();
        running.Dispose();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => queued);
    }
}
