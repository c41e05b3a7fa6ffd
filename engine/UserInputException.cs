namespace FastBlockDiff.Engine;

/// <summary>
/// A failure caused by something the user supplied (a file, a path, a spec string, a setting),
/// as opposed to a bug. The message always names the file or value and the problem, so the
/// CLI prints only the message and exits non-zero, without a stack trace.
/// </summary>
public class UserInputException : Exception
{
    public UserInputException(string message) : base(message) { }
    public UserInputException(string message, Exception inner) : base(message, inner) { }
}
