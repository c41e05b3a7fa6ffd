using System.Runtime.CompilerServices;
using System.Threading.Channels;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Data;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Text;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine;

/// <summary>
/// A loaded BD3-LM: weights on a backend plus its tokenizer. The embeddable entry point for sampling and
/// evaluation; the CLI's `sample` and `eval` are thin shells over it.
/// Safe to call from many threads at once: a backend (CUDA's scratch buffers and stream, ILGPU's accelerator) is
/// not safe for concurrent use, so calls on one model take turns on it, one whole call at a time, each with its
/// own workspaces and KV cache; results equal those of the same calls made one after another. To serve
/// concurrent requests together in one batch, use the request scheduler of FastBlockDiff.Engine.Serving.
/// </summary>
public sealed class BlockDiffusionModel : IDisposable
{
    /// <summary>Architecture read from config.json.</summary>
    public ModelConfig Config => Denoiser.Config;
    /// <summary>The denoiser network.</summary>
    public Denoiser Denoiser { get; }
    /// <summary>The tokenizer recorded in config.json, or the one given at load.</summary>
    public ITextTokenizer Tokenizer { get; }
    /// <summary>The backend the weights live on.</summary>
    public IBackend Backend => Denoiser.Backend;
    /// <summary>Why this backend was chosen (first line of every run).</summary>
    public string BackendReason { get; }

    /// <summary>Held by whoever is running work on <see cref="Backend"/> (one at a time).</summary>
    internal SemaphoreSlim BackendGate { get; } = new(1, 1);

    BlockDiffusionModel(Denoiser denoiser, ITextTokenizer tokenizer, string reason)
    {
        Denoiser = denoiser; Tokenizer = tokenizer; BackendReason = reason;
    }

    /// <summary>
    /// Loads config.json + model.safetensors from <paramref name="directory"/> (ours, or a bd3lms Hugging Face
    /// checkpoint). <paramref name="tokenizer"/> overrides the tokenizer spec in config.json (needed for GPT-2
    /// checkpoints: "gpt2:DIR" with vocab.json and merges.txt). <paramref name="backend"/> is auto, cpu, cuda or ilgpu.
    /// </summary>
    public static BlockDiffusionModel Load(string directory, string? tokenizer = null, string backend = "auto")
    {
        var config = ModelCheckpoint.LoadConfig(directory);
        var tok = TokenizerFactory.Load(tokenizer ?? config.Tokenizer, config.MaskId);
        if (tok.ModelVocabSize > config.VocabSize)
            throw new UserInputException($"tokenizer '{tok.Name}' has {tok.ModelVocabSize} ids but the checkpoint's vocabulary is {config.VocabSize}");
        var (be, reason) = BackendChoice.Create(backend);
        var model = new Denoiser(be, config);
        model.LoadWeights(ModelCheckpoint.LoadWeights(directory, config, model.Params));
        return new BlockDiffusionModel(model, tok, reason);
    }

    /// <summary>Wraps an in-memory denoiser (e.g. just trained) with its tokenizer.</summary>
    public static BlockDiffusionModel FromDenoiser(Denoiser denoiser, ITextTokenizer tokenizer) => new(denoiser, tokenizer, "given");

    /// <summary>
    /// Samples options.BatchSize continuations of <paramref name="prompt"/>. <paramref name="onText"/> receives
    /// (sequence index, newly decoded text) after every committed block. Cancellation stops the work before the next
    /// denoising step and throws <see cref="OperationCanceledException"/>.
    /// </summary>
    public (string[] Texts, SampleResult Result) Sample(string prompt, SamplingOptions options, Action<int, string>? onText = null, CancellationToken cancel = default)
    {
        options.Validate();
        var promptIds = Tokenizer.Encode(prompt);
        var decoders = Enumerable.Range(0, options.BatchSize).Select(_ => new IncrementalDecoder(Tokenizer)).ToArray();
        var sampler = new BlockSampler(Denoiser, Tokenizer.BosId, Tokenizer.EosId);
        BackendGate.Wait(cancel);
        try
        {
            var result = sampler.Generate(promptIds, options, (s, ids) =>
            {
                string piece = decoders[s].Add(ids);
                if (piece.Length > 0) onText?.Invoke(s, piece);
            }, cancel);
            for (int s = 0; s < decoders.Length; s++)
            {
                string rest = decoders[s].Flush();   // a held-back incomplete UTF-8 tail is final now
                if (rest.Length > 0) onText?.Invoke(s, rest);
            }
            return ([.. result.Tokens.Select(t => Tokenizer.Decode(t))], result);
        }
        finally { BackendGate.Release(); }
    }

    /// <summary>
    /// Streams the text of one generated sequence as it is produced, block by block. A consumer that stops reading
    /// (leaves its <c>await foreach</c>) stops the generation at its next denoising step; cancelling
    /// <paramref name="cancel"/> does too and surfaces as <see cref="OperationCanceledException"/>.
    /// </summary>
    public async IAsyncEnumerable<string> GenerateAsync(string prompt, SamplingOptions options, [EnumeratorCancellation] CancellationToken cancel = default)
    {
        options.Validate();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        var channel = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var run = Task.Run(() =>
        {
            try { Sample(prompt, options with { BatchSize = 1 }, (_, piece) => channel.Writer.TryWrite(piece), stop.Token); channel.Writer.Complete(); }
            catch (Exception e) { channel.Writer.Complete(e); }
        }, CancellationToken.None);
        try
        {
            await foreach (var piece in channel.Reader.ReadAllAsync(cancel))
            {
                cancel.ThrowIfCancellationRequested();   // pieces produced ahead are not delivered after cancellation
                yield return piece;
            }
        }
        finally
        {
            // reached on completion, on an exception and when the consumer stops early: the producer must not outlive us
            stop.Cancel();
            await run;
        }
    }

    /// <summary>
    /// Validation NELBO (t ~ U[1e-3, 1]) on a corpus: its deterministic validation split, or every row with
    /// <paramref name="allRows"/>. At most <paramref name="maxSequences"/> rows (0 = all).
    /// </summary>
    public EvalResult Evaluate(string corpusPath, int batchSize = 8, int maxSequences = 0, bool allRows = false, ulong seed = 1234,
        CancellationToken cancel = default)
    {
        var data = TokenDataset.FromCorpus(corpusPath, Tokenizer, Config.ModelLength);
        IEnumerable<int> rowIds = allRows ? Enumerable.Range(0, data.RowCount) : data.ValidRows;
        if (maxSequences > 0) rowIds = rowIds.Take(maxSequences);
        var rows = rowIds.Select(r => data.Row(r).ToArray()).ToList();
        BackendGate.Wait(cancel);
        try { return new Evaluator(Denoiser).Evaluate(rows, batchSize, seed: seed, cancel: cancel); }
        finally { BackendGate.Release(); }
    }

    public void Dispose() => Backend.Dispose();

    /// <summary>Decodes a growing token list and returns only the new text (BPE pieces may merge across blocks).</summary>
    sealed class IncrementalDecoder(ITextTokenizer tokenizer)
    {
        readonly List<int> _ids = [];
        string _text = "";
        public string Add(int[] ids)
        {
            _ids.AddRange(ids);
            string full = tokenizer.Decode(_ids.ToArray());
            // hold back a trailing replacement char: an incomplete UTF-8 sequence may complete in the next block
            int stable = full.Length;
            while (stable > 0 && full[stable - 1] == '\uFFFD') stable--;
            if (stable < _text.Length || !full.AsSpan(0, _text.Length).SequenceEqual(_text)) return "";
            string piece = full[_text.Length..stable];
            _text = full[..stable];
            return piece;
        }

        /// <summary>The text not returned yet, held back or not: call once the sequence is complete.</summary>
        public string Flush()
        {
            string full = tokenizer.Decode(_ids.ToArray());
            string rest = full.StartsWith(_text, StringComparison.Ordinal) ? full[_text.Length..] : "";
            _text = full;
            return rest;
        }
    }
}
