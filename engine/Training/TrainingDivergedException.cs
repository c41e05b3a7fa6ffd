namespace FastBlockDiff.Engine.Training;

/// <summary>
/// The loss or gradient norm of a step came out NaN or infinite. The AdamW kernel skips the update of a step whose
/// gradient norm is not finite, and the trainer sees the values when it reads them back (every ReadBackEvery steps, and
/// always before an evaluation or checkpoint): the run stops there, within that many steps, and no checkpoint written
/// after the bad step exists, so the last one on disk holds the last good state and nothing non-finite is saved.
/// </summary>
public sealed class TrainingDivergedException(int step, string message) : UserInputException(message)
{
    /// <summary>The step (1-based) whose loss or gradient was not finite.</summary>
    public int Step { get; } = step;
}
