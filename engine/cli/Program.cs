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
var ilgpuDevice = new Option<string>("--ilgpu-device")
{
    Description = "ILGPU accelerator for --backend ilgpu: auto, cuda, opencl or cpu",
    DefaultValueFactory = _ => FastBlockDiff.Engine.BackendChoice.IlgpuDevice,
    Recursive = true,
};
root.Options.Add(ilgpuDevice);
var precision = new Option<string>("--precision")
{
    Description = "arithmetic of every command that runs a model: auto (bf16 on cuda, fp32 on cpu/ilgpu, which have no bf16), bf16 or fp32",
    DefaultValueFactory = _ => FastBlockDiff.Engine.BackendChoice.Precision,
    Recursive = true,
};
precision.AcceptOnlyFromAmong("auto", "bf16", "fp32");
root.Options.Add(precision);
var parsed = root.Parse(args);
FastBlockDiff.Engine.BackendChoice.IlgpuDevice = parsed.GetValue(ilgpuDevice) ?? "auto";
FastBlockDiff.Engine.BackendChoice.Precision = parsed.GetValue(precision) ?? "auto";
return await parsed.InvokeAsync();
