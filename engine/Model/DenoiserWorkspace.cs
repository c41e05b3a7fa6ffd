using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Model;

/// <summary>
/// Activations of one forward pass over [Batch, SeqLen] tokens, kept for the backward pass, and the gradient
/// scratch the backward needs. Sized once per shape and reused across steps.
/// </summary>
public sealed class DenoiserWorkspace
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

    public sealed class LayerActivations
    {
        public FloatView Mean1, Rstd1, H1, Qkv, Attn, Lse, YAttn, XMid, Mean2, Rstd2, H2, U, G, YMlp;
    }

    public DenoiserWorkspace(IBackend backend, ModelConfig config, int batch, int seqLen)
    {
        _b = backend; _c = config; Batch = batch; SeqLen = seqLen; Rows = batch * seqLen;
        int n = Rows, d = config.HiddenDim;
        Ids = backend.AllocInt(n);
        Positions = backend.AllocInt(n);
        Xs = new FloatView[config.Layers + 1];
        for (int l = 0; l <= config.Layers; l++) Xs[l] = backend.AllocFloat(n * d);
        Layer = new LayerActivations[config.Layers];
        for (int l = 0; l < config.Layers; l++)
            Layer[l] = new LayerActivations
            {
                Mean1 = backend.AllocFloat(n), Rstd1 = backend.AllocFloat(n), H1 = backend.AllocFloat(n * d),
                Qkv = backend.AllocFloat(n * 3 * d), Attn = backend.AllocFloat(n * d), Lse = backend.AllocFloat(n * config.Heads),
                YAttn = backend.AllocFloat(n * d), XMid = backend.AllocFloat(n * d),
                Mean2 = backend.AllocFloat(n), Rstd2 = backend.AllocFloat(n), H2 = backend.AllocFloat(n * d),
                U = backend.AllocFloat(n * config.MlpDim), G = backend.AllocFloat(n * config.MlpDim), YMlp = backend.AllocFloat(n * d),
            };
    }

    /// <summary>Sizes the head buffers for rowCount selected rows per sequence.</summary>
    internal void PrepareHead(int rowStart, int rowCount)
    {
        HeadRowStart = rowStart; HeadRowCount = rowCount;
        int r = Batch * rowCount;
        if (r > _headCapacity)
        {
            int d = _c.HiddenDim;
            HeadInput = _b.AllocFloat(r * d); HeadMean = _b.AllocFloat(r); HeadRstd = _b.AllocFloat(r);
            HeadNorm = _b.AllocFloat(r * d); Logits = _b.AllocFloat(r * _c.VocabSize);
            _dHeadIn = null; _dHeadNorm = null;
            _headCapacity = r;
        }
    }

    internal (FloatView dx, FloatView dh, FloatView dqkv, FloatView dAttn, FloatView dy, FloatView du) Scratch()
    {
        int n = Rows, d = _c.HiddenDim;
        _dx ??= _b.AllocFloat(n * d); _dh ??= _b.AllocFloat(n * d); _dqkv ??= _b.AllocFloat(n * 3 * d);
        _do ??= _b.AllocFloat(n * d); _dy ??= _b.AllocFloat(n * d); _du ??= _b.AllocFloat(n * _c.MlpDim);
        return (_dx.Value, _dh.Value, _dqkv.Value, _do.Value, _dy.Value, _du.Value);
    }

    internal (FloatView dHeadIn, FloatView dHeadNorm) HeadScratch()
    {
        _dHeadIn ??= _b.AllocFloat(_headCapacity * _c.HiddenDim);
        _dHeadNorm ??= _b.AllocFloat(_headCapacity * _c.HiddenDim);
        return (_dHeadIn.Value, _dHeadNorm.Value);
    }
}
