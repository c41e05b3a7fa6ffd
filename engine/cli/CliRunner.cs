using FastBlockDiff.Engine;

namespace FastBlockDiff.Cli;

/// <summary>
/// Runs a command body and turns failures into exit codes: bad input (<see cref="UserInputException"/>) is one
/// line "error: ..." on stderr and exit code 2; any other exception is a bug, printed in full with what to report,
/// and exit code 70 (EX_SOFTWARE).
/// </summary>
static class CliRunner
{
    public const int UserError = 2, InternalError = 70, Cancelled = 130;

    public static int Run(Func<CancellationToken, int> body)
    {
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            if (cts.IsCancellationRequested) return; // a second Ctrl+C kills the process
            e.Cancel = true;
            Console.Error.WriteLine("cancelling: finishing the current step and saving state (Ctrl+C again to abort)");
            cts.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        try { return body(cts.Token); }
        catch (UserInputException e)
        {
            Console.Error.WriteLine($"error: {OneLine(e.Message)}");
            if (Environment.GetEnvironmentVariable("FASTBLOCKDIFF_DEBUG") == "1") Console.Error.WriteLine(e);
            return UserError;
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested) { Console.Error.WriteLine("cancelled"); return Cancelled; }
        catch (Exception e)
        {
            Console.Error.WriteLine($"internal error (a bug in FastBlockDiff, not in your input): {e.GetType().Name}: {OneLine(e.Message)}");
            Console.Error.WriteLine(e);
            Console.Error.WriteLine("Please report it as an issue of the FastBlockDiff project with: the full command line, the output of " +
                "`fastblockdiff info`, this whole message including the stack trace above, and if you can the input files it needs.");
            return InternalError;
        }
        finally { Console.CancelKeyPress -= onCancel; }
    }

    /// <summary>Messages quoting file contents may hold line breaks; the error stays one line.</summary>
    static string OneLine(string message) => message.ReplaceLineEndings(" ");
}
