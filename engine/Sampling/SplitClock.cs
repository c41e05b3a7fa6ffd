using System.Diagnostics;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Sampling;

/// <summary>
/// Generation time split into the model's (the network and its output head) and the sampler's (everything else:
/// drawing tokens, choosing positions, stop rules), for <see cref="SamplingOptions.MeasureSplit"/>. Each lap ends
/// with the backend synchronised, so that a GPU's queued work is counted where it was issued.
/// </summary>
internal sealed class SplitClock(IBackend backend)
{
    long _mark = Stopwatch.GetTimestamp();
    public double ModelSeconds, SamplerSeconds;

    /// <summary>The time since the last lap was the model's.</summary>
    public void ToModel() => ModelSeconds += Lap();

    /// <summary>The time since the last lap was the sampler's.</summary>
    public void ToSampler() => SamplerSeconds += Lap();

    double Lap()
    {
        backend.Synchronize();
        long now = Stopwatch.GetTimestamp();
        double s = (double)(now - _mark) / Stopwatch.Frequency;
        _mark = now;
        return s;
    }
}
