using System.CommandLine;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Distributed;
using FastBlockDiff.Engine.Training;
using Spectre.Console;

namespace FastBlockDiff.Cli;

/// <summary>`train`: BD3-LM training with a progress bar, periodic eval/checkpoints and a loss-curve PNG.</summary>
static class TrainCommand
{
    public static Command Create()
    {
        var data = new Option<string>("--data") { Description = "corpus: text file, folder of .txt, or .jsonl", Required = true };
        var model = new Option<string>("--model") { Description = "tiny, small or custom", DefaultValueFactory = _ => "tiny" };
        var seqLen = new Option<int>("--seq-len") { Description = "sequence length L", DefaultValueFactory = _ => 256 };
        var blockSize = new Option<int>("--block-size") { Description = "block size L' (1 = autoregressive, L = MDLM)", DefaultValueFactory = _ => 4 };
        var steps = new Option<int>("--steps") { Description = "optimiser steps", DefaultValueFactory = _ => 1000 };
        var outDir = new Option<string>("--out") { Description = "output directory", Required = true };
        var backend = new Option<string>("--backend") { Description = "auto, cpu, cuda or ilgpu", DefaultValueFactory = _ => "auto" };
        var resume = new Option<bool>("--resume") { Description = "continue from the training state in --out" };
        var overwrite = new Option<bool>("--overwrite") { Description = "replace a checkpoint already in --out" };
        var batch = new Option<int>("--batch-size") { Description = "sequences per step", DefaultValueFactory = _ => 8 };
        var lr = new Option<float>("--lr") { Description = "peak learning rate", DefaultValueFactory = _ => 3e-4f };
        var warmup = new Option<int>("--warmup") { Description = "linear warm-up steps", DefaultValueFactory = _ => 100 };
        var lrSchedule = new Option<string>("--lr-schedule") { Description = "constant or cosine", DefaultValueFactory = _ => "constant" };
        var wd = new Option<float>("--weight-decay") { DefaultValueFactory = _ => 0f };
        var clip = new Option<float>("--grad-clip") { DefaultValueFactory = _ => 1f };
        var ema = new Option<float>("--ema") { Description = "EMA decay (warmed up as (1+s)/(10+s))", DefaultValueFactory = _ => 0.9999f };
        var betaMin = new Option<float>("--beta") { Description = "clipped schedule: lowest mask rate β", DefaultValueFactory = _ => 0f };
        var betaMax = new Option<float>("--omega") { Description = "clipped schedule: highest mask rate ω", DefaultValueFactory = _ => 1f };
        var search = new Option<int>("--schedule-search-every") { Description = "re-run the (β, ω) variance search every N steps (0 = never)", DefaultValueFactory = _ => 0 };
        var evalEvery = new Option<int>("--eval-every") { Description = "validation NELBO every N steps (0 = only at the end)", DefaultValueFactory = _ => 0 };
        var ckptEvery = new Option<int>("--checkpoint-every") { Description = "save every N steps (0 = only at the end)", DefaultValueFactory = _ => 0 };
        var tokenizer = new Option<string>("--tokenizer") { Description = "byte, gpt2:DIR, tiktoken:FILE, cl100k, o200k", DefaultValueFactory = _ => "byte" };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 1UL };
        var dropout = new Option<float>("--dropout") { DefaultValueFactory = _ => 0.1f };
        var hidden = new Option<int?>("--hidden-dim") { Description = "custom width" };
        var layers = new Option<int?>("--layers") { Description = "custom depth" };
        var heads = new Option<int?>("--heads") { Description = "custom head count" };
        var allowNonFinite = AllowNonFiniteOption.Create();
        var nproc = new Option<int>("--nproc") { Description = "data-parallel ranks: runs mpirun -np N on this command (--batch-size is the global batch)", DefaultValueFactory = _ => 1 };
        var collective = new Option<string>("--collective") { Description = "gradient all-reduce under mpirun: auto (NCCL on CUDA, else MPI), mpi or nccl", DefaultValueFactory = _ => "auto" };
        var collectiveTimeout = new Option<double>("--collective-timeout") { Description = "seconds a rank waits for the others before the job is aborted naming the missing rank", DefaultValueFactory = _ => DataParallel.DefaultTimeout.TotalSeconds };
        var bucketMb = new Option<double>("--allreduce-bucket-mb") { Description = "data parallel: all-reduce the gradients in buckets of this many MB, overlapped with the backward pass (0 = one all-reduce after it)", DefaultValueFactory = _ => GradientBuckets.DefaultMegabytes };
        var gradAccum = new Option<int>("--grad-accum") { Description = "micro-batches of --batch-size per optimiser step", DefaultValueFactory = _ => 1 };
        var initFrom = new Option<string?>("--init-from") { Description = "start from this checkpoint's weights (fresh optimiser), e.g. fine-tune at a smaller L'" };
        var noise = new Option<string>("--noise-schedule") { Description = "linear, square, sqrt, log or cosine (the reference's schedules)", DefaultValueFactory = _ => "linear" };
        var packing = new Option<string>("--packing") { Description = "wrap (documents with EOS between them, across rows) or per-row ([BOS] … [EOS] rows)", DefaultValueFactory = _ => "wrap" };
        var cmd = new Command("train", "train a BD3-LM")
        {
            data, model, seqLen, blockSize, steps, outDir, backend, resume, overwrite, batch, lr, warmup, lrSchedule, wd, clip, ema,
            betaMin, betaMax, search, evalEvery, ckptEvery, tokenizer, seed, dropout, hidden, layers, heads, allowNonFinite, nproc, collective, collectiveTimeout,
            packing, initFrom, gradAccum, bucketMb, noise,
        };
        cmd.SetAction(r => CliRunner.Run(cancel =>
        {
            int ranks = r.GetValue(nproc);
            if (ranks < 1) throw new UserInputException($"--nproc must be at least 1, got {ranks}");
            if (ranks > 1 && r.GetValue(batch) % ranks != 0)
                throw new UserInputException($"--batch-size {r.GetValue(batch)} (the global batch) is not divisible by --nproc {ranks}; use a multiple of {ranks}");
            if (ranks > 1 && DataParallel.LaunchedRanks() is null) return MpiLauncher.Relaunch(ranks);
            if (ranks > 1 && DataParallel.LaunchedRanks() != ranks)
                throw new UserInputException($"--nproc {ranks} under a launcher that started {DataParallel.LaunchedRanks()} ranks: drop --nproc when using mpirun -np");
            var req = new TrainingRequest
            {
                DataPath = r.GetValue(data)!, OutputDirectory = r.GetValue(outDir)!, ModelSize = r.GetValue(model)!,
                SeqLen = r.GetValue(seqLen), BlockSize = r.GetValue(blockSize), Tokenizer = r.GetValue(tokenizer)!,
                ScheduleMin = r.GetValue(betaMin), ScheduleMax = r.GetValue(betaMax), Noise = NoiseSchedule.Parse(r.GetValue(noise)!), Dropout = r.GetValue(dropout),
                Backend = r.GetValue(backend)!, Resume = r.GetValue(resume), Overwrite = r.GetValue(overwrite), AllowNonFinite = r.GetValue(allowNonFinite), Collective = r.GetValue(collective)!, InitFrom = r.GetValue(initFrom),
                HiddenDim = r.GetValue(hidden), Layers = r.GetValue(layers), Heads = r.GetValue(heads),
                Packing = r.GetValue(packing) switch
                {
                    "wrap" => Engine.Data.RowPacking.Wrap,
                    "per-row" => Engine.Data.RowPacking.PerRow,
                    var other => throw new UserInputException($"--packing must be wrap or per-row, got '{other}'"),
                },
                Options = new TrainOptions
                {
                    Steps = r.GetValue(steps), BatchSize = r.GetValue(batch), GradAccumulation = r.GetValue(gradAccum), LearningRate = r.GetValue(lr), WarmupSteps = r.GetValue(warmup),
                    LrSchedule = r.GetValue(lrSchedule)!, WeightDecay = r.GetValue(wd), GradClip = r.GetValue(clip), EmaDecay = r.GetValue(ema),
                    Seed = r.GetValue(seed), EvalEvery = r.GetValue(evalEvery), CheckpointEvery = r.GetValue(ckptEvery),
                    ScheduleSearchEvery = r.GetValue(search), Dropout = r.GetValue(dropout) > 0,
                    AllReduceBucketMb = r.GetValue(bucketMb),
                },
            };
            using var world = DataParallel.Join(TimeSpan.FromSeconds(r.GetValue(collectiveTimeout)));
            TrainingReport report;
            try { report = Train(req, cancel, world); }
            catch (Exception e) when (world.Size > 1)
            {
                // the other ranks are waiting in a collective: end them all now, naming this rank (MPI_Abort does not return)
                world.Abort(e is UserInputException or CollectiveFailedException ? e.Message : $"{e.GetType().Name}: {e.Message}",
                    e is UserInputException ? CliRunner.UserError : CliRunner.InternalError);
                throw;
            }
            if (world.Rank != 0) return report.Cancelled ? 130 : 0; // rank 0 alone reports and writes
            if (report.Validation is { } v)
                Console.WriteLine($"validation: NELBO {v.Nelbo:F4} nats/token, perplexity {v.Perplexity:F3}" +
                    (req.Tokenizer == "byte" ? $", {v.BitsPerToken:F3} bits/byte" : "") + $" ({v.Sequences} sequences, t ~ U[1e-3, 1])");
            Console.WriteLine($"trained {report.Steps} steps in {report.Elapsed:hh\\:mm\\:ss} at {report.TokensPerSecond:N0} tokens/s; saved to {report.OutputDirectory}");
            string png = Path.Combine(report.OutputDirectory, "loss.png");
            LossPlot.Write(png, report.LossLog);
            Console.WriteLine($"loss curve: {png}");
            return report.Cancelled ? 130 : 0;
        }));
        return cmd;
    }

    static TrainingReport Train(TrainingRequest req, CancellationToken cancel, ICollective world)
    {
        bool interactive = world.Rank == 0 && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        var lastLine = DateTime.MinValue;
        TrainingObserver Observer(Action<TrainProgress> onStep) => new()
        {
            OnMessage = m => Console.WriteLine(m),
            OnStep = onStep,
            OnEval = (s, e) => Console.WriteLine($"step {s}: validation NELBO {e.Nelbo:F4}, perplexity {e.Perplexity:F3}"),
            OnCheckpoint = (s, d) => { if (s % 1 == 0 && !interactive) Console.WriteLine($"step {s}: checkpoint saved to {d}"); },
        };
        if (!interactive)
        {
            return TrainingRun.Run(req, world: world, cancel: cancel, observer: Observer(p =>
            {
                if (p.Step == p.TotalSteps || (DateTime.UtcNow - lastLine).TotalSeconds >= 10)
                {
                    lastLine = DateTime.UtcNow;
                    Console.WriteLine($"step {p.Step}/{p.TotalSteps}  loss {p.Loss:F4}  lr {p.LearningRate:g3}  |g| {p.GradNorm:F2}  {p.TokensPerSecond:N0} tok/s  eta {p.Eta:hh\\:mm\\:ss}");
                }
            }));
        }
        TrainingReport? report = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("training", maxValue: req.Options.Steps);
                report = TrainingRun.Run(req, Observer(p =>
                {
                    task.Value = p.Step;
                    task.Description = $"step {p.Step}/{p.TotalSteps} loss {p.Loss:F3} {p.TokensPerSecond:N0} tok/s";
                }), cancel, world);
            });
        return report!;
    }
}
