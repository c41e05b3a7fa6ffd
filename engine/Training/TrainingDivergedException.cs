namespace FastBlockDiff.Engine.Training;

/// <summary>
/// The loss or gradient norm of a step came out NaN or infinite: training stops before the update, so the weights
/// and optimiser state still hold the last good step and nothing non-finite is saved.
/// </summary>
public sealed class TrainingDivergedException(int step, string message) : UserInputException(message)
{
    /// <summary>The step (1-based) whose loss or gradient was not finite.</summary>
    public int Step { get; } = step;
}
