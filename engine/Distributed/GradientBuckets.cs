using FastBlockDiff.Engine.Model;

namespace FastBlockDiff.Engine.Distributed;

/// <summary>A contiguous range of the flat gradient buffer that is all-reduced as one message.</summary>
public readonly record struct GradientBucket(int Offset, int Length)
{
    public int End => Offset + Length;
}

/// <summary>
/// How the flat gradient buffer is cut into all-reduce buckets. The backward pass finishes the parameters from the end
/// of the buffer towards its start (output layer, blocks from last to first, then embedding and sigma_map), so buckets
/// are filled with whole parameter tensors walking backwards from the last one, and closed once they hold at least
/// the bucket size: they come out in the order their gradients become final. A tensor is never split; one larger
/// than the bucket size is a bucket of its own.
/// </summary>
public static class GradientBuckets
{
    /// <summary>The default bucket size (PyTorch DDP's bucket_cap_mb).</summary>
    public const double DefaultMegabytes = 25;

    /// <summary>
    /// The buckets of <paramref name="parameters"/> at <paramref name="megabytes"/> (10⁶ bytes of fp32 gradients) each, in
    /// launch order (descending offsets); 0 gives one bucket of the whole buffer (the unbucketed all-reduce).
    /// </summary>
    public static IReadOnlyList<GradientBucket> Plan(ParameterSet parameters, double megabytes)
    {
        Validate(megabytes);
        var buckets = new List<GradientBucket>();
        if (parameters.Count == 0) return buckets;
        if (megabytes == 0) { buckets.Add(new GradientBucket(0, parameters.Count)); return buckets; }
        // at least one float: a bucket size below 4 bytes still means "one tensor per bucket", never an empty bucket
        long capFloats = Math.Max(1, (long)Math.Ceiling(megabytes * 1e6 / sizeof(float)));
        int end = parameters.Count;
        long filled = 0;
        for (int i = parameters.Infos.Count - 1; i >= 0; i--)
        {
            var p = parameters.Infos[i];
            filled += p.Length;
            if (filled >= capFloats || i == 0)
            {
                buckets.Add(new GradientBucket(p.Offset, end - p.Offset));
                end = p.Offset;
                filled = 0;
            }
        }
        return buckets;
    }

    /// <summary>A bucket size must be a finite number of megabytes ≥ 0 (0 = one all-reduce of the whole buffer).</summary>
    public static void Validate(double megabytes)
    {
        if (!double.IsFinite(megabytes) || megabytes < 0)
            throw new UserInputException($"--allreduce-bucket-mb must be a number ≥ 0 (0 = one all-reduce of the whole gradient buffer after the backward pass), got {megabytes}");
    }
}
