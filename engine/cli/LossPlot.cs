namespace FastBlockDiff.Cli;

/// <summary>Writes the training loss curve (raw and smoothed) as a PNG.</summary>
static class LossPlot
{
    public static void Write(string path, IReadOnlyList<(int Step, double Loss)> log)
    {
        if (log.Count == 0) return;
        var plot = new ScottPlot.Plot();
        double[] xs = [.. log.Select(l => (double)l.Step)], ys = [.. log.Select(l => l.Loss)];
        var raw = plot.Add.Scatter(xs, ys);
        raw.MarkerSize = 0; raw.LineWidth = 1; raw.LegendText = "batch NELBO"; raw.Color = ScottPlot.Colors.LightBlue;
        int window = Math.Max(1, log.Count / 50);
        var smooth = ys.Select((_, i) => ys.Skip(Math.Max(0, i - window + 1)).Take(Math.Min(window, i + 1)).Average()).ToArray();
        var s = plot.Add.Scatter(xs, smooth);
        s.MarkerSize = 0; s.LineWidth = 2; s.LegendText = $"moving average ({window})"; s.Color = ScottPlot.Colors.DarkBlue;
        plot.Title("BD3-LM training loss");
        plot.XLabel("step"); plot.YLabel("NELBO (nats/token)");
        plot.ShowLegend();
        string tmp = path + ".tmp.png";
        plot.SavePng(tmp, 800, 500);
        File.Move(tmp, path, overwrite: true);
    }
}
