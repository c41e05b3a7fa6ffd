using BenchmarkDotNet.Running;
using FastBlockDiff.Bench;

if (args.Length > 0 && args[0] == "gemm-quick")
    return GemmQuick.Run(args[1..]);

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;

public partial class Program;
