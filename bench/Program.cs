using BenchmarkDotNet.Running;
using FastBlockDiff.Bench;

// Quick modes (median-of-N, JSON in the shared schema of BenchJson.cs); anything else goes to BenchmarkDotNet.
if (args.Length > 0)
{
    var rest = args[1..];
    switch (args[0])
    {
        case "gemm-quick": return GemmQuick.Run(rest);
        case "gemm-invariant-quick": return GemmInvariantQuick.Run(rest);
        case "attention-quick": return AttentionQuick.Run(rest);
        case "train-quick": return TrainQuick.Run(rest);
        case "sample-quick": return SampleQuick.Run(rest);
        case "serve-quick": return ServeQuick.Run(rest);
        case "parity-dump": return ParityDump.Run(rest);
        case "compare": return Compare.Run(rest);
        case "dataparallel-quick": return DataParallelQuick.Run(rest);
        case "peak": return PeakQuick.Run(rest);
        case "step-quick": return StepQuick.Run(rest);
        case "cpu-compare-report": return CpuCompareReport.Run(rest);
    }
}

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;

public partial class Program;
