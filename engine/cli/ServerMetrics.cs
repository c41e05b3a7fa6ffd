using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using FastBlockDiff.Engine.Serving;

namespace FastBlockDiff.Cli;

/// <summary>The server's counters and the scheduler's gauges in the Prometheus text format.</summary>
sealed class ServerMetrics(RequestScheduler scheduler)
{
    readonly ConcurrentDictionary<string, long> _requests = new();
    long _rejected, _disconnected;

    public void Requests(string endpoint) => _requests.AddOrUpdate(endpoint, 1, (_, n) => n + 1);
    public void Rejected() => Interlocked.Increment(ref _rejected);
    public void Disconnected() => Interlocked.Increment(ref _disconnected);

    public string Render()
    {
        var sb = new StringBuilder();
        void Metric(string name, string type, string help, params (string Labels, double Value)[] values)
        {
            sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            sb.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            foreach (var (labels, value) in values)
                sb.Append(name).Append(labels).Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        }
        Metric("fastblockdiff_requests_total", "counter", "HTTP generation requests received, by endpoint.",
            [.. _requests.OrderBy(kv => kv.Key).Select(kv => ($"{{endpoint=\"{kv.Key}\"}}", (double)kv.Value))]);
        Metric("fastblockdiff_requests_completed_total", "counter", "Generations that ran to their end.", ("", scheduler.CompletedRequests));
        Metric("fastblockdiff_requests_rejected_total", "counter", "Requests refused with 429 (queue full).", ("", Interlocked.Read(ref _rejected)));
        Metric("fastblockdiff_requests_disconnected_total", "counter", "Requests whose client went away before the end.", ("", Interlocked.Read(ref _disconnected)));
        Metric("fastblockdiff_generated_tokens_total", "counter", "Tokens generated.", ("", scheduler.GeneratedTokens));
        Metric("fastblockdiff_nfe_total", "counter", "Batched denoiser calls.", ("", scheduler.Nfe));
        Metric("fastblockdiff_queue_depth", "gauge", "Requests waiting for the next block boundary.", ("", scheduler.QueueDepth));
        Metric("fastblockdiff_active_requests", "gauge", "Requests in the batch.", ("", scheduler.ActiveRequests));
        double busy = scheduler.Busy.TotalSeconds;
        Metric("fastblockdiff_tokens_per_second", "gauge", "Generated tokens per second of busy backend time.", ("", busy > 0 ? scheduler.GeneratedTokens / busy : 0));
        return sb.ToString();
    }
}
