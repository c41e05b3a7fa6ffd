using System.CommandLine;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Data;
using FastBlockDiff.Engine.Training;
using Spectre.Console;

namespace FastBlockDiff.Cli;

/// <summary>`schedule-search`: NELBO mean and variance over a (β, ω) grid; the lowest variance wins.</summary>
static class ScheduleSearchCommand
{
    public static Command Create()
    {
        var ckpt = new Option<string>("--checkpoint") { Required = true };
        var data = new Option<string>("--data") { Description = "held-out corpus (its validation split is used)", Required = true };
        var max = new Option<int>("--max-sequences") { DefaultValueFactory = _ => 32 };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 8 };
        var tokenizer = new Option<string?>("--tokenizer");
        var backend = new Option<string>("--backend") { DefaultValueFactory = _ => "auto" };
        var allowNonFinite = AllowNonFiniteOption.Create();
        var cmd = new Command("schedule-search", "find the clipped schedule U[β, ω] with the lowest NELBO variance") { ckpt, data, max, batch, tokenizer, backend, allowNonFinite };
        cmd.SetAction(r => CliRunner.Run(cancel =>
        {
            if (r.GetValue(max) <= 0) throw new UserInputException($"--max-sequences must be positive, got {r.GetValue(max)}");
            if (r.GetValue(batch) <= 0) throw new UserInputException($"--batch-size must be positive, got {r.GetValue(batch)}");
            Corpus.RequireReadable(r.GetValue(data)!);
            using var model = BlockDiffusionModel.Load(r.GetValue(ckpt)!, r.GetValue(tokenizer), r.GetValue(backend)!, r.GetValue(allowNonFinite));
            var ds = TokenDataset.FromCorpus(r.GetValue(data)!, model.Tokenizer, model.Config.ModelLength);
            var rows = ds.ValidRows.Take(r.GetValue(max)).Select(i => ds.Row(i).ToArray()).ToList();
            var table = new Table().AddColumns("β", "ω", "NELBO mean", "NELBO variance");
            var (best, cells) = ScheduleSearch.Run(model.Denoiser, rows, r.GetValue(batch),
                onCell: c => Console.Error.WriteLine($"  β={c.Min:0.00} ω={c.Max:0.00}: mean {c.Mean:F4} variance {c.Variance:F5}"), cancel: cancel);
            foreach (var c in cells)
                table.AddRow($"{c.Min:0.00}", $"{c.Max:0.00}", $"{c.Mean:F4}", c == best ? $"[green]{c.Variance:F5}[/]" : $"{c.Variance:F5}");
            AnsiConsole.Write(table);
            Console.WriteLine($"best: β={best.Min:0.00}, ω={best.Max:0.00} (variance {best.Variance:F5}); train with --beta {best.Min:0.00} --omega {best.Max:0.00}");
            return 0;
        }));
        return cmd;
    }
}
