namespace FastBlockDiff.Engine;

/// <summary>Bad input from the user (files, flags, shapes). The CLI prints the message and exits non-zero, without a stack trace.</summary>
public class UserInputException(string message, Exception? inner = null) : Exception(message, inner);
