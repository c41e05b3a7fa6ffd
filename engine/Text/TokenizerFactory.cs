namespace FastBlockDiff.Engine.Text;

/// <summary>Creates tokenizers from a spec string (command line, config.json).</summary>
public static class TokenizerFactory
{
    public const string SpecHelp =
        "\"byte\", \"gpt2\" (built in), \"gpt2:DIR\" (or a directory holding vocab.json and merges.txt), \"tiktoken:FILE\" (or a *.tiktoken file), \"cl100k\", \"o200k\"";

    /// <summary>
    /// Loads a tokenizer. <paramref name="spec"/> is one of: "byte"; "gpt2:DIR" or a directory
    /// holding vocab.json + merges.txt; "tiktoken:FILE" or a path ending in .tiktoken;
    /// "cl100k" / "cl100k_base"; "o200k" / "o200k_base". <paramref name="maskId"/> overrides the
    /// default MASK id (= VocabSize). Anything else, or a missing file, is a
    /// <see cref="UserInputException"/> naming the spec or file.
    /// </summary>
    public static ITextTokenizer Load(string spec, int? maskId = null)
    {
        if (string.IsNullOrWhiteSpace(spec))
            throw new UserInputException($"empty tokenizer spec; expected one of {SpecHelp}");
        spec = spec.Trim();
        switch (spec.ToLowerInvariant())
        {
            case "byte": case "bytes": return new ByteTokenizer(maskId);
            case "cl100k": case "cl100k_base": return BpeTokenizer.FromEncoding("cl100k_base", maskId);
            case "o200k": case "o200k_base": return BpeTokenizer.FromEncoding("o200k_base", maskId);
            case "gpt2": return BpeTokenizer.FromGpt2Builtin(maskId);
        }
        if (spec.StartsWith("gpt2:", StringComparison.OrdinalIgnoreCase))
            return BpeTokenizer.FromGpt2Directory(spec["gpt2:".Length..], maskId);
        if (spec.StartsWith("tiktoken:", StringComparison.OrdinalIgnoreCase))
            return BpeTokenizer.FromTiktokenFile(spec["tiktoken:".Length..], maskId);
        if (Directory.Exists(spec))
        {
            if (File.Exists(Path.Combine(spec, "vocab.json")) || File.Exists(Path.Combine(spec, "merges.txt")))
                return BpeTokenizer.FromGpt2Directory(spec, maskId);
            throw new UserInputException($"tokenizer directory '{spec}' holds neither vocab.json nor merges.txt");
        }
        if (spec.EndsWith(".tiktoken", StringComparison.OrdinalIgnoreCase))
            return BpeTokenizer.FromTiktokenFile(spec, maskId);
        throw new UserInputException($"unknown tokenizer '{spec}' (no such file or directory); expected one of {SpecHelp}");
    }

    /// <summary>Reloads a tokenizer from its <see cref="TokenizerDescriptor"/>.</summary>
    public static ITextTokenizer Load(TokenizerDescriptor d)
    {
        var t = Load(d.Spec, d.MaskId);
        if (t.VocabSize != d.VocabSize || t.EosId != d.EosId || t.BosId != d.BosId)
            throw new UserInputException($"tokenizer '{d.Spec}' now has vocab {t.VocabSize}, BOS {t.BosId}, EOS {t.EosId}; the configuration recorded vocab {d.VocabSize}, BOS {d.BosId}, EOS {d.EosId}");
        return t;
    }
}
