namespace FastBlockDiff.Engine.Distributed;

/// <summary>
/// A collective could not complete: a peer rank died, hung past the timeout, or the transport failed. The message
/// names the rank (when it is known) and the operation; the job must be aborted, since the ranks are out of step.
/// </summary>
public sealed class CollectiveFailedException(string message, int? culprit = null) : Exception(message)
{
    /// <summary>The rank that did not arrive, when known.</summary>
    public int? Culprit { get; } = culprit;
}
