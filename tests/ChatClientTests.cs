using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Serving;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FastBlockDiff.Tests;

/// <summary>IChatClient over a model and over the request scheduler.</summary>
public class ChatClientTests
{
    static SamplingOptions Alone(int maxTokens, ulong seed) => new() { MaxTokens = maxTokens, Seed = seed };
    static ChatOptions Chat(int maxTokens, long seed) => new() { MaxOutputTokens = maxTokens, Seed = seed };

    [Fact]
    public async Task StreamingGivesOneUpdatePerBlockAndAFinalUpdateWithUsage()
    {
        using var model = ConcurrencyTests.FreshByteModel();
        var client = new BlockDiffusionChatClient(model, "tiny", new SamplingOptions { StopOnEos = false, EntropyThreshold = 0 });
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "abc")], Chat(13, 7))) updates.Add(u);
        var final = updates[^1];
        var usage = Assert.IsType<UsageContent>(Assert.Single(final.Contents)).Details;
        Assert.Equal(3, usage.InputTokenCount);
        Assert.Equal(13, usage.OutputTokenCount);
        Assert.Equal(16, usage.TotalTokenCount);
        Assert.Equal(ChatFinishReason.Length, final.FinishReason);
        // BOS + "abc" is one block of 4: generated blocks hold 4, 4, 4 and 1 tokens
        Assert.InRange(updates.Count - 1, 4, 5);
        string expected = model.Sample("abc", Alone(13, 7) with { StopOnEos = false, EntropyThreshold = 0 }).Texts[0];
        Assert.Equal(expected, string.Concat(updates.Select(u => u.Text)));
        Assert.All(updates, u => Assert.Equal("tiny", u.ModelId));
        Assert.Single(updates.Select(u => u.ResponseId).Distinct());
    }

    [Fact]
    public async Task ResponseTextUsageAndFinishReasonMatchTheModel()
    {
        using var model = ConcurrencyTests.FreshByteModel();
        using var scheduler = new RequestScheduler(model);
        var client = new BlockDiffusionChatClient(scheduler, "tiny");
        var messages = new[] { new ChatMessage(ChatRole.System, "sys"), new ChatMessage(ChatRole.User, "question") };
        var r = await client.GetResponseAsync(messages, Chat(9, 3));
        var (texts, result) = model.Sample("sys\n\nquestion", Alone(9, 3));
        Assert.Equal(texts[0], r.Text);
        Assert.Equal(ChatRole.Assistant, r.Messages.Single().Role);
        Assert.Equal("sys\n\nquestion".Length, r.Usage!.InputTokenCount);
        Assert.Equal(result.Tokens[0].Length, r.Usage.OutputTokenCount);
        Assert.Equal(result.Reasons[0] == StopReason.MaxTokens ? ChatFinishReason.Length : ChatFinishReason.Stop, r.FinishReason);
    }

    [Fact]
    public async Task OwnOptionsComeFromAdditionalProperties()
    {
        using var model = ConcurrencyTests.FreshByteModel();
        var client = new BlockDiffusionChatClient(model, "tiny");
        var options = Chat(11, 5);
        options.Temperature = 0.8f; options.TopP = 0.95f;
        options.AdditionalProperties = new() { [ChatOptionsMapping.Sampler] = "first-hitting", [ChatOptionsMapping.Steps] = 3, [ChatOptionsMapping.StopOnEos] = false, [ChatOptionsMapping.EntropyStop] = 0f };
        var r = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "p")], options);
        var alone = Alone(11, 5) with { Temperature = 0.8f, TopP = 0.95f, Kind = SamplerKind.FirstHitting, StepsPerBlock = 3, StopOnEos = false, EntropyThreshold = 0 };
        Assert.Equal(model.Sample("p", alone).Texts[0], r.Text);
        Assert.NotEqual(model.Sample("p", alone with { Kind = SamplerKind.Ddpm }).Texts[0], r.Text);

        options.AdditionalProperties[ChatOptionsMapping.Sampler] = "beam";
        var e = await Assert.ThrowsAsync<UserInputException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, "p")], options));
        Assert.Contains("beam", e.Message);
        await Assert.ThrowsAsync<UserInputException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, "p")], new ChatOptions { MaxOutputTokens = -1 }));
    }

    [Fact]
    public async Task AStopSequenceEndsTheTextBeforeIt()
    {
        using var model = ConcurrencyTests.FreshByteModel();
        var client = new BlockDiffusionChatClient(model, "tiny", new SamplingOptions { StopOnEos = false, EntropyThreshold = 0 });
        string full = model.Sample("s", Alone(40, 9) with { StopOnEos = false, EntropyThreshold = 0 }).Texts[0];
        string stop = full.Substring(10, 3);   // spans a block boundary of 4-token blocks for byte text
        var options = Chat(40, 9);
        options.StopSequences = [stop];
        var r = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "s")], options);
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], r.Text);
        Assert.Equal(ChatFinishReason.Stop, r.FinishReason);
    }

    [Fact]
    public async Task CancellationStopsTheResponse()
    {
        using var model = ConcurrencyTests.FreshByteModel();
        using var scheduler = new RequestScheduler(model);
        var client = new BlockDiffusionChatClient(scheduler, "tiny", new SamplingOptions { StopOnEos = false, EntropyThreshold = 0 });
        using var cts = new CancellationTokenSource();
        int updates = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var u in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "x")], Chat(1_000_000, 1), cts.Token))
                if (++updates == 2) cts.Cancel();
        });
        Assert.Equal(2, updates);
        while (scheduler.ActiveRequests > 0) await Task.Delay(1);
    }

    [Fact]
    public async Task DependencyInjectionRegistersALoggingChatClient()
    {
        string dir = Directory.CreateTempSubdirectory("fbd-chat-").FullName;
        try
        {
            var config = ConcurrencyTests.ByteConfig();
            var m = TinyModels.Random(config, seed: 5);
            ModelCheckpoint.Save(dir, config, m.Params, m.DownloadWeights());
            var logs = new CapturingLoggerFactory();
            var services = new ServiceCollection().AddSingleton<ILoggerFactory>(logs).AddBlockDiffusionChatClient(dir, backend: "cpu");
            using var provider = services.BuildServiceProvider();
            var client = provider.GetRequiredService<IChatClient>();
            var metadata = client.GetService<ChatClientMetadata>();
            Assert.Equal(Path.GetFileName(dir), metadata!.DefaultModelId);
            var texts = await Task.WhenAll(Enumerable.Range(0, 4).Select(i => client.GetResponseAsync([new ChatMessage(ChatRole.User, "hi")], Chat(8, i))));
            var model = provider.GetRequiredService<BlockDiffusionModel>();
            for (int i = 0; i < 4; i++) Assert.Equal(model.Sample("hi", Alone(8, (ulong)i)).Texts[0], texts[i].Text);
            Assert.Equal(8, logs.Lines.Count(l => l.StartsWith("chat ")));   // start and end of each of the 4 calls
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    sealed class CapturingLoggerFactory : ILoggerFactory, ILogger
    {
        public readonly System.Collections.Concurrent.ConcurrentQueue<string> Lines = new();
        public ILogger CreateLogger(string categoryName) => this;
        public void AddProvider(ILoggerProvider provider) { }
        public void Dispose() { }
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel)) Lines.Enqueue(formatter(state, exception));
        }
    }
}
