using FastBlockDiff.Engine.Model;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Training;

/// <summary>
/// The BD3 NELBO of a batch in one vectorised pass over x_noisy ⊕ x_clean, and its gradient. The loss is the
/// per-token average over all B·L tokens (carried-over tokens contribute 0), as the reference reports it.
/// </summary>
public sealed class Bd3Objective
{
    readonly Denoiser _model;
    readonly IBackend _b;
    DenoiserWorkspace? _ws;
    IntView _targets; FloatView _weights, _loss;
    float[] _lossHost = [];

    public Bd3Objective(Denoiser model) { _model = model; _b = model.Backend; }

    DenoiserWorkspace Workspace(int batch, int length)
    {
        if (_ws is { } w && w.Batch == batch && w.SeqLen == 2 * length) return w;
        _ws = new DenoiserWorkspace(_b, _model.Config, batch, 2 * length);
        _targets = _b.AllocInt(batch * length);
        _weights = _b.AllocFloat(batch * length);
        _loss = _b.AllocFloat(batch * length);
        _lossHost = new float[batch * length];
        return _ws;
    }

    /// <summary>Forward (and backward when <paramref name="backward"/>): returns the mean NELBO per token.
    /// Gradients are accumulated into the model's Grads scaled by <paramref name="gradScale"/>.</summary>
    public double Run(Bd3Batch batch, bool backward, float dropout = 0f, ulong seed = 0, float gradScale = 1f)
    {
        var ws = Workspace(batch.Batch, batch.Length);
        _b.Upload(ws.Ids, batch.FullIds());
        _b.Upload(ws.Positions, batch.FullPositions());
        _b.Upload(_targets, batch.Clean);
        _b.Upload(_weights, batch.Weights);
        var shape = batch.Shape(_model.Config);
        _model.Forward(ws, shape, dropout, seed);
        var logits = _model.Head(ws, 0, batch.Length);
        int rows = batch.Batch * batch.Length;
        _b.SubsCrossEntropy(logits, _targets, _weights, _loss, rows, _model.Config.VocabSize, _model.Config.MaskId, gradScale / rows, backward);
        double loss = _b.Sum(_loss) / rows;
        if (backward) _model.Backward(ws, shape, dropout, seed);
        return loss;
    }

    /// <summary>Per-sequence NELBO (mean over the sequence's tokens) of the last forward: for variance estimates.</summary>
    public double[] PerSequenceLoss(Bd3Batch batch)
    {
        _b.Download(_loss, _lossHost);
        var r = new double[batch.Batch];
        for (int s = 0; s < batch.Batch; s++)
        {
            double sum = 0;
            for (int i = 0; i < batch.Length; i++) sum += _lossHost[s * batch.Length + i];
            r[s] = sum / batch.Length;
        }
        return r;
    }

    /// <summary>Per-token weighted loss [B·L] of the last forward (0 where a token was carried over).</summary>
    public float[] TokenLosses()
    {
        _b.Download(_loss, _lossHost);
        return _lossHost;
    }

    /// <summary>Logits of the noisy half from the last run ([B·L, V]), for tests.</summary>
    public float[] LastLogits(Bd3Batch batch)
    {
        var l = new float[batch.Batch * batch.Length * _model.Config.VocabSize];
        _b.Download(_ws!.Logits.Slice(0, l.Length), l);
        return l;
    }
}
