using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Bench;

/// <summary>
/// `bench step-quick [--backend cpu] [--model tiny|small|custom] [--width --layers --heads] [--vocab V] [--L 256]
/// [--Lp 4] [--batch 8] [--what train,eval] [--warmup 1] [--steps 3] [--out FILE]`: one configuration's training step
/// (Trainer.DeviceStep: noise, 2L forward with dropout, NELBO, backward, clip, AdamW + EMA) and evaluation forward
/// (the BD3 objective without backward on one noised batch), each timed over exactly --steps calls after --warmup,
/// with tokens/s = batch·L per call and model FLOPs counted as <see cref="ModelFlops"/>. The CPU comparison
/// (bench/run-cpu-compare.sh) runs it once per pair against bench/cpu/torch_objective.py.
/// </summary>
public static class StepQuick
{
    public static int Run(string[] args)
    {
        var o = new QuickOptions(args, new() { ["L"] = "256", ["Lp"] = "4", ["batch"] = "8", ["what"] = "train,eval" });
        int warmup = o.Int("warmup", 1), steps = o.Int("steps", 3);
        var doc = BenchDoc.ForThisRun("step-quick", args, $"median wall time of {steps} calls after {warmup} warm-up calls");
        doc.FlopsConvention = ModelFlops.Convention;
        var what = o.Str("what", "train,eval").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var b in o.StartedBackends())
        {
            string ours = "fastblockdiff-" + b.Name;
            int batch = o.Ints("batch")[0];
            foreach (int L in o.Ints("L"))
            foreach (int lp in o.Ints("Lp"))
            {
                var cfg = BenchModels.FromOptions(o, "tiny", L, lp);
                using var model = new Denoiser(b, cfg);
                model.Initialize(1, zeroInit: false);
                Console.WriteLine($"backend {b.Name}; model {cfg.Layers}x{cfg.HiddenDim} ({cfg.Heads} heads), V={cfg.VocabSize}, {model.Params.Count:N0} parameters; L={L} L'={lp} batch={batch}");
                var shape = BenchModels.Shape(cfg, batch, o.Dtype);
                void Add(string suite, List<double> times, double flops, string note)
                {
                    double sec = QuickTimer.Median(times);
                    doc.Results.Add(new BenchResult
                    {
                        Suite = suite, Impl = ours, Backend = b.Name, Shape = new(shape), Ms = Math.Round(sec * 1e3, 3),
                        Tflops = Math.Round(flops / sec / 1e12, 6), TokensPerS = Math.Round(batch * L / sec, 1), Runs = times.Count, Note = note,
                    });
                    Console.WriteLine($"  {suite,-12}: {sec * 1e3,9:F1} ms = {batch * L / sec,9:N0} tokens/s, {flops / sec / 1e9,6:F1} model GFLOP/s");
                }
                if (what.Contains("train"))
                {
                    using var trainer = new Trainer(model, new TrainOptions { BatchSize = batch, Steps = int.MaxValue, WarmupSteps = 1, LearningRate = 1e-5f },
                        new RandomBatchSource(L, cfg.VocabSize - 1, 3));
                    var t = Timed(() => { trainer.DeviceStep(); b.Synchronize(); }, warmup, steps);
                    Add("train_step", t, ModelFlops.TrainStep(batch, cfg.HiddenDim, cfg.Layers, cfg.VocabSize, L, lp),
                        "Trainer.DeviceStep: noise, 2L forward with dropout 0.1, head on the noisy half, NELBO, backward, grad norm + clip, AdamW + EMA");
                }
                if (what.Contains("eval"))
                {
                    using var objective = new Bd3Objective(model);
                    var rng = new Rng(9);
                    var clean = new int[batch * L];
                    for (int i = 0; i < clean.Length; i++) clean[i] = rng.NextInt(cfg.VocabSize - 1);
                    var bb = new Bd3Batch(batch, L, lp);
                    bb.Noise(clean, NoiseSchedule.Linear, cfg.MaskId, rng);
                    var t = Timed(() => { objective.Run(bb, backward: false); b.Synchronize(); }, warmup, steps);
                    Add("eval_forward", t, ModelFlops.EvalForward(batch, cfg.HiddenDim, cfg.Layers, cfg.VocabSize, L, lp),
                        "Bd3Objective.Run without backward: 2L forward (no dropout), head on the noisy half, NELBO per token read back");
                }
            }
        }
        o.WriteDoc(doc, "step");
        return 0;
    }

    static List<double> Timed(Action f, int warmup, int steps)
    {
        for (int i = 0; i < warmup; i++) f();
        var times = new List<double>();
        for (int i = 0; i < steps; i++)
        {
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            f();
            times.Add(System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalSeconds);
        }
        return times;
    }
}
