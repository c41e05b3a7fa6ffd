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

    // A backend runs one caller at a time (one stream, shared workspaces): generations and evaluations started from
    // several threads (GenerateAsync runs on a worker) take turns; the backend makes its context current on each.
    readonly Lock _gate = new();

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
    /// (sequence index, newly decoded text) after every committed block.
    /// </summary>
    public (string[] Texts, SampleResult Result) Sample(string prompt, SamplingOptions options, Action<int, string>? onText = null, CancellationToken cancel = default)
    {
        options.Validate();
        MemoryEstimate.ForInference(Config, options.BatchSize).EnsureFits("use a smaller --batch");
        var promptIds = Tokenizer.Encode(prompt);
        var decoders = Enumerable.Range(0, options.BatchSize).Select(_ => new IncrementalDecoder(Tokenizer)).ToArray();
        lock (_gate)
        {
            using var sampler = new BlockSampler(Denoiser, Tokenizer.BosId, Tokenizer.EosId);
            var result = sampler.Generate(promptIds, options, (s, ids) =>
            {
                string piece = decoders[s].Add(ids);
                if (piece.Length > 0) onText?.Invoke(s, piece);
            }, cancel);
            return ([.. result.Tokens.Select(t => Tokenizer.Decode(t))], result);
        }
    }

    /// <summary>Streams the text of one generated sequence as it is produced, block by block.</summary>
    public async IAsyncEnumerable<string> GenerateAsync(string prompt, SamplingOptions options, [EnumeratorCancellation] CancellationToken cancel = default)
    {
        var channel = Channel.CreateUnbounded<string>();
        var run = Task.Run(() =>
        {
            try { Sample(prompt, options with { BatchSize = 1 }, (_, piece) => channel.Writer.TryWrite(piece), cancel); channel.Writer.Complete(); }
            catch (Exception e) { channel.Writer.Complete(e); }
        }, CancellationToken.None);
        await foreach (var piece in channel.Reader.ReadAllAsync(CancellationToken.None)) yield return piece;
        await run;
    }

    /// <summary>
    /// Validation NELBO (t ~ U[1e-3, 1]) on a corpus: its deterministic validation split, or every row with
    /// <paramref name="allRows"/>. At most <paramref name="maxSequences"/> rows (0 = all). An L' = 1 model is scored
    /// at t = 1, its exact NLL, as the reference's eval_nll.
    /// </summary>
    public EvalResult Evaluate(string corpusPath, int batchSize = 8, int maxSequences = 0, bool allRows = false, ulong seed = 1234)
    {
        if (batchSize <= 0) throw new UserInputException($"--batch-size must be positive, got {batchSize}");
        if (maxSequences < 0) throw new UserInputException($"--max-sequences must be ≥ 0 (0 = all), got {maxSequences}");
        MemoryEstimate.ForInference(Config, batchSize).EnsureFits("use a smaller --batch-size");
        var data = TokenDataset.FromCorpus(corpusPath, Tokenizer, Config.ModelLength);
        IEnumerable<int> rowIds = allRows ? Enumerable.Range(0, data.RowCount) : data.ValidRows;
        if (maxSequences > 0) rowIds = rowIds.Take(maxSequences);
        var rows = rowIds.Select(r => data.Row(r).ToArray()).ToList();
        lock (_gate)
        {
            using var evaluator = new Evaluator(Denoiser);
            return evaluator.Evaluate(rows, batchSize, Config.BlockSize == 1 ? NoiseSchedule.Autoregressive : null, seed: seed);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            Denoiser.Dispose();
            Backend.Dispose();
        }
    }

    static string InferenceHint(string directory) =>
        $"check hidden_dim, n_blocks, model_length and vocab_size in {Path.Combine(directory, ModelCheckpoint.ConfigFile)}";

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
    }
}
