using System.Diagnostics;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Serving;
using FastBlockDiff.Engine.Text;

namespace FastBlockDiff.Bench;

/// <summary>
/// `bench serve-quick [--backend cpu] [--model tiny|small|custom] [--L 256] [--Lp 4] [--requests 16] [--max-tokens 64]`:
/// N requests (random weights, byte vocabulary, every request generating --max-tokens) served one at a time
/// through the model against all at once through the <see cref="RequestScheduler"/>: total generated tokens/s and
/// p50/p95 request latency, and whether every batched text equals its one-at-a-time text (it must: the scheduler
/// turns on the backend's batch-invariant GEMM, which the one-at-a-time runs then use too).
/// </summary>
public static class ServeQuick
{
    public static int Run(string[] args)
    {
        var o = new QuickOptions(args);
        int requests = o.Int("requests", 16), maxTokens = o.Int("max-tokens", 64);
        var config = BenchModels.FromOptions(o, "tiny", o.Int("L", 256), o.Int("Lp", 4));
        foreach (var backend in o.StartedBackends())
        {
            var net = new Denoiser(backend, config);
            net.Initialize(1, zeroInit: false);
            using var model = BlockDiffusionModel.FromDenoiser(net, new ByteTokenizer(config.MaskId == ByteTokenizer.Mask ? null : config.MaskId));
            var jobs = Enumerable.Range(0, requests).Select(i => new GenerationRequest($"request {i}: ",
                new SamplingOptions { MaxTokens = maxTokens, Seed = (ulong)i, StopOnEos = false, EntropyThreshold = 0 })).ToArray();
            // the scheduler first: it switches a CPU backend to the batch-invariant GEMM, for the one-at-a-time runs too
            using var scheduler = new RequestScheduler(model, maxBatch: requests);
            model.Sample("warm-up", jobs[0].Options with { MaxTokens = 8 });

            var alone = new string[requests];
            var aloneLatency = new double[requests];
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < requests; i++)
            {
                alone[i] = model.Sample(jobs[i].Prompt, jobs[i].Options).Texts[0];
                aloneLatency[i] = clock.Elapsed.TotalSeconds;   // a request queued at time 0 waits for those before it
            }
            double aloneWall = clock.Elapsed.TotalSeconds;

            var batchedLatency = new double[requests];
            clock.Restart();
            var texts = Task.WhenAll(jobs.Select((job, i) => Task.Run(async () =>
            {
                var sb = new System.Text.StringBuilder();
                await foreach (var u in scheduler.StreamAsync(job)) sb.Append(u.Text);
                batchedLatency[i] = clock.Elapsed.TotalSeconds;
                return sb.ToString();
            }))).GetAwaiter().GetResult();
            double batchedWall = clock.Elapsed.TotalSeconds;

            long tokens = (long)requests * maxTokens;
            int same = Enumerable.Range(0, requests).Count(i => texts[i] == alone[i]);
            Console.WriteLine($"serve-quick on {backend.Description}: {config.Layers} layers × {config.HiddenDim}, L={config.ModelLength}, L'={config.BlockSize}, " +
                $"{requests} requests × {maxTokens} tokens, load {BenchLoad()}");
            Console.WriteLine($"  one at a time: {tokens / aloneWall,9:F1} tokens/s, latency p50 {Percentile(aloneLatency, 50):F2} s, p95 {Percentile(aloneLatency, 95):F2} s");
            Console.WriteLine($"  batched:       {tokens / batchedWall,9:F1} tokens/s, latency p50 {Percentile(batchedLatency, 50):F2} s, p95 {Percentile(batchedLatency, 95):F2} s, " +
                $"{scheduler.Nfe} batched NFEs; {same}/{requests} texts equal to one at a time");
        }
        return 0;
    }

    static double Percentile(double[] values, double p)
    {
        var s = values.Order().ToArray();
        return s[(int)Math.Min(s.Length - 1, Math.Ceiling(p / 100 * s.Length) - 1)];
    }

    static string BenchLoad() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "n/a";
}
