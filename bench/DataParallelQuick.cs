using System.Diagnostics;
using FastBlockDiff.Engine.Distributed;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Bench;

/// <summary>
/// `[mpirun -np N] bench dataparallel-quick [--backend cpu] [--model custom --width 128 --layers 2 --heads 2] [--L 128]
/// [--Lp 4] [--batch 8] [--steps 10] [--allreduces 20] [--out FILE]`: data-parallel training throughput of N ranks
/// (each rank a process; --batch is the global batch) and the time of one all-reduce of the flat gradient buffer.
/// Without mpirun it measures the single-process baseline. Rank 0 prints and writes the JSON.
/// </summary>
public static class DataParallelQuick
{
    public static int Run(string[] args)
    {
        var o = new QuickOptions(args, new() { ["L"] = "128", ["Lp"] = "4", ["batch"] = "8", ["width"] = "128" });
        using var world = DataParallel.Join(TimeSpan.FromMinutes(5));
        var doc = BenchDoc.ForThisRun("dataparallel-quick", args, "median per step over --steps steps after 2 warm-up steps; all-reduce median of --allreduces calls");
        foreach (var b in o.StartedBackends())
        {
            int L = o.Ints("L")[0], lp = o.Ints("Lp")[0], batch = o.Ints("batch")[0];
            var cfg = BenchModels.FromOptions(o, "custom", L, lp);
            var model = new Denoiser(b, cfg);
            model.Initialize(1, zeroInit: false);
            var trainer = new Trainer(model, new TrainOptions { BatchSize = batch, Steps = int.MaxValue, WarmupSteps = 1, LearningRate = 1e-5f },
                new RandomBatchSource(L, cfg.VocabSize - 1, 3), world);
            int n = model.Params.Count;
            if (world.Rank == 0)
                Console.WriteLine($"{world.Description}; backend {b.Name} ({Environment.ProcessorCount} threads per rank); model {cfg.Layers}x{cfg.HiddenDim}, " +
                    $"{n:N0} parameters; L={L} L'={lp}; global batch {batch} = {world.Size} x {batch / world.Size}");

            for (int i = 0; i < 2; i++) trainer.TrainStep();
            var steps = new List<double>();
            for (int i = 0; i < o.Int("steps", 10); i++)
            {
                var t = Stopwatch.StartNew();
                trainer.TrainStep();
                b.Synchronize();
                steps.Add(t.Elapsed.TotalSeconds);
            }
            // the all-reduce alone, on the gradient buffer the steps just used (ranks start together after a barrier)
            var reduces = new List<double>();
            for (int i = 0; i < o.Int("allreduces", 20); i++)
            {
                world.Barrier();
                var t = Stopwatch.StartNew();
                world.AllReduce(b, model.Grads, ReduceOp.Sum);
                reduces.Add(t.Elapsed.TotalSeconds);
            }
            double step = QuickTimer.Median(steps), reduce = QuickTimer.Median(reduces);
            long bytes = 4L * n;
            double ring = world.Size > 1 ? 2.0 * (world.Size - 1) / world.Size * bytes : 0;
            if (world.Rank != 0) continue;
            Console.WriteLine($"  step {step * 1e3:F1} ms = {batch * L / step:N0} tokens/s (all ranks together); " +
                $"all-reduce of {bytes / 1e6:F2} MB: {reduce * 1e3:F3} ms ({(world.Size > 1 ? $"{ring / reduce / 1e9:F2} GB/s bus bandwidth" : "no-op with one rank")})");
            var shape = BenchModels.Shape(cfg, batch, o.Dtype, ("ranks", world.Size), ("params", n));
            doc.Results.Add(new BenchResult
            {
                Suite = "dp_train_step", Impl = $"fastblockdiff-{b.Name}-{(world.Size > 1 ? "mpi" : "single")}", Backend = b.Name, Shape = shape,
                Ms = Math.Round(step * 1e3, 3), TokensPerS = Math.Round(batch * L / step, 1), Runs = steps.Count,
                Note = $"Trainer.TrainStep with {world.Size} rank(s), global batch {batch}: each rank noises the global batch and trains its {batch / world.Size} rows; gradient all-reduce + loss all-reduce included",
            });
            doc.Results.Add(new BenchResult
            {
                Suite = "dp_allreduce", Impl = $"fastblockdiff-{b.Name}-{(world.Size > 1 ? "mpi" : "single")}", Backend = b.Name, Shape = shape,
                Ms = Math.Round(reduce * 1e3, 4), Runs = reduces.Count,
                Note = $"{world.Description}: in-place sum of the {bytes:N0}-byte flat gradient buffer, arrival check included; ring volume 2(N-1)/N x bytes = {ring:N0} B per rank",
            });
        }
        if (world.Rank == 0) o.WriteDoc(doc, $"dataparallel-{world.Size}");
        return 0;
    }
}
