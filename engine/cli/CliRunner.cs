using FastBlockDiff.Engine;

namespace FastBlockDiff.Cli;

/// <summary>Runs a command body and turns failures into one line on stderr and a non-zero exit code.</summary>
static class CliRunner
{
    public const int UserError = 2, InternalError = 1, Cancelled = 130;

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
        catch (UserInputException e) { Console.Error.WriteLine($"error: {e.Message}"); return UserError; }
        catch (OperationCanceledException) when (cts.IsCancellationRequested) { Console.Error.WriteLine("cancelled"); return Cancelled; }
        catch (Exception e) when (Environment.GetEnvironmentVariable("FASTBLOCKDIFF_DEBUG") != "1")
        {
            Console.Error.WriteLine($"error: {e.GetType().Name}: {e.Message}");
            Console.Error.WriteLine("(set FASTBLOCKDIFF_DEBUG=1 for the stack trace)");
            return InternalError;
        }
        finally { Console.CancelKeyPress -= onCancel; }
    }
}
