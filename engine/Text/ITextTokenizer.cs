namespace FastBlockDiff.Engine.Text;

/// <summary>
/// A text tokenizer as the engine sees it. Ids 0..VocabSize-1 are the ids the model can emit
/// (ordinary tokens plus BOS/EOS/PAD); <see cref="MaskId"/> is the diffusion [MASK] id, which
/// is <see cref="VocabSize"/> unless configured otherwise. The model's embedding/output width is
/// <see cref="ModelVocabSize"/>. Implementations must be safe to call from several threads at
/// once (datasets encode documents in parallel).
/// </summary>
public interface ITextTokenizer
{
    /// <summary>Short human-readable name, e.g. "byte", "gpt2", "cl100k_base".</summary>
    string Name { get; }
    /// <summary>Number of ids the model can emit (excluding MASK when MASK = VocabSize).</summary>
    int VocabSize { get; }
    int BosId { get; }
    int EosId { get; }
    int MaskId { get; }
    int? PadId { get; }
    /// <summary>Width of the model's vocabulary: max(VocabSize, MaskId + 1).</summary>
    int ModelVocabSize => Math.Max(VocabSize, MaskId + 1);

    /// <summary>Encodes text to ids without adding BOS/EOS.</summary>
    int[] Encode(string text);

    /// <summary>
    /// Decodes ids to text. With <paramref name="skipSpecial"/> BOS/EOS/PAD/MASK are dropped;
    /// otherwise they are rendered as &lt;|bos|&gt;, &lt;|eos|&gt;, &lt;|pad|&gt;, &lt;|mask|&gt;.
    /// Ids outside [0, ModelVocabSize) throw <see cref="ArgumentOutOfRangeException"/>.
    /// </summary>
    string Decode(ReadOnlySpan<int> ids, bool skipSpecial = true);

    /// <summary>How to reload this tokenizer (for config.json).</summary>
    TokenizerDescriptor Describe();
}

/// <summary>
/// Serialisable description of a tokenizer for config.json. <see cref="Spec"/> is the string
/// accepted by <see cref="TokenizerFactory.Load(string, int?)"/>; the ids are recorded so a loader
/// can check them against the checkpoint.
/// </summary>
/// <param name="Kind">"byte", "gpt2", "tiktoken", "cl100k" or "o200k".</param>
/// <param name="Files">Files the tokenizer was read from (empty for built-in ones).</param>
public sealed record TokenizerDescriptor(
    string Kind, IReadOnlyList<string> Files, string Spec,
    int VocabSize, int BosId, int EosId, int MaskId, int? PadId);

internal static class SpecialTokenText
{
    public const string Bos = "<|bos|>", Eos = "<|eos|>", Pad = "<|pad|>", Mask = "<|mask|>";
}
