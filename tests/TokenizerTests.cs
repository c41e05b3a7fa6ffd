using System.Text;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Text;

namespace FastBlockDiff.Tests;

public class TokenizerTests
{
    [Fact]
    public void ByteTokenizerRoundTripsAndHasFixedSpecials()
    {
        var t = new ByteTokenizer();
        Assert.Equal(259, t.VocabSize);
        Assert.Equal((256, 257, 258, 259), (t.BosId, t.EosId, t.PadId!.Value, t.MaskId));
        Assert.Equal(260, ((ITextTokenizer)t).ModelVocabSize);
        string s = "héllo, 世界!\n";
        var ids = t.Encode(s);
        Assert.Equal(Encoding.UTF8.GetBytes(s).Select(b => (int)b), ids);
        Assert.Equal(s, t.Decode(ids));
        Assert.Empty(t.Encode(""));
    }

    [Fact]
    public void ByteTokenizerDecodeToleratesInvalidUtf8AndRendersSpecials()
    {
        var t = new ByteTokenizer();
        Assert.Equal("\uFFFDA", t.Decode([0xFF, 0x41]));
        int[] ids = [256, 0x68, 0x69, 259, 257, 258];
        Assert.Equal("hi", t.Decode(ids));
        Assert.Equal("<|bos|>hi<|mask|><|eos|><|pad|>", t.Decode(ids, skipSpecial: false));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([260]));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([-1]));
    }

    [Fact]
    public void MaskIdCanBeConfigured()
    {
        var t = TokenizerFactory.Load("byte", maskId: 300);
        Assert.Equal(300, t.MaskId);
        Assert.Equal(301, t.ModelVocabSize);
        Assert.Throws<UserInputException>(() => TokenizerFactory.Load("byte", maskId: 257));
    }

    private static string WriteTinyGpt2(string dir, bool withEndOfText = true)
    {
        Directory.CreateDirectory(dir);
        // Byte-level vocabulary: 'Ġ' is the byte-level form of the space character.
        var vocab = new Dictionary<string, int>
        {
            ["h"] = 0, ["e"] = 1, ["l"] = 2, ["o"] = 3, ["Ġ"] = 4, ["w"] = 5, ["r"] = 6, ["d"] = 7,
            ["he"] = 8, ["ll"] = 9, ["hell"] = 10, ["hello"] = 11, ["Ġw"] = 12, ["or"] = 13,
            ["Ġwor"] = 14, ["ld"] = 15, ["Ġworld"] = 16,
        };
        if (withEndOfText) vocab["<|endoftext|>"] = 17;
        File.WriteAllText(Path.Combine(dir, "vocab.json"), System.Text.Json.JsonSerializer.Serialize(vocab));
        File.WriteAllText(Path.Combine(dir, "merges.txt"),
            "#version: 0.2\nh e\nl l\nhe ll\nhell o\nĠ w\no r\nĠw or\nl d\nĠwor ld\n");
        return dir;
    }

    [Fact]
    public void Gpt2StyleBpeFromVocabAndMerges()
    {
        using var tmp = new TempDir();
        string dir = WriteTinyGpt2(Path.Combine(tmp.Path, "gpt2"));
        foreach (var spec in new[] { "gpt2:" + dir, dir })
        {
            var t = TokenizerFactory.Load(spec);
            Assert.Equal(18, t.VocabSize);
            Assert.Equal(17, t.BosId);
            Assert.Equal(17, t.EosId);
            Assert.Equal(18, t.MaskId);
            Assert.Null(t.PadId);
            Assert.Equal([11, 16], t.Encode("hello world"));
            Assert.Equal([11, 17, 16], t.Encode("hello<|endoftext|> world"));
            Assert.Equal([10, 12], t.Encode("hell w"));
            Assert.Equal([10, 4, 4, 12], t.Encode("hell   w")); // GPT-2 splits "  " + " w"
            Assert.Equal("hello world", t.Decode([11, 16]));
            Assert.Equal("hello world", t.Decode([17, 11, 18, 16]));
            Assert.Equal("<|endoftext|>hello<|mask|> world", t.Decode([17, 11, 18, 16], skipSpecial: false));
            var d = t.Describe();
            Assert.Equal("gpt2", d.Kind);
            Assert.Equal(2, d.Files.Count);
            var json = System.Text.Json.JsonSerializer.Serialize(d);
            var d2 = System.Text.Json.JsonSerializer.Deserialize<TokenizerDescriptor>(json)!;
            Assert.Equal(d.Spec, d2.Spec);
            Assert.Equal(d.Files, d2.Files);
            var again = TokenizerFactory.Load(d2);
            Assert.Equal(t.Encode("hello world"), again.Encode("hello world"));
        }
    }

    [Fact]
    public void Gpt2VocabWithoutEndOfTextGetsOneAppended()
    {
        using var tmp = new TempDir();
        var t = TokenizerFactory.Load("gpt2:" + WriteTinyGpt2(Path.Combine(tmp.Path, "g"), withEndOfText: false));
        Assert.Equal(17, t.EosId);
        Assert.Equal(18, t.VocabSize);
        Assert.Equal([11, 17], t.Encode("hello<|endoftext|>"));
    }

    [Fact]
    public void BadSpecsAndMissingFilesNameTheProblem()
    {
        using var tmp = new TempDir();
        var e = Assert.Throws<UserInputException>(() => TokenizerFactory.Load("gpt2:" + Path.Combine(tmp.Path, "nope")));
        Assert.Contains("nope", e.Message);

        string dir = WriteTinyGpt2(Path.Combine(tmp.Path, "nomerges"));
        File.Delete(Path.Combine(dir, "merges.txt"));
        e = Assert.Throws<UserInputException>(() => TokenizerFactory.Load(dir));
        Assert.Contains("merges.txt", e.Message);

        string bad = WriteTinyGpt2(Path.Combine(tmp.Path, "badjson"));
        File.WriteAllText(Path.Combine(bad, "vocab.json"), "{\"a\": 1,");
        e = Assert.Throws<UserInputException>(() => TokenizerFactory.Load("gpt2:" + bad));
        Assert.Contains("vocab.json", e.Message);

        e = Assert.Throws<UserInputException>(() => TokenizerFactory.Load("sentencepiece-magic"));
        Assert.Contains("sentencepiece-magic", e.Message);
        e = Assert.Throws<UserInputException>(() => TokenizerFactory.Load("tiktoken:" + Path.Combine(tmp.Path, "x.tiktoken")));
        Assert.Contains("x.tiktoken", e.Message);
        Assert.Throws<UserInputException>(() => TokenizerFactory.Load(""));
    }

    [Fact]
    public void Gpt2ByteLevelHandlesNonAsciiAndLoneBytes()
    {
        using var tmp = new TempDir();
        string dir = Path.Combine(tmp.Path, "utf8");
        Directory.CreateDirectory(dir);
        // 'é' is UTF-8 C3 A9, which GPT-2's byte-to-unicode table writes as "Ã" (U+00C3) and "©" (U+00A9).
        File.WriteAllText(Path.Combine(dir, "vocab.json"), "{\"Ã\":0,\"©\":1,\"Ã©\":2,\"x\":3,\"<|endoftext|>\":4}");
        File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\nÃ ©\n");
        var t = TokenizerFactory.Load(dir);
        Assert.Equal([2, 3], t.Encode("éx"));
        Assert.Equal("éx", t.Decode([0, 1, 3]));
        var lone = t.Decode([0, 3]); // invalid UTF-8 (a lead byte alone) must not throw
        Assert.EndsWith("x", lone);
    }

    [Fact]
    public void TiktokenFileNamedLikeAKnownEncodingMatchesTheBuiltIn()
    {
        // Extract the cl100k rank file shipped inside the NuGet data package and load it as a file.
        using var tmp = new TempDir();
        var asm = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Cl100kBase");
        string res = asm.GetManifestResourceNames().Single(n => n.Contains("cl100k_base.tiktoken"));
        string file = Path.Combine(tmp.Path, "cl100k_base.tiktoken");
        using (var src = asm.GetManifestResourceStream(res)!)
        {
            Stream data = res.EndsWith(".deflate") ? new System.IO.Compression.DeflateStream(src, System.IO.Compression.CompressionMode.Decompress) : src;
            // The package stores "Capacity: N" then one base64 token per line (rank = line index);
            // rewrite it in the standard tiktoken layout "base64 rank".
            using var reader = new StreamReader(data);
            using var w = new StreamWriter(file);
            int rank = 0;
            for (string? line; (line = reader.ReadLine()) != null;)
            {
                if (line.Length == 0 || line.StartsWith("Capacity:")) continue;
                int sp = line.IndexOf(' ');
                w.Write(sp > 0 ? line : $"{line} {rank}");
                w.Write('\n');
                rank++;
            }
        }
        var fromFile = TokenizerFactory.Load("tiktoken:" + file);
        var builtIn = TokenizerFactory.Load("cl100k");
        Assert.Equal(builtIn.VocabSize, fromFile.VocabSize);
        Assert.Equal(builtIn.EosId, fromFile.EosId);
        string s = "Block diffusion  models, 1234567 tokens!\n\nÜber<|endoftext|>";
        Assert.Equal(builtIn.Encode(s), fromFile.Encode(s));
    }

    private static string WriteTinyTiktoken(string path)
    {
        var sb = new StringBuilder();
        for (int b = 0; b < 256; b++) sb.Append(Convert.ToBase64String([(byte)b])).Append(' ').Append(b).Append('\n');
        string[] merged = ["he", "ll", "hell", "hello"];
        for (int i = 0; i < merged.Length; i++)
            sb.Append(Convert.ToBase64String(Encoding.UTF8.GetBytes(merged[i]))).Append(' ').Append(256 + i).Append('\n');
        File.WriteAllText(path, sb.ToString());
        return path;
    }

    [Fact]
    public void TiktokenFileWithUnknownEncodingName()
    {
        using var tmp = new TempDir();
        string file = WriteTinyTiktoken(Path.Combine(tmp.Path, "tiny.tiktoken"));
        foreach (var spec in new[] { "tiktoken:" + file, file })
        {
            var t = TokenizerFactory.Load(spec);
            Assert.Equal(260, t.EosId);
            Assert.Equal(261, t.VocabSize);
            Assert.Equal(261, t.MaskId);
            Assert.Equal([259], t.Encode("hello"));
            string s = "hello, wörld!\n\tok";
            Assert.Equal(s, t.Decode(t.Encode(s)));
            Assert.Equal([259, 260], t.Encode("hello<|endoftext|>"));
            Assert.Equal("tiktoken", t.Describe().Kind);
        }
    }

    [Fact]
    public void TiktokenFileNamedR50kGetsGpt2Specials()
    {
        using var tmp = new TempDir();
        var sb = new StringBuilder();
        for (int b = 0; b < 256; b++) sb.Append(Convert.ToBase64String([(byte)b])).Append(' ').Append(b).Append('\n');
        string file = Path.Combine(tmp.Path, "r50k_base.tiktoken");
        File.WriteAllText(file, sb.ToString());
        var t = TokenizerFactory.Load(file);
        Assert.Equal((50256, 50256, 50257, 50257), (t.BosId, t.EosId, t.VocabSize, t.MaskId));
        Assert.Equal([104, 105, 50256], t.Encode("hi<|endoftext|>"));
    }

    [Fact]
    public void MalformedTiktokenFileIsRejectedWithLineNumber()
    {
        using var tmp = new TempDir();
        string file = Path.Combine(tmp.Path, "bad.tiktoken");
        File.WriteAllText(file, "YQ== 0\nnot-a-rank-line\n");
        var e = Assert.Throws<UserInputException>(() => TokenizerFactory.Load(file));
        Assert.Contains("bad.tiktoken", e.Message);
        Assert.Contains("line 2", e.Message);
    }

    [Fact]
    public void Cl100kFromNuGetData()
    {
        var t = TokenizerFactory.Load("cl100k");
        Assert.Equal(100277, t.VocabSize);
        Assert.Equal(100257, t.EosId);
        Assert.Equal(100257, t.BosId);
        Assert.Equal(100277, t.MaskId);
        Assert.Equal([9906, 1917], t.Encode("Hello world"));
        Assert.Equal("Hello world", t.Decode([100257, 9906, 1917, 100277]));
        Assert.Equal("cl100k", t.Describe().Spec);
    }

    [Fact]
    public void O200kFromNuGetData()
    {
        var t = TokenizerFactory.Load("o200k");
        Assert.Equal(199999, t.EosId);
        Assert.Equal(200019, t.VocabSize);
        Assert.Equal(200019, t.MaskId);
        Assert.Equal([13225, 2375], t.Encode("Hello world"));
        Assert.Equal("Hello world", t.Decode(t.Encode("Hello world")));
    }
}

/// <summary>A temporary directory removed on dispose.</summary>
file sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("fbd-tok-").FullName;
    public void Dispose() { try { Directory.Delete(Path, true); } catch { } }
}
