using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace FastBlockDiff.Engine.Text;

/// <summary>
/// GPT-2's pre-tokenizer, <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c>, matched on
/// Unicode scalar values rather than UTF-16 code units: a character outside the Basic Multilingual Plane is a letter
/// or a digit by its own category, as in the reference's Python regex (a .NET Regex sees its two surrogates as
/// "other" and splits <c>𝟡𝟽🄂's</c> into <c>𝟡𝟽🄂'</c> + <c>s</c>). Special tokens are split out before this runs.
/// </summary>
public sealed class Gpt2PreTokenizer : PreTokenizer
{
    enum Kind { Letter, Number, Space, Other }

    static Kind KindAt(ReadOnlySpan<char> s, int i, out int width)
    {
        Rune.DecodeFromUtf16(s[i..], out var r, out width);
        if (width == 0) width = 1;
        if (Rune.IsWhiteSpace(r)) return Kind.Space;
        var cat = Rune.GetUnicodeCategory(r);
        return cat switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => Kind.Letter,
            UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => Kind.Number,
            _ => Kind.Other,
        };
    }

    static readonly string[] Contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

    /// <summary>Length of the match at <paramref name="i"/> (always ≥ 1 for a non-empty rest).</summary>
    static int MatchAt(ReadOnlySpan<char> s, int i)
    {
        var rest = s[i..];
        foreach (var c in Contractions) if (rest.StartsWith(c, StringComparison.Ordinal)) return c.Length;
        int start = i;
        if (s[i] == ' ' && i + 1 < s.Length) start = i + 1;   // the optional leading space of the next three alternatives
        foreach (var want in (ReadOnlySpan<Kind>)[Kind.Letter, Kind.Number, Kind.Other])
        {
            for (int from = start; from >= i; from--)        // ' ?' backtracks: with the space first, then without
            {
                if (from >= s.Length) continue;
                int j = from;
                while (j < s.Length && KindAt(s, j, out int w) == want) j += w;
                if (j > from) return j - i;
            }
        }
        // whitespace: \s+(?!\S) takes the run but leaves its last character when non-space follows; else \s+
        int end = i;
        while (end < s.Length && KindAt(s, end, out int w) == Kind.Space) end += w;
        if (end == i) return 1;   // unreachable: every character is one of the kinds above
        if (end == s.Length) return end - i;
        int last = end - 1;
        if (char.IsLowSurrogate(s[last]) && last - 1 > i) last--;
        return last > i ? last - i : end - i;
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
    {
        if (string.IsNullOrEmpty(text)) yield break;
        int i = 0;
        while (i < text.Length)
        {
            int n = MatchAt(text.AsSpan(), i);
            yield return (i, n);
            i += n;
        }
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => PreTokenize(text.ToString());

    /// <summary>The pieces of <paramref name="text"/> (for tests).</summary>
    public static IReadOnlyList<string> Split(string text) => [.. new Gpt2PreTokenizer().PreTokenize(text).Select(p => text.Substring(p.Offset, p.Length))];
}
