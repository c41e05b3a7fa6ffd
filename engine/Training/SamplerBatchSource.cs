using FastBlockDiff.Engine.Data;

namespace FastBlockDiff.Engine.Training;

/// <summary>Feeds the trainer from a <see cref="BatchSampler"/>; its position is (epoch, cursor, seed).</summary>
public sealed class SamplerBatchSource(BatchSampler sampler) : IBatchSource
{
    public int SequenceLength => sampler.SeqLen;

    public void Next(Span<int> dst, int batch)
    {
        if (batch != sampler.BatchSize) throw new ArgumentException($"sampler yields batches of {sampler.BatchSize}, asked for {batch}");
        sampler.NextBatch(dst);
    }

    public long[] SaveState() => [sampler.State.Epoch, sampler.State.Cursor, unchecked((long)sampler.State.Seed)];

    public void RestoreState(long[] state)
    {
        if (state.Length != 3) throw new UserInputException($"data position has {state.Length} fields, expected 3");
        sampler.Restore(new SamplerState(state[0], state[1], unchecked((ulong)state[2])));
    }
}
