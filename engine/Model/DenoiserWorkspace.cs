using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Model;

/// <summary>
/// Activations of one forward pass over [Batch, SeqLen] tokens, kept for the backward pass, and the gradient
/// scratch the backward needs. Sized once per shape and reused across steps.
/// </summary>
public sealed class DenoiserWorkspace : IDisposable
{
    public readonly int Batch, SeqLen, Rows;
    public readonly IntView Ids, Positions;
    /// <summary>Residual stream: Xs[l] is the input of layer l, Xs[Layers] the output of the last.</summary>
    public readonly FloatView[] Xs;
    public readonly LayerActivations[] Layer;

    // output head over the selected rows
    public int HeadRowStart, HeadRowCount;
    public FloatView HeadInput, HeadMean, HeadRstd, HeadNorm, Logits;
    int _headCapacity;

    // backward scratch (allocated on first backward)
    FloatView? _dx, _dh, _dqkv, _do, _dy, _du, _dHeadIn, _dHeadNorm;

    readonly IBackend _b;
    readonly ModelConfig _c;
    readonly OwnedBuffers _buffers;

    public sealed class LayerActivations
    {
        public FloatView Mean1, Rstd1, H1, Qkv, Attn, Lse, YAttn, XMid, Mean2, Rstd2, H2, U, G, YMlp;
    }

    public DenoiserWorkspace(IBackend backend, ModelConfig config, int batch, int seqLen)
    {
        _b = backend; _c = config; Batch = batch; SeqLen = seqLen;
        _buffers = new OwnedBuffers(backend);
        Rows = OwnedBuffers.Elements("workspace rows (batch × sequence length)", batch, seqLen);
        long n = Rows, d = config.HiddenDim;
        var o = _buffers;
        Ids = o.Int("token ids", n);
        Positions = o.Int("positions", n);
        Xs = new FloatView[config.Layers + 1];
        for (int l = 0; l <= config.Layers; l++) Xs[l] = o.Float("residual stream", n, d);
        Layer = new LayerActivations[config.Layers];
        for (int l = 0; l < config.Layers; l++)
            Layer[l] = new LayerActivations
            {
                Mean1 = o.Float("norm1 mean", n), Rstd1 = o.Float("norm1 rstd", n), H1 = o.Float("norm1 output", n, d),
                Qkv = o.Float("qkv", n, 3, d), Attn = o.Float("attention output", n, d), Lse = o.Float("attention logsumexp", n, config.Heads),
                YAttn = o.Float("attention projection", n, d), XMid = o.Float("residual stream", n, d),
                Mean2 = o.Float("norm2 mean", n), Rstd2 = o.Float("norm2 rstd", n), H2 = o.Float("norm2 output", n, d),
                U = o.Float("mlp hidden", n, config.MlpDim), G = o.Float("mlp activation", n, config.MlpDim), YMlp = o.Float("mlp output", n, d),
            };
    }

    /// <summary>Device buffers this workspace holds (for tests of ownership).</summary>
    public int BufferCount => _buffers.Count;

    /// <summary>Frees every buffer of the workspace.</summary>
    public void Dispose() => _buffers.Dispose();

    /// <summary>Sizes the head buffers for rowCount selected rows per sequence.</summary>
    internal void PrepareHead(int rowStart, int rowCount)
    {
        HeadRowStart = rowStart; HeadRowCount = rowCount;
        EnsureHeadRows(OwnedBuffers.Elements("output head rows (batch × rows)", Batch, rowCount));
    }

    /// <summary>Sizes the head buffers for r rows in all (at least).</summary>
    internal void EnsureHeadRows(int r)
    {
        if (r > _headCapacity)
        {
            long d = _c.HiddenDim;
            foreach (var old in new[] { HeadInput, HeadMean, HeadRstd, HeadNorm, Logits })
                if (old.Storage != null) _buffers.Free(old.Storage);
            foreach (var old in new[] { _dHeadIn, _dHeadNorm })
                if (old is { } v) _buffers.Free(v.Storage);
            var o = _buffers;
            HeadInput = o.Float("head input", r, d); HeadMean = o.Float("head mean", r); HeadRstd = o.Float("head rstd", r);
            HeadNorm = o.Float("head norm", r, d); Logits = o.Float("logits (rows × vocabulary)", r, _c.VocabSize);
            _dHeadIn = null; _dHeadNorm = null;
            _headCapacity = r;
        }
    }

    internal (FloatView dx, FloatView dh, FloatView dqkv, FloatView dAttn, FloatView dy, FloatView du) Scratch()
    {
        long n = Rows, d = _c.HiddenDim;
        var o = _buffers;
        _dx ??= o.Float("dx", n, d); _dh ??= o.Float("dh", n, d); _dqkv ??= o.Float("dqkv", n, 3, d);
        _do ??= o.Float("d attention", n, d); _dy ??= o.Float("dy", n, d); _du ??= o.Float("d mlp hidden", n, _c.MlpDim);
        return (_dx.Value, _dh.Value, _dqkv.Value, _do.Value, _dy.Value, _du.Value);
    }

    internal (FloatView dHeadIn, FloatView dHeadNorm) HeadScratch()
    {
        _dHeadIn ??= _buffers.Float("d head input", _headCapacity, _c.HiddenDim);
        _dHeadNorm ??= _buffers.Float("d head norm", _headCapacity, _c.HiddenDim);
        return (_dHeadIn.Value, _dHeadNorm.Value);
    }
}
