using System.Runtime.InteropServices;
using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Engine.Distributed;

/// <summary>
/// Makes every rank's trainer hold rank 0's state (weights, Adam moments, EMA, step, RNG, data position, schedule, loss
/// log): at the start of a data-parallel run, fresh or resumed, so that all ranks begin from the same point.
/// </summary>
public static class TrainingStateBroadcast
{
    public static void FromRoot(ICollective world, Trainer trainer)
    {
        if (world.Size == 1) return;
        var s = trainer.Capture();
        // the sizes first, so that the other ranks can make room for the arrays
        long[] header = [s.Step, s.Rng.Length, s.Data.Length, s.LossLog.Count, BitConverter.SingleToInt32Bits(s.ScheduleMin), BitConverter.SingleToInt32Bits(s.ScheduleMax), s.Weights.Length];
        world.Broadcast(MemoryMarshal.AsBytes(header.AsSpan()), 0);
        if (header[6] != s.Weights.Length)
            throw new CollectiveFailedException($"rank {world.Rank}: rank 0 trains {header[6]:N0} parameters but this rank built a model of {s.Weights.Length:N0}: the ranks were started with different arguments");
        if (world.Rank != 0)
        {
            s.Step = (int)header[0];
            s.Rng = new ulong[header[1]];
            s.Data = new long[header[2]];
            s.ScheduleMin = BitConverter.Int32BitsToSingle((int)header[4]);
            s.ScheduleMax = BitConverter.Int32BitsToSingle((int)header[5]);
        }
        var logSteps = world.Rank == 0 ? s.LossLog.Select(l => (long)l.Step).ToArray() : new long[header[3]];
        var logLosses = world.Rank == 0 ? s.LossLog.Select(l => l.Loss).ToArray() : new double[header[3]];
        foreach (var a in new[] { s.Weights, s.M, s.V, s.Ema }) world.Broadcast(MemoryMarshal.AsBytes(a.AsSpan()), 0);
        world.Broadcast(MemoryMarshal.AsBytes(s.Rng.AsSpan()), 0);
        world.Broadcast(MemoryMarshal.AsBytes(s.Data.AsSpan()), 0);
        world.Broadcast(MemoryMarshal.AsBytes(logSteps.AsSpan()), 0);
        world.Broadcast(MemoryMarshal.AsBytes(logLosses.AsSpan()), 0);
        if (world.Rank != 0)
        {
            s.LossLog = logSteps.Zip(logLosses, (st, l) => ((int)st, l)).ToList();
            trainer.Restore(s);
        }
    }

    /// <summary>After rank 0 alone ran a schedule search, every rank adopts its (β, ω).</summary>
    public static void ScheduleFromRoot(ICollective world, Trainer trainer)
    {
        if (world.Size == 1) return;
        float[] range = [trainer.Schedule.Min, trainer.Schedule.Max];
        world.Broadcast(MemoryMarshal.AsBytes(range.AsSpan()), 0);
        if (world.Rank != 0) trainer.Schedule = new NoiseSchedule(range[0], range[1]);
    }
}
