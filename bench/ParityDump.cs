using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Bench;

/// <summary>
/// `bench parity-dump --checkpoint DIR --out FILE [--batch 2] [--seed 1] [--init tiny|custom [--L 64 --Lp 4 ...]]`:
/// runs our BD3 objective once (dropout off) on the checkpoint's model and writes what bench/flex/parity.py needs to
/// recompute it with PyTorch autograd, as one safetensors file:
/// x [B,L] i32 (clean), x_noisy [B,L] i32, t [B,L/L'] f32 (mask rate per block), weights [B,L] f32 (1/t where masked,
/// else 0), loss [1] f32 (mean over all B·L tokens), logits [B,L,V] f32 (raw head output of the noisy half, MASK column
/// included), and grad.&lt;parameter name&gt; for every parameter (d loss / d θ, names as in the checkpoint without
/// "backbone."). Metadata: the config JSON and the conventions. With --init and no checkpoint at DIR, a random
/// (non-zero-init) checkpoint is written there first, so the check can run without a trained model.
/// </summary>
public static class ParityDump
{
    public static int Run(string[] args)
    {
        var o = new QuickOptions(args);
        string dir = o.Get("checkpoint") ?? throw new ArgumentException("parity-dump needs --checkpoint DIR");
        string output = o.Get("out") ?? throw new ArgumentException("parity-dump needs --out FILE");
        int batchSize = o.Int("batch", 2);
        ulong seed = (ulong)o.Int("seed", 1);
        using var backend = new CpuBackend();
        if (!File.Exists(Path.Combine(dir, ModelCheckpoint.ConfigFile)) && o.Get("init") is { } size)
        {
            var cfg0 = BenchModels.Build(size, o.Int("vocab", 260), o.Int("L", 64), o.Int("Lp", 4), o.Int("width", 64), o.Int("layers", 2), o.Int("heads", 2));
            var init = new Denoiser(backend, cfg0);
            init.Initialize((int)seed, zeroInit: false);
            ModelCheckpoint.Save(dir, cfg0, init.Params, init.DownloadWeights());
            Console.WriteLine($"wrote a random {size} checkpoint ({init.Params.Count:N0} parameters) to {dir}");
        }
        var model = ModelCheckpoint.Load(dir, backend);
        var c = model.Config;
        int L = c.ModelLength, V = c.VocabSize;
        var rng = new Rng(seed);
        var clean = new int[batchSize * L];
        for (int i = 0; i < clean.Length; i++)
        {
            int t;
            do t = rng.NextInt(V); while (t == c.MaskId);
            clean[i] = t;
        }
        var batch = new Bd3Batch(batchSize, L, c.BlockSize);
        batch.Noise(clean, NoiseSchedule.Linear, c.MaskId, rng);
        var objective = new Bd3Objective(model);
        double loss = objective.Run(batch, backward: false);
        var logits = objective.LastLogits(batch);
        backend.Fill(model.Grads, 0f);
        double loss2 = objective.Run(batch, backward: true);
        var grads = new float[model.Params.Count];
        backend.Download(model.Grads, grads);
        Console.WriteLine($"model {c.Layers}x{c.HiddenDim} V={V} L={L} L'={c.BlockSize}; batch {batchSize}; NELBO {loss:F6} (again with backward: {loss2:F6})");

        var tensors = new List<SafetensorsTensorData>
        {
            SafetensorsTensorData.I32("x", [batchSize, L], batch.Clean),
            SafetensorsTensorData.I32("x_noisy", [batchSize, L], batch.Noisy),
            SafetensorsTensorData.F32("t", [batchSize, L / c.BlockSize], batch.Rates),
            SafetensorsTensorData.F32("weights", [batchSize, L], batch.Weights),
            SafetensorsTensorData.F32("loss", [1], new[] { (float)loss2 }),
            SafetensorsTensorData.F32("logits", [batchSize, L, V], logits),
        };
        var mem = grads.AsMemory();
        foreach (var p in model.Params.Infos)
            tensors.Add(SafetensorsTensorData.F32("grad." + p.Name, p.Shape, mem.Slice(p.Offset, p.Length)));
        var meta = new Dictionary<string, string>
        {
            ["producer"] = "FastBlockDiff bench parity-dump",
            ["commit"] = BenchEnv.Commit(),
            ["config"] = c.ToJson(),
            ["loss"] = "mean over all B*L tokens of weights*(logsumexp_{v != mask}(logits) - logits[x]); weights = 1/t where x_noisy == mask else 0",
            ["layout"] = "model input x_noisy ⊕ x (2L tokens), rotary positions 0..L-1 for both halves, BD3 mask, head on the noisy half; dropout 0",
            ["checkpoint"] = Path.GetFullPath(dir),
        };
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output))!);
        SafetensorsFile.Write(output, tensors, meta);
        Console.WriteLine($"wrote {output} ({tensors.Count} tensors)");
        return 0;
    }
}
