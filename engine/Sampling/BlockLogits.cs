using FastBlockDiff.Engine.Model;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Sampling;

/// <summary>
/// The logits of one denoiser call over a batch's block [bs·L', V]. Either given whole, or left to the output head
/// to compute on demand: a step that reveals a few positions (first-hitting: one per sequence) runs the head's GEMM
/// over the vocabulary for those rows only, the largest part of a step when V is large.
/// </summary>
internal sealed class BlockLogits
{
    readonly int _blockSize, _vocab;
    readonly SplitClock? _clock;
    int[] _wsRows = [];
    Denoiser? _model;
    DenoiserWorkspace? _ws;
    int _rowStart;
    FloatView _all;
    bool _hasAll;

    /// <summary>Logits computed already: [rows, vocab].</summary>
    public BlockLogits(FloatView all, int vocab)
    {
        _all = all; _hasAll = true; _vocab = vocab;
    }

    /// <summary>Logits left to the head (see <see cref="Pending"/>); <paramref name="clock"/>, when given, counts the head as the model's time.</summary>
    public BlockLogits(int vocab, int blockSize, SplitClock? clock)
    {
        _vocab = vocab; _blockSize = blockSize; _clock = clock;
    }

    /// <summary>
    /// The next denoiser call's logits: rows [rowStart, rowStart + L') of every sequence of <paramref name="ws"/>, whose
    /// body of the network has run; the head runs when a step asks.
    /// </summary>
    public void Pending(Denoiser model, DenoiserWorkspace ws, int rowStart)
    {
        _model = model; _ws = ws; _rowStart = rowStart; _hasAll = false; _all = default;
        if (_wsRows.Length < ws.Batch * _blockSize) _wsRows = new int[ws.Batch * _blockSize];
    }

    /// <summary>Whether <see cref="Rows"/> computes only the rows asked for (nothing was computed yet).</summary>
    public bool Selective => !_hasAll;

    /// <summary>All rows [bs·L', V].</summary>
    public FloatView All()
    {
        if (!_hasAll)
        {
            _clock?.ToSampler();
            _all = _model!.Head(_ws!, _rowStart, _blockSize);
            _clock?.ToModel();
            _hasAll = true;
        }
        return _all;
    }

    /// <summary>
    /// The logits of the given block rows (indices into bs·L'), row k for rows[k]: from the head over those rows alone,
    /// or copied out of the whole logits into <paramref name="scratch"/> (at least rows.Count rows) when they exist.
    /// </summary>
    public FloatView Rows(List<int> rows, IBackend b, FloatView scratch)
    {
        int v = _vocab, n = rows.Count;
        if (_hasAll)
        {
            for (int k = 0; k < n; k++) b.Copy(scratch.Slice(k * v, v), _all.Slice(checked(rows[k] * v), v));
            return scratch.Slice(0, n * v);
        }
        var ws = _ws!;
        for (int k = 0; k < n; k++)
        {
            int s = rows[k] / _blockSize, i = rows[k] % _blockSize;
            _wsRows[k] = s * ws.SeqLen + _rowStart + i;
        }
        _clock?.ToSampler();
        var logits = _model!.HeadRows(ws, _wsRows.AsSpan(0, n));
        _clock?.ToModel();
        return logits;
    }
}
