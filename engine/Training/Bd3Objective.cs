using FastBlockDiff.Engine.Model;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Training;

/// <summary>
/// The BD3 NELBO of a batch in one vectorised pass over x_noisy ⊕ x_clean, and its gradient. The loss is the
/// per-token average over all B·L tokens (carried-over tokens contribute 0), as the reference reports it.
/// </summary>
public sealed class Bd3Objective : IDisposable
{
    readonly Denoiser _model;
    readonly IBackend _b;
    // Buffers per batch shape. Two shapes stay allocated (an evaluation's full batches and its last, shorter one);
    // a third frees the least recently used.
    readonly List<Slot> _slots = [];
    Slot? _last;
    const int KeptShapes = 2;

    sealed class Slot : IDisposable
    {
        public required DenoiserWorkspace Workspace;
        public required OwnedBuffers Buffers;
        public IntView Targets; public FloatView Weights, Loss;
        public float[] LossHost = [];
        public int Batch, Length;
        public void Dispose() { Workspace.Dispose(); Buffers.Dispose(); }
    }

    public Bd3Objective(Denoiser model) { _model = model; _b = model.Backend; }

    /// <summary>Device buffers held for the shapes seen so far (for tests of ownership).</summary>
    public int BufferCount => _slots.Sum(s => s.Workspace.BufferCount + s.Buffers.Count);

    Slot Prepare(int batch, int length)
    {
        var slot = _slots.Find(s => s.Batch == batch && s.Length == length);
        if (slot == null)
        {
            if (_slots.Count >= KeptShapes) { _slots[0].Dispose(); _slots.RemoveAt(0); }
            var buffers = new OwnedBuffers(_b);
            long rows = OwnedBuffers.Elements("objective rows (batch × length)", batch, length);
            slot = new Slot
            {
                Workspace = new DenoiserWorkspace(_b, _model.Config, batch, OwnedBuffers.Elements("2L sequence", 2, length)),
                Buffers = buffers, Batch = batch, Length = length,
                Targets = buffers.Int("targets", rows), Weights = buffers.Float("loss weights", rows), Loss = buffers.Float("loss", rows),
                LossHost = new float[rows],
            };
        }
        else _slots.Remove(slot);
        _slots.Add(slot);   // most recently used last
        _last = slot;
        return slot;
    }

    /// <summary>Frees every buffer of every shape.</summary>
    public void Dispose()
    {
        foreach (var s in _slots) s.Dispose();
        _slots.Clear();
        _last = null;
    }

    /// <summary>Forward (and backward when <paramref name="backward"/>): returns the mean NELBO per token.
    /// Gradients are accumulated into the model's Grads scaled by <paramref name="gradScale"/>. With
    /// <paramref name="lossSum"/> the summed loss is written there on the device (a double, <see cref="DoubleSlots"/>)
    /// and NaN is returned (no host wait). <paramref name="gradientsDoneFrom"/> goes to <see cref="Denoiser.Backward"/>
    /// (the data-parallel bucket hook).</summary>
    public double Run(Bd3Batch batch, bool backward, float dropout = 0f, ulong seed = 0, float gradScale = 1f, FloatView? lossSum = null,
        Action<int>? gradientsDoneFrom = null)
    {
        Upload(batch);
        return Compute(batch, backward, dropout, seed, gradScale, lossSum, gradientsDoneFrom);
    }

    /// <summary>Sends the batch's ids, positions, targets and weights to the device buffers of its shape (asynchronous uploads).</summary>
    public void Upload(Bd3Batch batch)
    {
        var slot = Prepare(batch.Batch, batch.Length);
        var ws = slot.Workspace;
        _b.Upload(ws.Ids, batch.FullIds());
        _b.Upload(ws.Positions, batch.FullPositions());
        _b.Upload(slot.Targets, batch.Clean);
        _b.Upload(slot.Weights, batch.Weights);
    }

    /// <summary>
    /// <see cref="Run"/> without the uploads, on what the last <see cref="Upload"/> of this shape sent: only device work
    /// on fixed buffers, so with <paramref name="lossSum"/> it can be captured as a CUDA graph and replayed.
    /// </summary>
    public double Compute(Bd3Batch batch, bool backward, float dropout = 0f, ulong seed = 0, float gradScale = 1f, FloatView? lossSum = null,
        Action<int>? gradientsDoneFrom = null)
    {
        var slot = Prepare(batch.Batch, batch.Length);
        var ws = slot.Workspace;
        var shape = batch.Shape(_model.Config);
        _model.Forward(ws, shape, dropout, seed);
        var logits = _model.Head(ws, 0, batch.Length);
        int rows = batch.Batch * batch.Length;
        _b.SubsCrossEntropy(logits, slot.Targets, slot.Weights, slot.Loss, rows, _model.Config.VocabSize, _model.Config.MaskId, gradScale / rows, backward);
        double loss = double.NaN;
        if (lossSum is { } dst) _b.SumTo(slot.Loss, dst, squares: false);
        else loss = _b.Sum(slot.Loss) / rows;
        if (backward) _model.Backward(ws, shape, dropout, seed, gradientsDoneFrom);
        return loss;
    }

    /// <summary>Per-sequence NELBO (mean over the sequence's tokens) of the last forward: for variance estimates.</summary>
    public double[] PerSequenceLoss(Bd3Batch batch)
    {
        var slot = _last ?? throw new InvalidOperationException("no forward pass yet");
        _b.Download(slot.Loss, slot.LossHost);
        var r = new double[batch.Batch];
        for (int s = 0; s < batch.Batch; s++)
        {
            double sum = 0;
            for (int i = 0; i < batch.Length; i++) sum += slot.LossHost[s * batch.Length + i];
            r[s] = sum / batch.Length;
        }
        return r;
    }

    /// <summary>Per-token weighted loss [B·L] of the last forward (0 where a token was carried over).</summary>
    public float[] TokenLosses()
    {
        var slot = _last ?? throw new InvalidOperationException("no forward pass yet");
        _b.Download(slot.Loss, slot.LossHost);
        return slot.LossHost;
    }

    /// <summary>Logits of the noisy half from the last run ([B·L, V]), for tests.</summary>
    public float[] LastLogits(Bd3Batch batch)
    {
        var l = new float[OwnedBuffers.Elements("logits", batch.Batch, batch.Length, _model.Config.VocabSize)];
        _b.Download(_last!.Workspace.Logits.Slice(0, l.Length), l);
        return l;
    }
}
