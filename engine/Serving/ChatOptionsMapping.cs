using System.Globalization;
using FastBlockDiff.Engine.Sampling;
using Microsoft.Extensions.AI;

namespace FastBlockDiff.Engine.Serving;

/// <summary>
/// Maps Microsoft.Extensions.AI's <see cref="ChatOptions"/> onto <see cref="SamplingOptions"/>: MaxOutputTokens,
/// Temperature, TopP and Seed directly; StopSequences are returned for the caller to apply to the text; our own
/// settings come from AdditionalProperties under the keys below.
/// </summary>
public static class ChatOptionsMapping
{
    /// <summary>"ddpm", "first-hitting" or "confidence".</summary>
    public const string Sampler = "sampler";
    /// <summary>Denoising steps per block (0 = the block size).</summary>
    public const string Steps = "steps";
    /// <summary>Threshold of the confidence sampler, in (0, 1].</summary>
    public const string Confidence = "confidence";
    /// <summary>Block-level stop rule: stop at EOS (true/false).</summary>
    public const string StopOnEos = "stop_on_eos";
    /// <summary>Block-level stop rule: entropy threshold in nats of the last <see cref="EntropyWindow"/> tokens (0 = never).</summary>
    public const string EntropyStop = "entropy_stop";
    public const string EntropyWindow = "entropy_window";

    public static (SamplingOptions Options, IReadOnlyList<string> StopSequences) Map(ChatOptions? chat, SamplingOptions defaults)
    {
        var o = defaults;
        if (chat == null) return (o, []);
        if (chat.MaxOutputTokens is { } max) o = o with { MaxTokens = max };
        if (chat.Temperature is { } t) o = o with { Temperature = t };
        if (chat.TopP is { } p) o = o with { TopP = p };
        if (chat.Seed is { } seed) o = o with { Seed = unchecked((ulong)seed) };
        if (chat.AdditionalProperties is { } extra)
        {
            foreach (var (key, value) in extra)
            {
                o = key switch
                {
                    Sampler => o with { Kind = SamplerKindOf(Text(key, value)) },
                    Steps => o with { StepsPerBlock = Int(key, value) },
                    Confidence => o with { ConfidenceThreshold = Float(key, value) },
                    StopOnEos => o with { StopOnEos = Bool(key, value) },
                    EntropyStop => o with { EntropyThreshold = Float(key, value) },
                    EntropyWindow => o with { EntropyWindow = Int(key, value) },
                    _ => o,   // other middleware's properties are not ours to refuse
                };
            }
        }
        var stops = chat.StopSequences?.Where(s => !string.IsNullOrEmpty(s)).ToArray() ?? [];
        o.Validate();
        if (o.EntropyWindow <= 0) throw new UserInputException($"{EntropyWindow} must be positive, got {o.EntropyWindow}");
        return (o, stops);
    }

    public static SamplerKind SamplerKindOf(string name) => name switch
    {
        "ddpm" => SamplerKind.Ddpm,
        "first-hitting" => SamplerKind.FirstHitting,
        "confidence" => SamplerKind.Confidence,
        _ => throw new UserInputException($"unknown sampler '{name}': use ddpm, first-hitting or confidence"),
    };

    // values arrive as CLR values or as JsonElement (deserialised requests): read both through their text
    static string Text(string key, object? value) => value switch
    {
        null => throw new UserInputException($"'{key}' has no value"),
        System.Text.Json.JsonElement { ValueKind: System.Text.Json.JsonValueKind.String } e => e.GetString()!,
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString()!,
    };

    static int Int(string key, object? value) => int.TryParse(Text(key, value), NumberStyles.Integer, CultureInfo.InvariantCulture, out int v)
        ? v : throw new UserInputException($"'{key}' must be an integer, got '{Text(key, value)}'");

    static float Float(string key, object? value) => float.TryParse(Text(key, value), NumberStyles.Float, CultureInfo.InvariantCulture, out float v) && float.IsFinite(v)
        ? v : throw new UserInputException($"'{key}' must be a finite number, got '{Text(key, value)}'");

    static bool Bool(string key, object? value) => bool.TryParse(Text(key, value), out bool v)
        ? v : throw new UserInputException($"'{key}' must be true or false, got '{Text(key, value)}'");
}
