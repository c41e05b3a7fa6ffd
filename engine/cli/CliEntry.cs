using System.CommandLine;
using FastBlockDiff.Engine;

namespace FastBlockDiff.Cli;

/// <summary>
/// The `fastblockdiff` command line as a function: arguments in, exit code out, text written to the given
/// writers (the console's by default). Exit codes: 0 done, 2 bad input (one line "error: ..." on stderr),
/// 70 a bug (printed with what to report), 130 cancelled. Tests run it in-process; Program.cs is one call to it.
/// </summary>
public static class CliEntry
{
    public static int Run(string[] args, TextWriter? stdout = null, TextWriter? stderr = null)
    {
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        // Console.SetOut is process-wide: callers passing writers (tests) must not run two commands at once.
        Console.SetOut(TextWriter.Synchronized(new StdoutWriter(stdout ?? oldOut)));
        if (stderr != null) Console.SetError(stderr);
        try { return Parse(args); }
        finally
        {
            try { Console.Out.Flush(); } catch (UserInputException) { }
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    static int Parse(string[] args)
    {
        var root = new RootCommand("FastBlockDiff: train and sample Block Diffusion language models (BD3-LM)");
        root.Subcommands.Add(PrepareCommand.Create());
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(ScheduleSearchCommand.Create());
        root.Subcommands.Add(SampleCommand.Create());
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(ExperimentCommand.Create());
        root.Subcommands.Add(ServeCommand.Create());
        var ilgpuDevice = new Option<string>("--ilgpu-device")
        {
            Description = "ILGPU accelerator for --backend ilgpu: auto, cuda, opencl or cpu",
            DefaultValueFactory = _ => BackendChoice.IlgpuDevice,
            Recursive = true,
        };
        root.Options.Add(ilgpuDevice);
        var precision = new Option<string>("--precision")
        {
            Description = "arithmetic of every command that runs a model: auto (bf16 on cuda, fp32 on cpu/ilgpu, which have no bf16), bf16 or fp32",
            DefaultValueFactory = _ => BackendChoice.Precision,
            Recursive = true,
        };
        precision.AcceptOnlyFromAmong("auto", "bf16", "fp32");
        root.Options.Add(precision);
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            // System.CommandLine would print every error and the whole help text; one line says what is wrong
            string command = parsed.CommandResult.Command is RootCommand ? "" : " " + parsed.CommandResult.Command.Name;
            Console.Error.WriteLine($"error: {string.Join("; ", parsed.Errors.Select(e => e.Message.ReplaceLineEndings(" ").Trim()))} (see `fastblockdiff{command} --help`)");
            return CliRunner.UserError;
        }
        string device = parsed.GetValue(ilgpuDevice) ?? "auto";
        if (device is not ("auto" or "cuda" or "opencl" or "cpu"))
        {
            Console.Error.WriteLine($"error: --ilgpu-device '{device}': use auto, cuda, opencl or cpu");
            return CliRunner.UserError;
        }
        BackendChoice.IlgpuDevice = device;
        BackendChoice.Precision = parsed.GetValue(precision) ?? "auto";
        try { return parsed.Invoke(); }
        catch (UserInputException e)   // writing help or version text to a full stdout
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return CliRunner.UserError;
        }
    }
}
