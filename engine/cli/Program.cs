return FastBlockDiff.Cli.CliEntry.Run(args);
