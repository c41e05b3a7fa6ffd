using System.CommandLine;

namespace FastBlockDiff.Cli;

/// <summary>`--allow-nonfinite`, shared by the commands that load a checkpoint.</summary>
static class AllowNonFiniteOption
{
    public static Option<bool> Create() => new("--allow-nonfinite")
    {
        Description = "load a checkpoint whose weights or training state hold NaN or Inf instead of refusing it",
    };
}
