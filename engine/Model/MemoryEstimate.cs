using System.Globalization;

namespace FastBlockDiff.Engine.Model;

/// <summary>
/// What a model of a given <see cref="ModelConfig"/> needs before any of it is allocated: its parameter count and
/// the bytes of the training state, activations and caches, all in 64-bit arithmetic. <see cref="EnsureFits"/>
/// refuses a model whose largest single buffer exceeds what one .NET array or device view can index, or whose
/// total exceeds the memory this machine has available, with a message that says both numbers.
/// </summary>
public sealed record MemoryEstimate(string Purpose, long Parameters, long Bytes, long LargestBuffer, string LargestBufferName)
{
    /// <summary>Elements one flat buffer may hold (float[] on the host, FloatView on a device).</summary>
    public static readonly long MaxBufferElements = Array.MaxLength;

    /// <summary>Parameters of the bd3lms DiT of <paramref name="c"/>, as <see cref="Denoiser.BuildParameterSet"/> lays them out.</summary>
    public static long ParameterCount(ModelConfig c)
    {
        checked
        {
            long d = c.HiddenDim, v = c.VocabSize, cd = c.CondDim, mlp = 4L * c.HiddenDim;
            long perLayer = d + 3 * d * d + d * d + d + mlp * d + mlp + d * mlp + d + 6 * d * cd + 6 * d;
            return v * d + cd * ModelConfig.FrequencyDim + cd + cd * cd + cd + c.Layers * perLayer + d + v * d + v + 2 * d * cd + 2 * d;
        }
    }

    /// <summary>
    /// Training with <paramref name="batch"/> sequences: on the device weights, gradients, two Adam moments and the EMA,
    /// activations of the 2L-token forward and the backward scratch; on the host the initial weights and the four
    /// arrays a checkpoint copies out.
    /// </summary>
    public static MemoryEstimate ForTraining(ModelConfig c, int batch) => Saturating("training", () =>
    {
        checked
        {
            long p = ParameterCount(c);
            var (act, largest, name) = Activations(c, batch, 2L * c.ModelLength, backward: true);
            long floats = 5 * p + act + 5 * p;
            return Make("training", p, floats, largest, name);
        }
    });

    /// <summary>Evaluation or sampling with <paramref name="batch"/> sequences: weights (device and the host copy they are loaded from), activations, KV cache and rotary tables.</summary>
    public static MemoryEstimate ForInference(ModelConfig c, int batch) => Saturating("inference", () =>
    {
        checked
        {
            long p = ParameterCount(c);
            var (act, largest, name) = Activations(c, batch, 2L * c.ModelLength, backward: false);
            long kv = 2L * c.Layers * batch * c.ModelLength * c.HiddenDim;
            long kvBuffer = (long)batch * c.ModelLength * c.HiddenDim;
            if (kvBuffer > largest) (largest, name) = (kvBuffer, "KV cache of one layer");
            long rotary = 2L * c.ModelLength * (c.HiddenDim / Math.Max(1, c.Heads) / 2);
            return Make("inference", p, 2 * p + act + kv + rotary, largest, name);
        }
    });

    /// <summary>Sizes beyond 64 bits are reported as long.MaxValue, which no machine has.</summary>
    static MemoryEstimate Saturating(string purpose, Func<MemoryEstimate> estimate)
    {
        try { return estimate(); }
        catch (OverflowException) { return new(purpose, long.MaxValue, long.MaxValue, long.MaxValue, "sizes (beyond 64-bit arithmetic)"); }
    }

    static (long Floats, long Largest, string Name) Activations(ModelConfig c, int batch, long length, bool backward)
    {
        checked
        {
            long n = batch * length, d = c.HiddenDim, mlp = 4L * c.HiddenDim, headRows = batch * (long)c.ModelLength;
            long perLayer = n * (3 * d + d + d + d + d + d + mlp + mlp + d) + n * (4 + c.Heads);
            long floats = c.Layers * perLayer + (c.Layers + 1) * n * d + headRows * (2 * d + 2 + c.VocabSize);
            if (backward) floats += n * (d + d + 3 * d + d + d + mlp) + 2 * headRows * d;
            var candidates = new (long, string)[]
            {
                (ParameterCount(c), "flat parameter buffer"), (n * mlp, "MLP activations of one layer"),
                (n * 3 * d, "attention q/k/v of one layer"), (headRows * c.VocabSize, "output logits"),
            };
            var (largest, name) = candidates.MaxBy(x => x.Item1);
            return (floats, largest, name);
        }
    }

    static MemoryEstimate Make(string purpose, long parameters, long floats, long largest, string name) =>
        new(purpose, parameters, floats > long.MaxValue / 4 ? long.MaxValue : 4 * floats, largest, name);

    /// <summary>
    /// Throws a <see cref="UserInputException"/> when a buffer is too large to index or the total exceeds
    /// <paramref name="availableBytes"/> (default: <see cref="AvailableBytes"/>). <paramref name="hint"/> says what to reduce.
    /// </summary>
    public void EnsureFits(string hint, long? availableBytes = null)
    {
        string model = $"model of {FormatCount(Parameters)} parameters";
        if (LargestBuffer > MaxBufferElements)
            throw new UserInputException($"{model}: its {LargestBufferName} would hold {FormatCount(LargestBuffer)} values, more than the {FormatCount(MaxBufferElements)} one buffer can index; {hint}");
        long available = availableBytes ?? AvailableBytes();
        if (Bytes > available)
            throw new UserInputException($"{model} needs {FormatBytes(Bytes)} for {Purpose}; {FormatBytes(available)} free; {hint}");
    }

    /// <summary>Memory available to this process: MemAvailable of /proc/meminfo on Linux, else what the GC reports.</summary>
    public static long AvailableBytes()
    {
        try
        {
            if (File.Exists("/proc/meminfo"))
                foreach (var line in File.ReadLines("/proc/meminfo"))
                    if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)
                        && long.TryParse(line["MemAvailable:".Length..].Trim().Split(' ')[0], NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                        return kb * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
    }

    public static string FormatBytes(long bytes) => bytes switch
    {
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):0.#} GB"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):0.#} MB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:0.#} KB"),
    };

    public static string FormatCount(long n) => n switch
    {
        >= 1_000_000_000 => string.Create(CultureInfo.InvariantCulture, $"{n / 1e9:0.##} G"),
        >= 1_000_000 => string.Create(CultureInfo.InvariantCulture, $"{n / 1e6:0.##} M"),
        >= 1_000 => string.Create(CultureInfo.InvariantCulture, $"{n / 1e3:0.##} k"),
        _ => n.ToString(CultureInfo.InvariantCulture),
    };
}
