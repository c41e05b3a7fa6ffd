using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Model;

/// <summary>
/// Keys (already rotated at their absolute positions) and values of the committed clean tokens, per layer,
/// laid out [Batch, Capacity, HiddenDim]. Because RoPE depends only on i - j, dropping the oldest rows keeps
/// the remaining ones exact: the cache is a sliding window of at most Capacity tokens.
/// </summary>
public sealed class KvCache : IDisposable
{
    public readonly int Batch, Capacity;
    public int Length { get; private set; }
    public readonly FloatView[] K, V;
    readonly IBackend _b;
    readonly int _dim;
    FloatView? _scratch;

    public KvCache(IBackend backend, ModelConfig config, int batch, int capacity)
    {
        _b = backend; Batch = batch; Capacity = capacity; _dim = config.HiddenDim;
        K = new FloatView[config.Layers]; V = new FloatView[config.Layers];
        for (int l = 0; l < config.Layers; l++)
        {
            K[l] = backend.AllocFloat(batch * capacity * _dim);
            V[l] = backend.AllocFloat(batch * capacity * _dim);
        }
    }

    /// <summary>Makes room for <paramref name="rows"/> more tokens, dropping the oldest when the window is full.</summary>
    public void MakeRoom(int rows)
    {
        if (rows > Capacity) throw new ArgumentException($"a block of {rows} tokens does not fit a cache of {Capacity}");
        int drop = Length + rows - Capacity;
        if (drop <= 0) return;
        int keep = Length - drop;
        _scratch ??= _b.AllocFloat(Capacity * _dim);
        foreach (var buf in K.Concat(V))
            for (int s = 0; s < Batch; s++)
            {
                var seq = buf.Slice(s * Capacity * _dim, Capacity * _dim);
                _b.Copy(_scratch.Value.Slice(0, keep * _dim), seq.Slice(drop * _dim, keep * _dim));
                _b.Copy(seq.Slice(0, keep * _dim), _scratch.Value.Slice(0, keep * _dim));
            }
        Length = keep;
    }

    /// <summary>Appends the k/v parts of a block's qkv rows ([Batch, rows, 3·D]) at the end of the window of layer l.</summary>
    internal void Append(int layer, FloatView qkv, int rows)
    {
        for (int s = 0; s < Batch; s++)
        {
            var src = qkv.Slice(s * rows * 3 * _dim, rows * 3 * _dim);
            _b.CopyRows(K[layer].Slice((s * Capacity + Length) * _dim, rows * _dim), _dim, src.Slice(_dim), 3 * _dim, rows, _dim);
            _b.CopyRows(V[layer].Slice((s * Capacity + Length) * _dim, rows * _dim), _dim, src.Slice(2 * _dim), 3 * _dim, rows, _dim);
        }
    }

    internal void Advance(int rows) => Length += rows;

    public void Reset() => Length = 0;

    /// <summary>Frees the cache's buffers (each allocated by and owned by this cache).</summary>
    public void Dispose()
    {
        foreach (var buf in K.Concat(V)) buf.Storage.Dispose();
        _scratch?.Storage.Dispose();
        _scratch = null;
    }
}
