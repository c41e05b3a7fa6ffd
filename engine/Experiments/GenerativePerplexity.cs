namespace FastBlockDiff.Engine.Experiments;

/// <summary>
/// Generative perplexity as bd3lms reports it (metrics.py, record_generative_perplexity with one sample per batch):
/// each sample's perplexity exp(NLL / tokens) under the scorer, EOS targets excluded, then the mean over samples.
/// Not the pooled exp(ΣNLL / Σtokens): a few short, surprising samples weigh as much as long fluent ones.
/// </summary>
public readonly record struct GenerativePerplexity(double Mean, double Std, int Samples, double Pooled)
{
    /// <summary>Aggregates per-sample scores; a sample with no scored token (all EOS, or empty) is left out.</summary>
    public static GenerativePerplexity FromScores(IReadOnlyList<SampleScore> scores)
    {
        var scored = scores.Where(s => s.Tokens > 0).ToList();
        if (scored.Count == 0) return new(double.NaN, double.NaN, 0, double.NaN);
        var ppl = scored.Select(s => s.Perplexity).ToList();
        double mean = ppl.Average();
        double std = ppl.Count > 1 ? Math.Sqrt(ppl.Sum(p => (p - mean) * (p - mean)) / (ppl.Count - 1)) : 0;
        double pooled = Math.Exp(scored.Sum(s => s.Nll) / scored.Sum(s => s.Tokens));
        return new(mean, std, scored.Count, pooled);
    }
}
