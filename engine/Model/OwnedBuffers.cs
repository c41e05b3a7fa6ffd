using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Model;

/// <summary>
/// Device buffers allocated for one owner (a workspace, a KV cache, a trainer) and freed together by its Dispose.
/// Sizes are products of batch, length, width or vocabulary: they are formed in 64 bits and checked here, so an
/// overflow is an error naming the buffer and its factors instead of a wrapped (small or negative) allocation.
/// </summary>
public sealed class OwnedBuffers(IBackend backend) : IDisposable
{
    /// <summary>The most elements one buffer may hold (views index with int).</summary>
    public const long MaxElements = int.MaxValue;

    readonly List<DeviceStorage> _owned = [];

    /// <summary>Buffers allocated and not yet freed.</summary>
    public int Count => _owned.Count;

    public FloatView Float(string what, params ReadOnlySpan<long> factors)
    {
        var v = backend.AllocFloat(Elements(what, factors));
        _owned.Add(v.Storage);
        return v;
    }

    public IntView Int(string what, params ReadOnlySpan<long> factors)
    {
        var v = backend.AllocInt(Elements(what, factors));
        _owned.Add(v.Storage);
        return v;
    }

    /// <summary>Frees one buffer before the owner is done (a buffer being replaced by a larger one).</summary>
    public void Free(DeviceStorage storage)
    {
        if (_owned.Remove(storage)) storage.Dispose();
    }

    /// <summary>
    /// The product of <paramref name="factors"/> as an element count: in 64 bits, and an error when a factor is
    /// negative or the product exceeds <see cref="MaxElements"/>.
    /// </summary>
    public static int Elements(string what, params ReadOnlySpan<long> factors)
    {
        long n = 1;
        foreach (var f in factors)
        {
            if (f < 0) throw new UserInputException($"{what}: negative size factor {f} ({Describe(factors)})");
            if (f != 0 && n > MaxElements / f)
                throw new UserInputException($"{what}: {Describe(factors)} = {Product(factors):N0} elements, more than one device buffer holds ({MaxElements:N0}); lower the batch size or the sequence length");
            n *= f;
        }
        return (int)n;
    }

    static double Product(ReadOnlySpan<long> factors)
    {
        double p = 1;
        foreach (var f in factors) p *= f;
        return p;
    }

    static string Describe(ReadOnlySpan<long> factors)
    {
        var parts = new string[factors.Length];
        for (int i = 0; i < factors.Length; i++) parts[i] = factors[i].ToString();
        return string.Join(" × ", parts);
    }

    public void Dispose()
    {
        foreach (var s in _owned) s.Dispose();
        _owned.Clear();
    }
}
