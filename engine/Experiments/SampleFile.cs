using System.Text.Json;
using FastBlockDiff.Engine.Formats;

namespace FastBlockDiff.Engine.Experiments;

/// <summary>
/// Generated samples to score: a .jsonl file with one {"text": ...} per line, or a text file with one sample per
/// line (blank lines skipped).
/// </summary>
public static class SampleFile
{
    public static IReadOnlyList<string> Read(string path)
    {
        if (!File.Exists(path)) throw new UserInputException($"--samples '{path}' does not exist: give a .jsonl file of {{\"text\": ...}} lines or a text file with one sample per line");
        InputFile.RequireRegular(path, "--samples");
        var samples = new List<string>();
        bool jsonl = path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase);
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            if (!jsonl) { samples.Add(line); continue; }
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("text", out var t) || t.ValueKind != JsonValueKind.String)
                    throw new UserInputException($"{path}:{lineNo}: expected an object with a string \"text\"");
                samples.Add(t.GetString()!);
            }
            catch (JsonException e) { throw new UserInputException($"{path}:{lineNo}: not valid JSON ({e.Message})"); }
        }
        if (samples.Count == 0) throw new UserInputException($"--samples '{path}' holds no sample");
        return samples;
    }
}
