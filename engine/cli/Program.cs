using System.CommandLine;
using FastBlockDiff.Cli;

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
    DefaultValueFactory = _ => FastBlockDiff.Engine.BackendChoice.IlgpuDevice,
    Recursive = true,
};
root.Options.Add(ilgpuDevice);
var parsed = root.Parse(args);
FastBlockDiff.Engine.BackendChoice.IlgpuDevice = parsed.GetValue(ilgpuDevice) ?? "auto";
return await parsed.InvokeAsync();
