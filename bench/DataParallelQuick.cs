using System.Diagnostics;
using System.Globalization;
using FastBlockDiff.Engine.Distributed;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Bench;

/// <summary>
/// `[mpirun -np N] bench dataparallel-quick [--backend cpu] [--model custom --width 128 --layers 2 --heads 2] [--L 128]
/// [--Lp 4] [--batch 8] [--steps 10] [--allreduces 20] [--bucket-mb 0,0.25] [--out FILE]`: data-parallel training
/// throughput of N ranks (each rank a process; --batch is the global batch) for each all-reduce bucket size (0 = one
/// all-reduce of the whole gradient buffer after the backward pass; &gt; 0 = buckets started during the backward pass),
/// the steps of the bucket sizes interleaved so that load changes hit them alike. Per bucket size: the step, the part
/// of the step spent waiting for the all-reduce after the backward pass (the exposed all-reduce), and the all-reduce
/// of the same buckets alone (all started back to back after a barrier). Without mpirun it measures the
/// single-process baseline (no all-reduce). Rank 0 prints and writes the JSON.
/// </summary>
public static class DataParallelQuick
{
    sealed record Mode(double BucketMb, Trainer Trainer)
    {
        public readonly List<double> Steps = [], Waits = [], Reduces = [];
        /// <summary>Per step, the wait of the rank that finished its backward pass last (the least waiting one): the all-reduce
        /// time not hidden behind the backward pass. The other ranks wait longer by the skew between ranks.</summary>
        public double[] Exposed = [], Skew = [];
        public string Label => BucketMb == 0 ? "unbucketed" : $"buckets of {BucketMb.ToString(CultureInfo.InvariantCulture)} MB";
    }

    public static int Run(string[] args)
    {
        var o = new QuickOptions(args, new() { ["L"] = "128", ["Lp"] = "4", ["batch"] = "8", ["width"] = "128", ["bucket-mb"] = "0,0.25" });
        using var world = DataParallel.Join(TimeSpan.FromMinutes(5));
        var doc = BenchDoc.ForThisRun("dataparallel-quick", args,
            "median per step over --steps steps after 2 warm-up steps, bucket sizes interleaved step by step; exposed all-reduce: median wait after the backward pass; all-reduce alone: median of --allreduces calls after a barrier");
        double[] bucketSizes = world.Size == 1 ? [0]
            : o.Str("bucket-mb", "0").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        foreach (var b in o.StartedBackends())
        {
            int L = o.Ints("L")[0], lp = o.Ints("Lp")[0], batch = o.Ints("batch")[0];
            var cfg = BenchModels.FromOptions(o, "custom", L, lp);
            using var model = new Denoiser(b, cfg);
            model.Initialize(1, zeroInit: false);
            // one trainer per bucket size over the same model (each with its own moments): the steps alternate between them
            var modes = bucketSizes.Select(mb => new Mode(mb, new Trainer(model,
                new TrainOptions { BatchSize = batch, Steps = int.MaxValue, WarmupSteps = 1, LearningRate = 1e-5f, AllReduceBucketMb = mb },
                new RandomBatchSource(L, cfg.VocabSize - 1, 3), world))).ToList();
            int n = model.Params.Count;
            if (world.Rank == 0)
            {
                Console.WriteLine($"{world.Description}; backend {b.Name} ({Environment.ProcessorCount} threads per rank); model {cfg.Layers}x{cfg.HiddenDim}, " +
                    $"{n:N0} parameters; L={L} L'={lp}; global batch {batch} = {world.Size} x {batch / world.Size}");
                foreach (var m in modes.Where(m => m.Trainer.Buckets is not null))
                    Console.WriteLine($"  {m.Label}: {m.Trainer.Buckets!.Buckets.Count} buckets, {(m.Trainer.Buckets.Overlaps ? "overlapped with the backward pass" : "not overlapped (summed as started)")}");
            }

            foreach (var m in modes) for (int i = 0; i < 2; i++) m.Trainer.TrainStep();
            for (int i = 0; i < o.Int("steps", 10); i++)
                foreach (var m in modes)
                {
                    var t = Stopwatch.StartNew();
                    m.Trainer.TrainStep();
                    b.Synchronize();
                    m.Steps.Add(t.Elapsed.TotalSeconds);
                    m.Waits.Add(m.Trainer.LastAllReduceWait.TotalSeconds);
                }
            // the all-reduce alone, on the gradient buffer the steps just used (ranks start together after a barrier)
            for (int i = 0; i < o.Int("allreduces", 20); i++)
                foreach (var m in modes)
                {
                    world.Barrier();
                    var t = Stopwatch.StartNew();
                    if (m.Trainer.Buckets is { } buckets) buckets.Complete();
                    else world.AllReduce(b, model.Grads, ReduceOp.Sum);
                    m.Reduces.Add(t.Elapsed.TotalSeconds);
                }
            foreach (var m in modes) (m.Exposed, m.Skew) = AcrossRanks(world, m.Waits);
            foreach (var m in modes) m.Trainer.Dispose();
            if (world.Rank != 0) continue;

            long bytes = 4L * n;
            double ring = world.Size > 1 ? 2.0 * (world.Size - 1) / world.Size * bytes : 0;
            string impl = world.Size > 1 ? "mpi" : "single";
            foreach (var m in modes)
            {
                double step = QuickTimer.Median(m.Steps), exposed = QuickTimer.Median(m.Exposed), reduce = QuickTimer.Median(m.Reduces);
                string label = world.Size > 1 ? m.Label : "one rank";
                Console.WriteLine($"  {label}: step {step * 1e3:F1} ms = {batch * L / step:N0} tokens/s (all ranks together)" + (world.Size == 1 ? "; no all-reduce with one rank" :
                    $"; exposed all-reduce {exposed * 1e3:F3} ms per step (the other ranks wait {QuickTimer.Median(m.Skew) * 1e3:F1} ms longer: skew); " +
                    $"all-reduce of {bytes / 1e6:F2} MB alone: {reduce * 1e3:F3} ms ({ring / reduce / 1e9:F2} GB/s bus bandwidth)"));
                var shape = BenchModels.Shape(cfg, batch, o.Dtype, ("ranks", world.Size), ("params", n), ("bucket_mb", m.BucketMb));
                string name = $"fastblockdiff-{b.Name}-{impl}" + (world.Size > 1 ? (m.BucketMb == 0 ? "-unbucketed" : "-bucketed") : "");
                int buckets = m.Trainer.Buckets?.Buckets.Count ?? 1;
                doc.Results.Add(new BenchResult
                {
                    Suite = "dp_train_step", Impl = name, Backend = b.Name, Shape = shape,
                    Ms = Math.Round(step * 1e3, 3), TokensPerS = Math.Round(batch * L / step, 1), Runs = m.Steps.Count,
                    Note = $"Trainer.TrainStep with {world.Size} rank(s), global batch {batch}: each rank noises the global batch and trains its {batch / world.Size} rows; " +
                        $"gradient all-reduce ({label}, {buckets} bucket(s)) + loss all-reduce included",
                });
                doc.Results.Add(new BenchResult
                {
                    Suite = "dp_allreduce_exposed", Impl = name, Backend = b.Name, Shape = shape,
                    Ms = Math.Round(exposed * 1e3, 4), Runs = m.Exposed.Length,
                    Note = "Trainer.LastAllReduceWait of the rank that waited least (the last to finish its backward pass): the all-reduce time not hidden behind backward; " +
                        $"the other ranks waited a median {QuickTimer.Median(m.Skew) * 1e3:F2} ms longer (skew between ranks, not all-reduce)",
                });
                doc.Results.Add(new BenchResult
                {
                    Suite = "dp_allreduce", Impl = name, Backend = b.Name, Shape = shape,
                    Ms = Math.Round(reduce * 1e3, 4), Runs = m.Reduces.Count,
                    Note = $"{world.Description}: in-place sum of the {bytes:N0}-byte flat gradient buffer in {buckets} bucket(s), arrival checks included; ring volume 2(N-1)/N x bytes = {ring:N0} B per rank",
                });
            }
        }
        if (world.Rank == 0) o.WriteDoc(doc, $"dataparallel-{world.Size}");
        return 0;
    }

    /// <summary>Per step: the least wait over the ranks, and how much longer the most waiting rank waited.</summary>
    static (double[] Least, double[] Skew) AcrossRanks(ICollective world, List<double> waits)
    {
        // every rank fills its own row of a ranks × steps table; a sum gathers the table on every rank
        var table = new double[world.Size * waits.Count];
        waits.CopyTo(table, world.Rank * waits.Count);
        world.AllReduce(table, ReduceOp.Sum);
        var least = new double[waits.Count];
        var skew = new double[waits.Count];
        for (int i = 0; i < waits.Count; i++)
        {
            var step = Enumerable.Range(0, world.Size).Select(r => table[r * waits.Count + i]).ToArray();
            least[i] = step.Min();
            skew[i] = step.Max() - step.Min();
        }
        return (least, skew);
    }
}
