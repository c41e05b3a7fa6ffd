using System.CommandLine;
using FastBlockDiff.Engine;

namespace FastBlockDiff.Cli;

/// <summary>`info`: which backends can run here and why the others cannot.</summary>
static class InfoCommand
{
    public static Command Create()
    {
        var cmd = new Command("info", "list backends found, and why others were not");
        cmd.SetAction(r => CliRunner.Run(_ =>
        {
            Console.WriteLine($"FastBlockDiff on .NET {Environment.Version}, {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}");
            foreach (var line in BackendChoice.Describe()) Console.WriteLine(line);
            foreach (var line in Engine.Distributed.DataParallel.Describe()) Console.WriteLine(line);
            return 0;
        }));
        return cmd;
    }
}
