namespace FastBlockDiff.Engine.Data;

/// <summary>
/// Position of a <see cref="BatchSampler"/>: the epoch, the cursor inside that epoch's row order,
/// and the seed the per-epoch permutations are derived from. Saving this in a checkpoint and
/// restoring it makes a resumed run see exactly the batches it would have seen.
/// </summary>
public readonly record struct SamplerState(long Epoch, long Cursor, ulong Seed)
{
    /// <summary>[Epoch, Cursor, Seed (bit pattern)] — e.g. for an I64 tensor in a safetensors checkpoint.</summary>
    public long[] ToInt64s() => [Epoch, Cursor, unchecked((long)Seed)];

    /// <summary>Inverse of <see cref="ToInt64s"/>.</summary>
    public static SamplerState FromInt64s(ReadOnlySpan<long> v)
    {
        if (v.Length != 3) throw new UserInputException($"data position must hold 3 integers (epoch, cursor, seed), found {v.Length}");
        return new SamplerState(v[0], v[1], unchecked((ulong)v[2]));
    }
}

/// <summary>
/// Yields batches [batch, SeqLen] of rows from a <see cref="TokenDataset"/> (train or validation
/// rows) deterministically. Epoch e visits every row once, in a Fisher-Yates permutation drawn
/// from SplitMix64 seeded with Hash(seed, e) (or in ascending order when shuffle is off). A
/// batch that runs past the end of an epoch continues at the start of the next, so batch k of
/// the run always consists of positions k*batch .. k*batch+batch-1 of the endless sequence
/// epoch 0, epoch 1, ...; <see cref="SeekToBatch"/> uses that to jump to a step.
/// </summary>
public sealed class BatchSampler
{
    private readonly TokenDataset _data;
    private readonly int[] _rows;
    private readonly bool _shuffle;
    private int[]? _order;
    private long _orderEpoch = -1;

    public BatchSampler(TokenDataset data, IReadOnlyList<int> rows, int batchSize, ulong seed, bool shuffle = true)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (rows.Count == 0) throw new UserInputException("cannot sample batches: the dataset split has no rows (corpus too small for this sequence length?)");
        if (batchSize <= 0) throw new UserInputException($"batch size {batchSize} must be positive");
        _data = data; _rows = rows.ToArray(); BatchSize = batchSize; _shuffle = shuffle;
        foreach (int r in _rows)
            if ((uint)r >= (uint)data.RowCount) throw new ArgumentOutOfRangeException(nameof(rows), $"row {r} is outside the dataset ({data.RowCount} rows)");
        State = new SamplerState(0, 0, seed);
    }

    /// <summary>Train-row sampler with shuffling.</summary>
    public static BatchSampler ForTraining(TokenDataset data, int batchSize, ulong seed) => new(data, data.TrainRows, batchSize, seed, shuffle: true);
    /// <summary>Validation-row sampler in fixed ascending order.</summary>
    public static BatchSampler ForValidation(TokenDataset data, int batchSize) => new(data, data.ValidRows, batchSize, 0, shuffle: false);

    public int BatchSize { get; }
    public int SeqLen => _data.SeqLen;
    public int RowsPerEpoch => _rows.Length;
    public SamplerState State { get; private set; }

    /// <summary>Restores a saved position.</summary>
    public void Restore(SamplerState state)
    {
        if (state.Epoch < 0 || state.Cursor < 0 || state.Cursor >= _rows.Length)
            throw new UserInputException($"data position (epoch {state.Epoch}, cursor {state.Cursor}) is invalid for a split of {_rows.Length} rows; was the checkpoint made with a different corpus or sequence length?");
        State = state;
        _order = null; _orderEpoch = -1; // the seed may differ
    }

    /// <summary>Moves to the position before batch <paramref name="batchIndex"/> (0-based) of the run.</summary>
    public void SeekToBatch(long batchIndex)
    {
        if (batchIndex < 0) throw new ArgumentOutOfRangeException(nameof(batchIndex));
        long pos = checked(batchIndex * BatchSize);
        State = State with { Epoch = pos / _rows.Length, Cursor = pos % _rows.Length };
    }

    /// <summary>Row order of an epoch.</summary>
    public int[] EpochOrder(long epoch)
    {
        if (_orderEpoch == epoch && _order != null) return _order;
        var order = (int[])_rows.Clone();
        if (_shuffle)
        {
            var rng = new SplitMix64(SplitMix64.Hash(State.Seed, (ulong)epoch));
            for (int i = order.Length - 1; i > 0; i--)
            {
                int j = rng.NextInt(i + 1);
                (order[i], order[j]) = (order[j], order[i]);
            }
        }
        _order = order; _orderEpoch = epoch;
        return order;
    }

    /// <summary>Row indices of the next batch (advances the position).</summary>
    public int[] NextRowIndices()
    {
        var result = new int[BatchSize];
        var (epoch, cursor, seed) = State;
        for (int b = 0; b < BatchSize; b++)
        {
            result[b] = EpochOrder(epoch)[cursor];
            if (++cursor == _rows.Length) { cursor = 0; epoch++; }
        }
        State = new SamplerState(epoch, cursor, seed);
        return result;
    }

    /// <summary>Fills <paramref name="dest"/> ([BatchSize, SeqLen], row-major) with the next batch.</summary>
    public void NextBatch(Span<int> dest)
    {
        if (dest.Length != BatchSize * SeqLen)
            throw new ArgumentException($"destination holds {dest.Length} ids, a batch is {BatchSize}x{SeqLen}", nameof(dest));
        var rows = NextRowIndices();
        for (int b = 0; b < rows.Length; b++)
            _data.Row(rows[b]).CopyTo(dest.Slice(b * SeqLen, SeqLen));
    }

    public int[] NextBatch()
    {
        var dest = new int[BatchSize * SeqLen];
        NextBatch(dest);
        return dest;
    }
}
