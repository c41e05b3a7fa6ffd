using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Text;

namespace FastBlockDiff.Engine.Serving;

/// <summary>One generation asked of an <see cref="IBlockGenerator"/>: a plain-text prompt and its own sampling options.</summary>
/// <param name="ReportSteps">also send, after every denoising step, the current block (<see cref="GenerationUpdate.Draft"/>);
/// the <see cref="RequestScheduler"/> does, a model called directly does not.</param>
public sealed record GenerationRequest(string Prompt, SamplingOptions Options, bool ReportSteps = false);

/// <summary>
/// What one committed block added to a generation, or (<see cref="IsFinal"/>) how the generation ended.
/// </summary>
/// <param name="Text">newly decoded text (may be empty: a multi-byte character can span blocks).</param>
/// <param name="NewTokens">tokens the block added after stop truncation.</param>
/// <param name="PromptTokens">tokens of the encoded prompt (BOS not counted).</param>
/// <param name="OutputTokens">tokens generated so far.</param>
/// <param name="Nfe">denoiser calls so far: the request's share when requests run batched.</param>
/// <param name="Reason">why it stopped; only on the final update.</param>
/// <param name="Draft">on a step update (asked for with ReportSteps): the token ids of the block being denoised, masks included.</param>
public sealed record GenerationUpdate(string Text, int NewTokens, int PromptTokens, int OutputTokens, int Nfe, bool IsFinal = false, StopReason? Reason = null,
    IReadOnlyList<int>? Draft = null);

/// <summary>
/// Something that generates text block by block for many callers: a <see cref="BlockDiffusionModel"/> (calls take
/// turns) or a <see cref="RequestScheduler"/> (concurrent calls batched together). The chat client and the server
/// sit on this.
/// </summary>
public interface IBlockGenerator
{
    ITextTokenizer Tokenizer { get; }
    ModelConfig Config { get; }

    /// <summary>
    /// One update per committed block, then a final one. Leaving the enumeration stops the work at the next
    /// denoising step; cancellation throws <see cref="OperationCanceledException"/>.
    /// </summary>
    IAsyncEnumerable<GenerationUpdate> StreamAsync(GenerationRequest request, CancellationToken cancel = default);
}
