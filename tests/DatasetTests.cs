using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Data;
using FastBlockDiff.Engine.Text;

namespace FastBlockDiff.Tests;

public class DatasetTests
{
    [Fact]
    public void TextFileSplitModes()
    {
        using var tmp = new TempDir();
        string f = Path.Combine(tmp.Path, "c.txt");
        File.WriteAllText(f, "one\ntwo\n\n\n  \nthree\r\n\r\nfour\n");
        Assert.Equal(["one\ntwo", "three", "four"], Corpus.ReadDocuments(f));
        Assert.Equal(["one", "two", "three", "four"], Corpus.ReadDocuments(f, new CorpusOptions { Split = TextSplit.Lines }));
        Assert.Single(Corpus.ReadDocuments(f, new CorpusOptions { Split = TextSplit.WholeFile }));
    }

    [Fact]
    public void FolderIsReadRecursivelyInSortedOrder()
    {
        using var tmp = new TempDir();
        Directory.CreateDirectory(Path.Combine(tmp.Path, "a"));
        File.WriteAllText(Path.Combine(tmp.Path, "b.txt"), "B");
        File.WriteAllText(Path.Combine(tmp.Path, "a", "z.txt"), "AZ");
        File.WriteAllText(Path.Combine(tmp.Path, "a.txt"), "A");
        File.WriteAllText(Path.Combine(tmp.Path, "ignored.md"), "no");
        Assert.Equal(["A", "AZ", "B"], Corpus.ReadDocuments(tmp.Path));
    }

    [Fact]
    public void JsonlWithConfigurableFieldAndClearErrors()
    {
        using var tmp = new TempDir();
        string f = Path.Combine(tmp.Path, "c.jsonl");
        File.WriteAllText(f, "{\"text\":\"hello\",\"body\":\"x\"}\n\n{\"text\":\"world\\n!\",\"body\":\"y\"}\n");
        Assert.Equal(["hello", "world\n!"], Corpus.ReadDocuments(f));
        Assert.Equal(["x", "y"], Corpus.ReadDocuments(f, new CorpusOptions { JsonField = "body" }));

        File.WriteAllText(f, "{\"text\":\"ok\"}\n{\"text\": oops}\n");
        var e = Assert.Throws<UserInputException>(() => Corpus.ReadDocuments(f));
        Assert.Contains("c.jsonl", e.Message); Assert.Contains("line 2", e.Message);
        File.WriteAllText(f, "{\"txt\":\"ok\"}\n");
        e = Assert.Throws<UserInputException>(() => Corpus.ReadDocuments(f));
        Assert.Contains("\"text\"", e.Message);
    }

    [Fact]
    public void EmptyOrMissingCorpusIsAUserError()
    {
        using var tmp = new TempDir();
        var e = Assert.Throws<UserInputException>(() => Corpus.ReadDocuments(Path.Combine(tmp.Path, "none.txt")));
        Assert.Contains("none.txt", e.Message);
        string empty = Path.Combine(tmp.Path, "empty.txt");
        File.WriteAllText(empty, "\n  \n");
        e = Assert.Throws<UserInputException>(() => Corpus.ReadDocuments(empty));
        Assert.Contains("empty", e.Message);
        Directory.CreateDirectory(Path.Combine(tmp.Path, "d"));
        Assert.Throws<UserInputException>(() => Corpus.ReadDocuments(Path.Combine(tmp.Path, "d")));
    }

    [Fact]
    public void PerRowPackingPutsBosAndEosInEveryRow()
    {
        var tok = new ByteTokenizer();
        var ds = TokenDataset.Build(["abc", "de"], tok, seqLen: 4, validFraction: 0, packing: RowPacking.PerRow);
        // stream: a b c EOS d e EOS -> chunks of 2: [a b] [c EOS] [d e], [EOS] dropped
        Assert.Equal(3, ds.RowCount);
        Assert.Equal(7, ds.StreamTokens);
        Assert.Equal([256, 97, 98, 257, 256, 99, 257, 257, 256, 100, 101, 257], ds.Tokens.ToArray());
        Assert.Equal([0, 1, 2], ds.TrainRows);
        Assert.Empty(ds.ValidRows);
        var e = Assert.Throws<UserInputException>(() => TokenDataset.Build(["ab"], tok, seqLen: 16, packing: RowPacking.PerRow));
        Assert.Contains("too small", e.Message);
    }

    [Fact]
    public void WrapPackingIsTheDefaultAndAddsNothingAtRowBoundaries()
    {
        // byte tokenizer (BOS 256 ≠ EOS 257): every document is BOS … EOS; rows are plain stretches of that stream
        var ds = TokenDataset.Build(["abc", "de", "fgh"], new ByteTokenizer(), seqLen: 5, validFraction: 0);
        // stream: BOS a b c EOS BOS d e EOS BOS f g h EOS (14) -> rows of 5: [BOS a b c EOS] [BOS d e EOS BOS], rest dropped
        Assert.Equal(14, ds.StreamTokens);
        Assert.Equal([256, 97, 98, 99, 257, 256, 100, 101, 257, 256], ds.Tokens.ToArray());

        // BOS = EOS (GPT-2 style): EOS alone separates documents, exactly the reference's wrapped stream
        var gptLike = new FixedTokenizer();
        var g = TokenDataset.Build(["ab", "c", "de"], gptLike, seqLen: 3, validFraction: 0);
        Assert.Equal(["a", "b", "|", "c", "|", "d"], g.Tokens.ToArray().Select(gptLike.Text));
        Assert.Equal(8, g.StreamTokens);
    }

    /// <summary>One id per letter, '|' (id 26) as both BOS and EOS, as GPT-2's 50256.</summary>
    sealed class FixedTokenizer : ITextTokenizer
    {
        public string Name => "letters";
        public int VocabSize => 27;
        public int BosId => 26;
        public int EosId => 26;
        public int MaskId => 27;
        public int? PadId => null;
        public int[] Encode(string text) => [.. text.Select(c => c - 'a')];
        public string Decode(ReadOnlySpan<int> ids, bool skipSpecial = true) => string.Concat(ids.ToArray().Select(Text));
        public string Text(int id) => id == 26 ? "|" : ((char)('a' + id)).ToString();
        public TokenizerDescriptor Describe() => new("letters", [], "letters", 27, 26, 26, 27, null);
    }

    [Fact]
    public void SplitIsDeterministicDisjointAndSpread()
    {
        var (train, valid) = TokenDataset.Split(1000, 0.1, TokenDataset.DefaultSplitSeed);
        var (train2, valid2) = TokenDataset.Split(1000, 0.1, TokenDataset.DefaultSplitSeed);
        Assert.Equal(train, train2); Assert.Equal(valid, valid2);
        Assert.Equal(Enumerable.Range(0, 1000), train.Concat(valid).Order());
        Assert.InRange(valid.Length, 70, 130);
        Assert.True(valid.Min() < 200 && valid.Max() > 800, "validation rows spread over the corpus");
        Assert.NotEqual(valid, TokenDataset.Split(1000, 0.1, 1).valid);
        // Tiny datasets still get one validation row and keep one training row.
        var (t3, v3) = TokenDataset.Split(2, 0.01, 5);
        Assert.Single(t3); Assert.Single(v3);
        var (t4, v4) = TokenDataset.Split(2, 0.99, 5);
        Assert.Single(t4); Assert.Single(v4);
    }

    private static TokenDataset Sample(int rows = 50)
    {
        var docs = Enumerable.Range(0, rows).Select(i => $"document number {i:D4}").ToList();
        return TokenDataset.Build(docs, new ByteTokenizer(), seqLen: 8, validFraction: 0.1);
    }

    [Fact]
    public void SamplerIsDeterministicAndCoversEachEpoch()
    {
        var ds = Sample();
        var a = BatchSampler.ForTraining(ds, 4, seed: 7);
        var b = BatchSampler.ForTraining(ds, 4, seed: 7);
        var c = BatchSampler.ForTraining(ds, 4, seed: 8);
        var ba = a.NextBatch();
        Assert.Equal(ba, b.NextBatch());
        Assert.NotEqual(ba, c.NextBatch());
        Assert.Equal(4 * 8, ba.Length);

        var s = BatchSampler.ForTraining(ds, 3, seed: 1);
        int n = ds.TrainRows.Count;
        var seen = new List<int>();
        for (int i = 0; i < n; i++) seen.AddRange(s.NextRowIndices()); // 3n rows = 3 epochs exactly
        for (int ep = 0; ep < 3; ep++)
            Assert.Equal(ds.TrainRows, seen.Skip(ep * n).Take(n).Order());
        Assert.NotEqual(seen.Take(n), seen.Skip(n).Take(n)); // a fresh permutation each epoch
        Assert.Equal(new SamplerState(3, 0, 1), s.State);

        var v = BatchSampler.ForValidation(ds, 2);
        Assert.Equal(ds.ValidRows.Take(2), v.NextRowIndices());
    }

    [Fact]
    public void SamplerResumesAtTheSamePosition()
    {
        var ds = Sample();
        var s = BatchSampler.ForTraining(ds, 5, seed: 42);
        for (int i = 0; i < 13; i++) s.NextBatch(); // crosses epoch boundaries
        var saved = s.State;
        var expected = Enumerable.Range(0, 6).Select(_ => s.NextBatch()).ToList();

        var r = BatchSampler.ForTraining(ds, 5, seed: 999);
        r.NextBatch(); // caches a permutation from another seed
        r.Restore(saved);
        Assert.Equal(saved, r.State);
        Assert.Equal(expected, Enumerable.Range(0, 6).Select(_ => r.NextBatch()).ToList());

        var k = BatchSampler.ForTraining(ds, 5, seed: 42);
        k.SeekToBatch(13);
        Assert.Equal(saved, k.State);

        Assert.Throws<UserInputException>(() => r.Restore(new SamplerState(0, 10_000, 42)));

        var big = new SamplerState(3, 17, ulong.MaxValue - 5);
        Assert.Equal(big, SamplerState.FromInt64s(big.ToInt64s()));
    }

    private sealed class CountingTokenizer(ITextTokenizer inner) : ITextTokenizer
    {
        public int Calls;
        public string Name => inner.Name;
        public int VocabSize => inner.VocabSize;
        public int BosId => inner.BosId;
        public int EosId => inner.EosId;
        public int MaskId => inner.MaskId;
        public int? PadId => inner.PadId;
        public int[] Encode(string text) { Interlocked.Increment(ref Calls); return inner.Encode(text); }
        public string Decode(ReadOnlySpan<int> ids, bool skipSpecial = true) => inner.Decode(ids, skipSpecial);
        public TokenizerDescriptor Describe() => inner.Describe();
    }

    [Fact]
    public void TokenCacheAvoidsReTokenising()
    {
        using var tmp = new TempDir();
        string corpus = Path.Combine(tmp.Path, "c.txt");
        File.WriteAllText(corpus, string.Join("\n\n", Enumerable.Range(0, 20).Select(i => $"paragraph {i} text")));
        string cache = Path.Combine(tmp.Path, "cache");
        var tok = new CountingTokenizer(new ByteTokenizer());
        var first = TokenDataset.FromCorpus(corpus, tok, 16, cacheDir: cache);
        int calls = tok.Calls;
        Assert.Equal(20, calls);
        var second = TokenDataset.FromCorpus(corpus, tok, 16, cacheDir: cache);
        Assert.Equal(calls, tok.Calls);
        Assert.Equal(first.Tokens.ToArray(), second.Tokens.ToArray());
        Assert.Single(Directory.GetFiles(cache));

        File.AppendAllText(corpus, "\n\nmore text here");
        var third = TokenDataset.FromCorpus(corpus, tok, 16, cacheDir: cache);
        Assert.True(tok.Calls > calls);
        Assert.True(third.StreamTokens > first.StreamTokens);
    }
}

file sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("fbd-ds-").FullName;
    public void Dispose() { try { Directory.Delete(Path, true); } catch { } }
}
