using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Text;

namespace FastBlockDiff.Engine.Data;

/// <summary>How the document stream becomes rows (see <see cref="TokenDataset"/>).</summary>
public enum RowPacking
{
    /// <summary>Rows are consecutive stretches of the stream; documents are separated by EOS (the reference's OWT packing).</summary>
    Wrap,
    /// <summary>Every row is [BOS] + chunk + [EOS].</summary>
    PerRow,
}

/// <summary>
/// A tokenised corpus packed into rows of <see cref="SeqLen"/> tokens, split into train and
/// validation rows.
/// <para>
/// Packing (<see cref="RowPacking"/>): every document is encoded (no special tokens) and followed by EOS;
/// all documents are concatenated in corpus order. <see cref="RowPacking.Wrap"/> (the default, as the
/// reference's OpenWebText runs: insert_train_special=False) cuts that stream into rows of SeqLen tokens
/// with no special token added at a row boundary; when BOS differs from EOS (the byte tokenizer) each
/// document also starts with BOS, so that generation, which starts from BOS, starts a document as in
/// training (for GPT-2, BOS = EOS = 50256 and EOS alone separates documents). <see cref="RowPacking.PerRow"/>
/// cuts chunks of SeqLen - 2 tokens and makes each row <c>[BOS] + chunk + [EOS]</c>. The incomplete last
/// chunk is dropped.
/// </para>
/// <para>
/// Train/validation split (deterministic, independent of the machine and of the number of rows
/// requested elsewhere): row <c>i</c> is a validation row iff
/// <c>SplitMix64.Hash(splitSeed, i) / 2^64 &lt; validFraction</c>. If that selects no validation
/// row although validFraction &gt; 0 and there are at least two rows, the row with the smallest
/// hash becomes the validation row; if it selects every row, the row with the largest hash goes
/// back to training. The same corpus, tokenizer, SeqLen, fraction and seed always give the same
/// split; rows spread over the whole corpus (not only its end, which would be one genre for Brown).
/// </para>
/// </summary>
public sealed class TokenDataset
{
    public const ulong DefaultSplitSeed = 0x5EED_B10C_D1FFUL;

    private readonly int[] _tokens;

    private TokenDataset(int[] tokens, int seqLen, int[] train, int[] valid, long streamTokens)
    {
        _tokens = tokens; SeqLen = seqLen; TrainRows = train; ValidRows = valid; StreamTokens = streamTokens;
    }

    public int SeqLen { get; }
    public int RowCount => _tokens.Length / SeqLen;
    /// <summary>Tokens in the concatenated document stream before packing (documents + their EOS).</summary>
    public long StreamTokens { get; }
    /// <summary>Row indices used for training, ascending.</summary>
    public IReadOnlyList<int> TrainRows { get; }
    /// <summary>Row indices held out for validation, ascending.</summary>
    public IReadOnlyList<int> ValidRows { get; }
    /// <summary>All packed rows, row-major [RowCount, SeqLen].</summary>
    public ReadOnlySpan<int> Tokens => _tokens;
    public ReadOnlySpan<int> Row(int r) => _tokens.AsSpan(checked(r * SeqLen), SeqLen);

    /// <summary>Encodes documents (in parallel, order preserved) and packs them.</summary>
    public static TokenDataset Build(IReadOnlyList<string> documents, ITextTokenizer tokenizer, int seqLen,
                                     double validFraction = 0.05, ulong splitSeed = DefaultSplitSeed, RowPacking packing = RowPacking.Wrap)
        => FromStream(EncodeStream(documents, tokenizer), tokenizer, seqLen, validFraction, splitSeed, packing);

    /// <summary>The document stream: each document's ids followed by EOS.</summary>
    public static int[] EncodeStream(IReadOnlyList<string> documents, ITextTokenizer tokenizer)
    {
        var encoded = new int[documents.Count][];
        Parallel.For(0, documents.Count, i => encoded[i] = tokenizer.Encode(documents[i]));
        long total = encoded.Sum(e => (long)e.Length + 1);
        if (total > Array.MaxLength) throw new UserInputException($"corpus too large: {total} tokens");
        var stream = new int[total];
        int p = 0;
        foreach (var e in encoded)
        {
            e.CopyTo(stream, p); p += e.Length;
            stream[p++] = tokenizer.EosId;
        }
        return stream;
    }

    /// <summary>Packs an already encoded document stream (documents each followed by EOS).</summary>
    public static TokenDataset FromStream(ReadOnlySpan<int> stream, ITextTokenizer tokenizer, int seqLen,
                                          double validFraction = 0.05, ulong splitSeed = DefaultSplitSeed, RowPacking packing = RowPacking.Wrap)
    {
        bool perRow = packing == RowPacking.PerRow;
        if (seqLen < (perRow ? 3 : 2)) throw new UserInputException($"sequence length {seqLen} is too small (at least {(perRow ? "3: BOS, one token, EOS" : "2")})");
        if (!(validFraction >= 0 && validFraction < 1)) throw new UserInputException($"validation fraction {validFraction} must be in [0, 1)");
        if (!perRow && tokenizer.BosId != tokenizer.EosId) stream = WithBosPerDocument(stream, tokenizer);
        int chunk = perRow ? seqLen - 2 : seqLen;
        long rows = stream.Length / chunk;
        if (rows == 0)
            throw new UserInputException($"corpus too small: {stream.Length} tokens cannot fill one row of {seqLen} tokens ({chunk} text tokens per row)");
        if (rows * seqLen > Array.MaxLength) throw new UserInputException($"corpus too large: {rows} rows of {seqLen}");
        var tokens = new int[rows * seqLen];
        for (long r = 0; r < rows; r++)
        {
            var row = tokens.AsSpan((int)(r * seqLen), seqLen);
            if (!perRow) { stream.Slice((int)(r * chunk), chunk).CopyTo(row); continue; }
            row[0] = tokenizer.BosId;
            stream.Slice((int)(r * chunk), chunk).CopyTo(row[1..]);
            row[^1] = tokenizer.EosId;
        }
        var (train, valid) = Split((int)rows, validFraction, splitSeed);
        return new TokenDataset(tokens, seqLen, train, valid, stream.Length);
    }

    /// <summary>BOS before every document of an EOS-terminated stream.</summary>
    static int[] WithBosPerDocument(ReadOnlySpan<int> stream, ITextTokenizer tokenizer)
    {
        int docs = 0;
        foreach (var t in stream) if (t == tokenizer.EosId) docs++;
        if (stream.Length > 0 && stream[^1] != tokenizer.EosId) docs++;
        var r = new int[stream.Length + docs];
        int p = 0;
        bool start = true;
        foreach (var t in stream)
        {
            if (start) r[p++] = tokenizer.BosId;
            r[p++] = t;
            start = t == tokenizer.EosId;
        }
        return r;
    }

    /// <summary>The deterministic hash split described on the class.</summary>
    public static (int[] train, int[] valid) Split(int rows, double validFraction, ulong seed)
    {
        var train = new List<int>(rows); var valid = new List<int>();
        double scale = 1.0 / 18446744073709551616.0; // 2^-64
        for (int i = 0; i < rows; i++)
            (SplitMix64.Hash(seed, (ulong)i) * scale < validFraction ? valid : train).Add(i);
        if (validFraction > 0 && rows >= 2)
        {
            if (valid.Count == 0)
            {
                int best = Enumerable.Range(0, rows).MinBy(i => SplitMix64.Hash(seed, (ulong)i));
                valid.Add(best); train.Remove(best);
            }
            else if (train.Count == 0)
            {
                int worst = Enumerable.Range(0, rows).MaxBy(i => SplitMix64.Hash(seed, (ulong)i));
                train.Add(worst); valid.Remove(worst);
            }
        }
        return (train.ToArray(), valid.ToArray());
    }

    /// <summary>
    /// Reads the corpus at <paramref name="corpusPath"/> (see <see cref="Corpus"/>), encodes and packs it.
    /// With <paramref name="cacheDir"/>, the encoded document stream is cached there in a file keyed by
    /// the tokenizer spec, corpus options and the corpus files' paths, sizes and modification times,
    /// so a second run skips tokenisation.
    /// </summary>
    public static TokenDataset FromCorpus(string corpusPath, ITextTokenizer tokenizer, int seqLen,
                                          double validFraction = 0.05, ulong splitSeed = DefaultSplitSeed,
                                          CorpusOptions? options = null, string? cacheDir = null, RowPacking packing = RowPacking.Wrap)
    {
        options ??= new CorpusOptions();
        int[]? stream = null;
        string? cacheFile = null;
        if (cacheDir != null)
        {
            cacheFile = Path.Combine(cacheDir, $"tokens-{CacheKey(corpusPath, tokenizer, options)}.bin");
            stream = TryReadCache(cacheFile);
            if (stream != null) RequireIdsInVocabulary(stream, tokenizer, $"token cache '{cacheFile}'", "it is corrupt: delete it and run again");
        }
        if (stream == null)
        {
            var docs = Corpus.ReadDocuments(corpusPath, options);
            stream = EncodeStream(docs, tokenizer);
            if (cacheFile != null)
            {
                Directory.CreateDirectory(cacheDir!);
                WriteCache(cacheFile, stream);
            }
        }
        return FromStream(stream, tokenizer, seqLen, validFraction, splitSeed, packing);
    }

    /// <summary>Refuses a stream holding an id the model has no embedding row for, or the MASK id, before it reaches a kernel.</summary>
    public static void RequireIdsInVocabulary(ReadOnlySpan<int> stream, ITextTokenizer tokenizer, string source, string advice)
    {
        int vocab = tokenizer.ModelVocabSize, mask = tokenizer.MaskId;
        for (int i = 0; i < stream.Length; i++)
            if ((uint)stream[i] >= (uint)vocab || stream[i] == mask)
                throw new UserInputException($"{source} holds token id {stream[i]} at position {i}, outside the vocabulary [0, {vocab}) of tokenizer {tokenizer.Name} (or its MASK id {mask}): {advice}");
    }

    private static readonly byte[] CacheMagic = "FBDTOK1\0"u8.ToArray();

    private static string CacheKey(string corpusPath, ITextTokenizer tokenizer, CorpusOptions options)
    {
        var sb = new StringBuilder();
        var d = tokenizer.Describe();
        sb.Append(d.Spec).Append('|').Append(d.VocabSize).Append('|').Append(d.EosId).Append('|');
        sb.Append(options.JsonField).Append('|').Append(options.Split).Append('|');
        IEnumerable<string> files = Directory.Exists(corpusPath)
            ? Directory.EnumerateFiles(corpusPath, "*.txt", SearchOption.AllDirectories).OrderBy(f => f, StringComparer.Ordinal)
            : [corpusPath];
        foreach (var f in files)
        {
            var fi = new FileInfo(f);
            if (!fi.Exists) throw new UserInputException($"corpus '{corpusPath}' does not exist");
            sb.Append(fi.FullName).Append(':').Append(fi.Length).Append(':').Append(fi.LastWriteTimeUtc.Ticks).Append('|');
        }
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())))[..24].ToLowerInvariant();
    }

    private static int[]? TryReadCache(string file)
    {
        try
        {
            if (!File.Exists(file)) return null;
            var bytes = File.ReadAllBytes(file);
            if (bytes.Length < 16 || !bytes.AsSpan(0, 8).SequenceEqual(CacheMagic)) return null;
            long n = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(8));
            if (n < 0 || 16 + 4 * n != bytes.Length) return null;
            return MemoryMarshal.Cast<byte, int>(bytes.AsSpan(16)).ToArray();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    private static void WriteCache(string file, int[] stream)
    {
        AtomicFile.Write(file, s =>
        {
            s.Write(CacheMagic);
            Span<byte> n = stackalloc byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(n, stream.Length);
            s.Write(n);
            s.Write(MemoryMarshal.AsBytes(stream.AsSpan()));
        });
    }
}
