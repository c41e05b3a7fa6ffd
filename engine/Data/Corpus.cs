using System.Text;
using System.Text.Json;

namespace FastBlockDiff.Engine.Data;

/// <summary>How a plain-text file is cut into documents.</summary>
public enum TextSplit
{
    /// <summary>Documents are separated by one or more blank lines; lines inside a document are joined with '\n'.</summary>
    BlankLines,
    /// <summary>Every non-empty line is a document.</summary>
    Lines,
    /// <summary>The whole file is one document.</summary>
    WholeFile,
}

/// <summary>Options for <see cref="Corpus.ReadDocuments"/>.</summary>
public sealed record CorpusOptions
{
    /// <summary>Field holding the text in JSONL records.</summary>
    public string JsonField { get; init; } = "text";
    /// <summary>How .txt files are split into documents.</summary>
    public TextSplit Split { get; init; } = TextSplit.BlankLines;
}

/// <summary>
/// Reads a training corpus as a sequence of documents from: a text file; a folder (all *.txt
/// files below it, recursively, in ordinal order of their relative paths, for determinism); or a
/// JSONL file (*.jsonl / *.json: one JSON object per line, text in <see cref="CorpusOptions.JsonField"/>).
/// A missing path, an unreadable record or a corpus without any text is a <see cref="UserInputException"/>.
/// </summary>
public static class Corpus
{
    public static List<string> ReadDocuments(string path, CorpusOptions? options = null)
    {
        options ??= new CorpusOptions();
        var docs = new List<string>();
        if (Directory.Exists(path))
        {
            var files = Directory.EnumerateFiles(path, "*.txt", SearchOption.AllDirectories)
                .Select(f => (rel: System.IO.Path.GetRelativePath(path, f).Replace('\\', '/'), full: f))
                .OrderBy(x => x.rel, StringComparer.Ordinal).ToList();
            if (files.Count == 0) throw new UserInputException($"corpus folder '{path}' contains no *.txt files");
            foreach (var f in files) docs.AddRange(ReadTextFile(f.full, options.Split));
        }
        else if (File.Exists(path))
        {
            string ext = System.IO.Path.GetExtension(path).ToLowerInvariant();
            if (ext is ".jsonl" or ".json" or ".ndjson") docs.AddRange(ReadJsonl(path, options.JsonField));
            else docs.AddRange(ReadTextFile(path, options.Split));
        }
        else throw new UserInputException($"corpus '{path}' does not exist (expected a text file, a folder of *.txt files or a .jsonl file)");

        if (docs.Count == 0) throw new UserInputException($"corpus '{path}' is empty: it holds no text");
        return docs;
    }

    public static IEnumerable<string> ReadTextFile(string file, TextSplit split)
    {
        string text;
        try { text = File.ReadAllText(file, Encoding.UTF8); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserInputException($"cannot read corpus file '{file}': {e.Message}", e); }
        text = text.Replace("\r\n", "\n");
        switch (split)
        {
            case TextSplit.WholeFile:
                if (text.Trim().Length > 0) yield return text;
                break;
            case TextSplit.Lines:
                foreach (var line in text.Split('\n'))
                    if (line.Trim().Length > 0) yield return line;
                break;
            default:
                var sb = new StringBuilder();
                foreach (var line in text.Split('\n'))
                {
                    if (line.Trim().Length == 0)
                    {
                        if (sb.Length > 0) { yield return sb.ToString(); sb.Clear(); }
                    }
                    else
                    {
                        if (sb.Length > 0) sb.Append('\n');
                        sb.Append(line);
                    }
                }
                if (sb.Length > 0) yield return sb.ToString();
                break;
        }
    }

    public static IEnumerable<string> ReadJsonl(string file, string field = "text")
    {
        int lineNo = 0;
        IEnumerable<string> lines;
        try { lines = File.ReadLines(file, Encoding.UTF8); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserInputException($"cannot read corpus file '{file}': {e.Message}", e); }
        foreach (var line in lines)
        {
            lineNo++;
            if (line.Trim().Length == 0) continue;
            string? text;
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind != JsonValueKind.Object)
                    throw new UserInputException($"corpus file '{file}', line {lineNo}: expected a JSON object");
                if (!doc.RootElement.TryGetProperty(field, out var v))
                    throw new UserInputException($"corpus file '{file}', line {lineNo}: no field \"{field}\"");
                if (v.ValueKind != JsonValueKind.String)
                    throw new UserInputException($"corpus file '{file}', line {lineNo}: field \"{field}\" is not a string");
                text = v.GetString();
            }
            catch (JsonException e)
            {
                throw new UserInputException($"corpus file '{file}', line {lineNo}: invalid JSON: {e.Message}", e);
            }
            catch (InvalidOperationException e) // a \u escape that is a lone surrogate: no valid text
            {
                throw new UserInputException($"corpus file '{file}', line {lineNo}: field \"{field}\" is not valid Unicode text: {e.Message}", e);
            }
            if (!string.IsNullOrEmpty(text)) yield return text;
        }
    }
}
