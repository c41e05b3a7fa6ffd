using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Serving;

namespace FastBlockDiff.Tests;

/// <summary>Batching across requests: every request gets what it gets alone with the same seed.</summary>
public class RequestSchedulerTests
{
    static readonly string[] Prompts = ["", "a", "hello", "the block diffusion", "xyz xyz xyz", "0123456789abcdef!", "é", "q"];

    /// <summary>Requests that differ in prompt length, length, seed, sampler, steps and stop rules.</summary>
    static GenerationRequest Request(int i) => new(Prompts[i % Prompts.Length], new SamplingOptions
    {
        MaxTokens = 6 + 5 * (i % 5), Seed = (ulong)(100 + i), Kind = (SamplerKind)(i % 3), StepsPerBlock = i % 4 == 0 ? 0 : 2 + i % 3,
        TopP = i % 2 == 0 ? 0.9f : 1f, Temperature = i % 5 == 3 ? 0.7f : 1f, StopOnEos = i % 2 == 0, EntropyThreshold = i % 3 == 0 ? 0 : null,
    });

    static async Task<(string Text, GenerationUpdate Final, int Updates)> Collect(IBlockGenerator g, GenerationRequest r, CancellationToken cancel = default)
    {
        var text = new System.Text.StringBuilder();
        GenerationUpdate? final = null;
        int updates = 0;
        await foreach (var u in g.StreamAsync(r, cancel)) { text.Append(u.Text); updates++; if (u.IsFinal) final = u; }
        return (text.ToString(), final!, updates);
    }

    /// <summary>
    /// A byte-level model of width <paramref name="width"/>: at 256 (4 heads, the tiny model's width, an MLP of 1024)
    /// the rows of a batch go through other GEMM paths and tiles than a request alone — 4 rows (one block) against up
    /// to 64 — where only the batch-invariant GEMM gives them the same bits. (A last-bit difference changes a sampled
    /// token only rarely; BatchInvariantForwardTests compares the logits themselves.)
    /// </summary>
    static BlockDiffusionModel ByteModel(int width, int seed) => width == 16
        ? ConcurrencyTests.FreshByteModel(seed)
        : BlockDiffusionModel.FromDenoiser(
            TinyModels.Random(ConcurrencyTests.ByteConfig() with { HiddenDim = width, Heads = 4, ModelLength = 64 }, seed),
            new Engine.Text.ByteTokenizer());

    [Theory]
    [InlineData(2, 16)]
    [InlineData(16, 16)]
    [InlineData(2, 256)]
    [InlineData(16, 256)]
    public async Task ConcurrentRequestsGetTheTextsOfSequentialRuns(int count, int width)
    {
        using var model = ByteModel(width, seed: 8);
        // first the scheduler: it switches the backend to its batch-invariant GEMM, the sequential runs too
        using var scheduler = new RequestScheduler(model, maxBatch: 16);
        Assert.True(((Kernels.Cpu.CpuBackend)model.Backend).BatchInvariantGemm);
        var expected = Enumerable.Range(0, count).Select(i => model.Sample(Request(i).Prompt, Request(i).Options)).ToArray();
        // half start together; the other half join while the first are in the middle of their generations
        var first = Enumerable.Range(0, count / 2).Select(i => Task.Run(() => Collect(scheduler, Request(i)))).ToList();
        while (scheduler.Nfe == 0) await Task.Delay(1);
        var rest = Enumerable.Range(count / 2, count - count / 2).Select(i => Task.Run(() => Collect(scheduler, Request(i)))).ToList();
        var got = await Task.WhenAll(first.Concat(rest));
        for (int i = 0; i < count; i++)
        {
            Assert.True(expected[i].Texts[0] == got[i].Text, $"request {i}: '{got[i].Text}' differs from its sequential text '{expected[i].Texts[0]}'");
            Assert.Equal(expected[i].Result.Reasons[0], got[i].Final.Reason);
            Assert.Equal(expected[i].Result.Tokens[0].Length, got[i].Final.OutputTokens);
            Assert.Equal(model.Tokenizer.Encode(Request(i).Prompt).Length, got[i].Final.PromptTokens);
        }
        Assert.Equal(count, scheduler.CompletedRequests);
        Assert.Equal(expected.Sum(e => (long)e.Result.Tokens[0].Length), scheduler.GeneratedTokens);
    }

    [Fact]
    public async Task RequestsWaitingAtABlockBoundaryShareDenoiserCalls()
    {
        using var model = ConcurrencyTests.FreshByteModel(seed: 8);
        const int count = 6;
        using var scheduler = new RequestScheduler(model);
        var expected = Enumerable.Range(0, count).Select(i => model.Sample(Request(i).Prompt, Request(i).Options)).ToArray();
        // a direct call on the model holds its backend: the scheduler's requests queue up behind it meanwhile
        using var holding = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var holder = Task.Run(() => model.Sample("h", new SamplingOptions { MaxTokens = 40, StopOnEos = false, EntropyThreshold = 0 },
            (_, _) => { holding.Set(); release.Wait(); }));
        holding.Wait();
        var tasks = Enumerable.Range(0, count).Select(i => Task.Run(() => Collect(scheduler, Request(i)))).ToList();
        while (scheduler.QueueDepth < count) await Task.Delay(1);
        release.Set();
        await holder;
        var got = await Task.WhenAll(tasks);
        for (int i = 0; i < count; i++) Assert.Equal(expected[i].Texts[0], got[i].Text);
        Assert.True(scheduler.Nfe < expected.Sum(e => e.Result.Nfe), $"{scheduler.Nfe} batched denoiser calls, {expected.Sum(e => e.Result.Nfe)} alone: requests admitted together should share them");
    }

    [Fact]
    public async Task OneUpdatePerCommittedBlockThenAFinalOne()
    {
        using var model = ConcurrencyTests.FreshByteModel();
        using var scheduler = new RequestScheduler(model);
        var opts = new SamplingOptions { MaxTokens = 10, StopOnEos = false, EntropyThreshold = 0, Seed = 4 };
        var updates = new List<GenerationUpdate>();
        await foreach (var u in scheduler.StreamAsync(new GenerationRequest("ab", opts))) updates.Add(u);
        Assert.True(updates[^1].IsFinal);
        Assert.Equal(StopReason.MaxTokens, updates[^1].Reason);
        Assert.Equal(10, updates[^1].OutputTokens);
        // BOS + "ab" fills 3 of the first block: the blocks add 1, 4, 4 and 1 (truncated) tokens
        Assert.Equal([1, 4, 4, 1], updates.Where(u => u.NewTokens > 0).Select(u => u.NewTokens));
        Assert.Single(updates, u => u.IsFinal);
    }

    [Fact]
    public async Task ALeavingConsumerIsRetiredAndOthersContinue()
    {
        using var model = ConcurrencyTests.FreshByteModel();
        using var scheduler = new RequestScheduler(model);
        var endless = new SamplingOptions { MaxTokens = 1_000_000, StopOnEos = false, EntropyThreshold = 0 };
        await foreach (var u in scheduler.StreamAsync(new GenerationRequest("x", endless))) break;
        var expected = model.Sample(Request(1).Prompt, Request(1).Options).Texts[0];
        var (text, final, _) = await Collect(scheduler, Request(1));
        Assert.Equal(expected, text);
        while (scheduler.ActiveRequests > 0) await Task.Delay(1);   // the abandoned one is retired, not generating for ever
        Assert.Equal(0, scheduler.QueueDepth);
    }

    [Fact]
    public async Task CancellationSurfacesAsOperationCanceled()
    {
        using var model = ConcurrencyTests.FreshByteModel();
        using var scheduler = new RequestScheduler(model);
        using var cts = new CancellationTokenSource();
        var endless = new SamplingOptions { MaxTokens = 1_000_000, StopOnEos = false, EntropyThreshold = 0 };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var u in scheduler.StreamAsync(new GenerationRequest("x", endless), cts.Token)) cts.Cancel();
        });
    }

    [Fact]
    public async Task DisposingTheSchedulerEndsEveryRequest()
    {
        using var model = ConcurrencyTests.FreshByteModel();
        var scheduler = new RequestScheduler(model, maxBatch: 1);
        var endless = new GenerationRequest("x", new SamplingOptions { MaxTokens = 1_000_000, StopOnEos = false, EntropyThreshold = 0 });
        var running = scheduler.StreamAsync(endless).GetAsyncEnumerator();
        Assert.True(await running.MoveNextAsync());
        var waiting = Task.Run(() => Collect(scheduler, endless));
        while (scheduler.QueueDepth == 0) await Task.Delay(1);
        scheduler.Dispose();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => { while (await running.MoveNextAsync()) { } });
        var refused = await Record.ExceptionAsync(() => waiting);   // refused in the queue, or cancelled if admitted just before
        Assert.True(refused is ObjectDisposedException or OperationCanceledException, $"got {refused?.GetType().Name ?? "no exception"}");
        await running.DisposeAsync();
    }

    [Fact]
    public async Task AFullQueueRefusesNewRequests()
    {
        using var model = ConcurrencyTests.FreshByteModel();
        using var scheduler = new RequestScheduler(model, maxBatch: 1, maxQueue: 1);
        using var cts = new CancellationTokenSource();
        var endless = new GenerationRequest("x", new SamplingOptions { MaxTokens = 1_000_000, StopOnEos = false, EntropyThreshold = 0 });
        var running = scheduler.StreamAsync(endless, cts.Token).GetAsyncEnumerator();
        Assert.True(await running.MoveNextAsync());   // admitted: the batch of one is full
        var waiting = Task.Run(() => Collect(scheduler, endless, cts.Token));
        while (scheduler.QueueDepth == 0) await Task.Delay(1);
        var e = await Assert.ThrowsAsync<SchedulerFullException>(() => Collect(scheduler, endless, cts.Token));
        Assert.Contains("queue is full", e.Message);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
        await running.DisposeAsync();
    }
}
