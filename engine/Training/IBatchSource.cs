namespace FastBlockDiff.Engine.Training;

/// <summary>Deterministic stream of [batch, L] token rows whose position can be saved and restored.</summary>
public interface IBatchSource
{
    int SequenceLength { get; }
    /// <summary>Fills dst ([batch·L]) with the next batch.</summary>
    void Next(Span<int> dst, int batch);
    long[] SaveState();
    void RestoreState(long[] state);
}
