namespace FastBlockDiff.Engine.Text;

/// <summary>Decodes a growing token list and returns only the new text (BPE pieces may merge across blocks).</summary>
internal sealed class IncrementalDecoder(ITextTokenizer tokenizer)
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

    /// <summary>The text not returned yet, held back or not: call once the sequence is complete.</summary>
    public string Flush()
    {
        string full = tokenizer.Decode(_ids.ToArray());
        string rest = full.StartsWith(_text, StringComparison.Ordinal) ? full[_text.Length..] : "";
        _text = full;
        return rest;
    }
}
