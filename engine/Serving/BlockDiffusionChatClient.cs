using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using FastBlockDiff.Engine.Sampling;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FastBlockDiff.Engine.Serving;

/// <summary>
/// <see cref="IChatClient"/> over a loaded model (or a <see cref="RequestScheduler"/> that batches concurrent
/// calls). The prompt is <see cref="PlainTextPrompt"/>; the reply is the model's continuation. Streaming gives
/// one update per committed block and a final update with usage (input and output tokens) and the finish reason.
/// Cancellation stops the work at the next denoising step. Safe for concurrent calls.
/// </summary>
public sealed class BlockDiffusionChatClient : IChatClient
{
    readonly IBlockGenerator _generator;
    readonly SamplingOptions _defaults;
    readonly ILogger _log;
    readonly ChatClientMetadata _metadata;

    /// <param name="modelId">the name reported as ModelId (e.g. the checkpoint directory's name).</param>
    /// <param name="defaults">sampling options that ChatOptions override; null = the engine's defaults.</param>
    public BlockDiffusionChatClient(IBlockGenerator generator, string modelId, SamplingOptions? defaults = null, ILogger? logger = null)
    {
        _generator = generator ?? throw new ArgumentNullException(nameof(generator));
        _defaults = defaults ?? new SamplingOptions();
        _defaults.Validate();
        _log = logger ?? NullLogger.Instance;
        _metadata = new ChatClientMetadata("fastblockdiff", defaultModelId: modelId);
    }

    public string ModelId => _metadata.DefaultModelId!;

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new StringBuilder();
        ChatResponseUpdate? last = null;
        await foreach (var update in GetStreamingResponseAsync(messages, options, cancellationToken))
        {
            text.Append(update.Text);
            last = update;
        }
        var usage = last!.Contents.OfType<UsageContent>().Single().Details;
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text.ToString()) { MessageId = last.MessageId })
        {
            ResponseId = last.ResponseId, ModelId = ModelId, CreatedAt = last.CreatedAt, FinishReason = last.FinishReason, Usage = usage,
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (sampling, stops) = ChatOptionsMapping.Map(options, _defaults);
        string prompt = PlainTextPrompt.Format(messages);
        string id = Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow;
        var clock = Stopwatch.StartNew();
        _log.LogInformation("chat {Id}: {Sampler} sampler, {Steps} steps/block, at most {MaxTokens} tokens, seed {Seed}, {Stops} stop sequences",
            id, sampling.Kind, sampling.StepsPerBlock, sampling.MaxTokens, sampling.Seed, stops.Count);
        var cut = new StopSequenceCutter(stops);
        ChatResponseUpdate Update(string text) => new(ChatRole.Assistant, text) { ResponseId = id, MessageId = id, ModelId = ModelId, CreatedAt = created };

        GenerationUpdate? final = null;
        int promptTokens = 0, outputTokens = 0, nfe = 0;
        bool stoppedBySequence = false;
        await foreach (var u in _generator.StreamAsync(new GenerationRequest(prompt, sampling), cancellationToken))
        {
            promptTokens = u.PromptTokens; outputTokens = u.OutputTokens; nfe = u.Nfe;
            if (u.IsFinal) { final = u; break; }
            var (emit, hit) = cut.Add(u.Text);
            yield return Update(emit);
            if (hit) { stoppedBySequence = true; break; }   // leaving the stream stops the generation
        }
        if (!stoppedBySequence)
        {
            string rest = cut.Flush();
            if (rest.Length > 0) yield return Update(rest);
        }
        var reason = stoppedBySequence ? ChatFinishReason.Stop
            : final?.Reason == StopReason.MaxTokens ? ChatFinishReason.Length : ChatFinishReason.Stop;
        var usage = new UsageDetails { InputTokenCount = promptTokens, OutputTokenCount = outputTokens, TotalTokenCount = promptTokens + outputTokens };
        _log.LogInformation("chat {Id}: {Reason} after {Output} tokens ({Prompt} prompt tokens), {Nfe} NFEs, {Seconds:F2} s",
            id, stoppedBySequence ? "stop sequence" : final?.Reason.ToString(), outputTokens, promptTokens, nfe, clock.Elapsed.TotalSeconds);
        var last = Update("");
        last.Contents = [new UsageContent(usage)];
        last.FinishReason = reason;
        yield return last;
    }

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey != null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        if (serviceType.IsInstanceOfType(_generator)) return _generator;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    /// <summary>The generator is owned by whoever created it (one model serves many clients).</summary>
    public void Dispose() { }

    /// <summary>
    /// Applies stop sequences to streamed text: text that could still be the start of a stop sequence is held
    /// back until the next piece decides it; a complete stop sequence ends the text before it.
    /// </summary>
    sealed class StopSequenceCutter(IReadOnlyList<string> stops)
    {
        readonly StringBuilder _pending = new();
        readonly int _hold = stops.Count == 0 ? 0 : stops.Max(s => s.Length) - 1;

        public (string Emit, bool Hit) Add(string piece)
        {
            _pending.Append(piece);
            string text = _pending.ToString();
            int at = -1;
            foreach (var s in stops)
            {
                int i = text.IndexOf(s, StringComparison.Ordinal);
                if (i >= 0 && (at < 0 || i < at)) at = i;
            }
            if (at >= 0) { _pending.Clear(); return (text[..at], true); }
            int keep = Math.Min(_hold, text.Length);
            _pending.Clear().Append(text, text.Length - keep, keep);
            return (text[..^keep], false);
        }

        public string Flush()
        {
            string rest = _pending.ToString();
            _pending.Clear();
            return rest;
        }
    }
}
