using System.Runtime.CompilerServices;
using System.Threading.Channels;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Data;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Serving;
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
public sealed class BlockDiffusionModel : IBlockGenerator, IDisposable
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
    /// checkpoints: "gpt2:DIR" with vocab.json and merges.txt). <paramref name="backend"/> is auto, cpu, cuda or ilgpu;
    /// <paramref name="precision"/> auto (bf16 on CUDA, fp32 elsewhere), bf16 or fp32 (null: <see cref="BackendChoice.Precision"/>).
    /// Weights holding NaN or ±Inf are refused (naming the tensor) unless <paramref name="allowNonFinite"/>.
    /// </summary>
    public static BlockDiffusionModel Load(string directory, string? tokenizer = null, string backend = "auto", bool allowNonFinite = false, string? precision = null)
    {
        var config = ModelCheckpoint.LoadConfig(directory);
        MemoryEstimate.ForInference(config, 1).EnsureFits(InferenceHint(directory));
        var tok = TokenizerFactory.Load(tokenizer ?? ModelCheckpoint.TokenizerSpec(directory, config.Tokenizer), config.MaskId);
        if (tok.ModelVocabSize > config.VocabSize)
            throw new UserInputException($"tokenizer '{tok.Name}' has {tok.ModelVocabSize} ids but the checkpoint's vocabulary is {config.VocabSize}");
        // the weights file is checked against config.json before the backend allocates anything
        var weights = ModelCheckpoint.LoadWeights(directory, config,
            ModelCheckpoint.Parameters(config, Path.Combine(directory, ModelCheckpoint.ConfigFile)), allowNonFinite);
        var (be, reason) = BackendChoice.Create(backend, precision);
        var model = new Denoiser(be, config);
        model.LoadWeights(weights);
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
        var (texts, result, _) = Run(prompt, options, (s, _, piece) => { if (piece.Length > 0) onText?.Invoke(s, piece); }, cancel);
        return (texts, result);
    }

    /// <summary>Sample with per-block callbacks (sequence, tokens added, text added); also returns the prompt's token count.</summary>
    (string[] Texts, SampleResult Result, int PromptTokens) Run(string prompt, SamplingOptions options, Action<int, int[], string> onBlock, CancellationToken cancel)
    {
        options.Validate();
        MemoryEstimate.ForInference(Config, options.BatchSize).EnsureFits("use a smaller --batch");
        var promptIds = Tokenizer.Encode(prompt);
        var decoders = Enumerable.Range(0, options.BatchSize).Select(_ => new IncrementalDecoder(Tokenizer)).ToArray();
        BackendGate.Wait(cancel);
        try
        {
            using var sampler = new BlockSampler(Denoiser, Tokenizer.BosId, Tokenizer.EosId);
            var result = sampler.Generate(promptIds, options, (s, ids) => onBlock(s, ids, decoders[s].Add(ids)), cancel);
            for (int s = 0; s < decoders.Length; s++)
            {
                string rest = decoders[s].Flush();   // a held-back incomplete UTF-8 tail is final now
                if (rest.Length > 0) onBlock(s, [], rest);
            }
            return ([.. result.Tokens.Select(t => Tokenizer.Decode(t))], result, promptIds.Length);
        }
        finally { BackendGate.Release(); }
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<GenerationUpdate> StreamAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken cancel = default)
    {
        request.Options.Validate();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        var channel = Channel.CreateUnbounded<GenerationUpdate>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var run = Task.Run(() =>
        {
            try
            {
                int promptTokens = Tokenizer.Encode(request.Prompt).Length, output = 0;
                var (_, result, _) = Run(request.Prompt, request.Options with { BatchSize = 1 }, (_, ids, piece) =>
                {
                    output += ids.Length;
                    channel.Writer.TryWrite(new GenerationUpdate(piece, ids.Length, promptTokens, output, 0));
                }, stop.Token);
                channel.Writer.TryWrite(new GenerationUpdate("", 0, promptTokens, result.GeneratedTokens, result.Nfe, IsFinal: true, result.Reasons[0]));
                channel.Writer.Complete();
            }
            catch (Exception e) { channel.Writer.Complete(e); }
        }, CancellationToken.None);
        try
        {
            await foreach (var update in channel.Reader.ReadAllAsync(cancel))
            {
                cancel.ThrowIfCancellationRequested();   // updates produced ahead are not delivered after cancellation
                yield return update;
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
    /// Streams the text of one generated sequence as it is produced, block by block. A consumer that stops reading
    /// (leaves its <c>await foreach</c>) stops the generation at its next denoising step; cancelling
    /// <paramref name="cancel"/> does too and surfaces as <see cref="OperationCanceledException"/>.
    /// </summary>
    public async IAsyncEnumerable<string> GenerateAsync(string prompt, SamplingOptions options, [EnumeratorCancellation] CancellationToken cancel = default)
    {
        await foreach (var update in StreamAsync(new GenerationRequest(prompt, options), cancel))
            if (update.Text.Length > 0) yield return update.Text;
    }

    /// <summary>
    /// Validation NELBO (t ~ U[1e-3, 1]) on a corpus: its deterministic validation split, or every row with
    /// <paramref name="allRows"/>. At most <paramref name="maxSequences"/> rows (0 = all). An L' = 1 model is scored
    /// at t = 1, its exact NLL, as the reference's eval_nll. <paramref name="noise"/> overrides the checkpoint's schedule.
    /// </summary>
    public EvalResult Evaluate(string corpusPath, int batchSize = 8, int maxSequences = 0, bool allRows = false, ulong seed = 1234,
        CancellationToken cancel = default, NoiseKind? noise = null)
    {
        if (batchSize <= 0) throw new UserInputException($"--batch-size must be positive, got {batchSize}");
        if (maxSequences < 0) throw new UserInputException($"--max-sequences must be ≥ 0 (0 = all), got {maxSequences}");
        MemoryEstimate.ForInference(Config, batchSize).EnsureFits("use a smaller --batch-size");
        var data = TokenDataset.FromCorpus(corpusPath, Tokenizer, Config.ModelLength);
        IEnumerable<int> rowIds = allRows ? Enumerable.Range(0, data.RowCount) : data.ValidRows;
        if (maxSequences > 0) rowIds = rowIds.Take(maxSequences);
        var rows = rowIds.Select(r => data.Row(r).ToArray()).ToList();
        BackendGate.Wait(cancel);
        try
        {
            using var evaluator = new Evaluator(Denoiser);
            return evaluator.Evaluate(rows, batchSize, Config.BlockSize == 1 ? NoiseSchedule.Autoregressive : NoiseSchedule.EvalWith(noise ?? Config.Noise), seed: seed, cancel: cancel);
        }
        finally { BackendGate.Release(); }
    }

    public void Dispose()
    {
        BackendGate.Wait();
        try
        {
            Denoiser.Dispose();
            Backend.Dispose();
        }
        finally { BackendGate.Release(); }
    }

    static string InferenceHint(string directory) =>
        $"check hidden_dim, n_blocks, model_length and vocab_size in {Path.Combine(directory, ModelCheckpoint.ConfigFile)}";
}
