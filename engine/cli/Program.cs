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
return await root.Parse(args).InvokeAsync();
