using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>The engine run unchanged on another backend gives what it gives on the CPU reference backend.</summary>
static class EngineParity
{
    /// <summary>Deterministic rows: the same tokens for every backend and every run.</summary>
    internal sealed class FixedRows(int length, int vocab) : IBatchSource
    {
        long pos;
        public int SequenceLength => length;
        public void Next(Span<int> dst, int batch)
        {
            for (int i = 0; i < dst.Length; i++) dst[i] = (int)((pos * 7 + i * 5 + i / 3) % vocab);
            pos++;
        }
        public long[] SaveState() => [pos];
        public void RestoreState(long[] state) => pos = state[0];
    }

    static void CloseArrays(float[] expected, float[] actual, string what, double tol)
    {
        double maxErr = 0, maxRef = 0;
        for (int i = 0; i < expected.Length; i++) { maxErr = Math.Max(maxErr, Math.Abs(expected[i] - actual[i])); maxRef = Math.Max(maxRef, Math.Abs(expected[i])); }
        Assert.True(maxErr <= tol * Math.Max(maxRef, 1e-6), $"{what}: max err {maxErr:E2} vs max {maxRef:E2}");
    }

    /// <summary>Two optimiser steps with dropout: same loss, gradient norm and weights as the CPU backend (within tol).</summary>
    public static void TrainingStepsEqualCpu(IBackend other, double tol = 1e-4)
    {
        var config = TinyModels.Config(length: 8, blockSize: 2, vocab: 13, dim: 16, heads: 2, layers: 2) with { Dropout = 0.1f };
        var opts = new TrainOptions { Steps = 2, BatchSize = 2, WarmupSteps = 1, LearningRate = 1e-2f, Seed = 5 };
        var results = new List<(double loss, double norm, float[] w)>();
        foreach (IBackend be in new IBackend[] { new CpuBackend(), other })
        {
            var m = TinyModels.Random(config, seed: 11, backend: be);
            var tr = new Trainer(m, opts, new FixedRows(8, 12));
            var (l1, n1, _) = tr.TrainStep();
            var (l2, n2, _) = tr.TrainStep();
            results.Add((l1 + l2, n1 + n2, m.DownloadWeights()));
        }
        Assert.True(Math.Abs(results[0].loss - results[1].loss) <= tol * Math.Abs(results[0].loss), $"loss {results[0].loss} vs {results[1].loss}");
        Assert.True(Math.Abs(results[0].norm - results[1].norm) <= tol * results[0].norm, $"grad norm {results[0].norm} vs {results[1].norm}");
        CloseArrays(results[0].w, results[1].w, "weights after two AdamW steps", tol);
    }

    /// <summary>Sampled blocks (tokens and NFEs) equal the CPU backend's for the same seed.</summary>
    public static void SampledBlocksEqualCpu(IBackend other, SamplerKind kind)
    {
        var config = TinyModels.Config(length: 16, blockSize: 4, vocab: 13);
        if (NucleusRuleTests.CpuKeepsCrossingToken()) Assert.Skip(NucleusRuleTests.CpuPending);
        var opts = new SamplingOptions { MaxTokens = 8, Seed = 42, Kind = kind, StopOnEos = false, EntropyThreshold = 0, BatchSize = 2, TopP = 0.9f };
        var cpu = new BlockSampler(TinyModels.Random(config, 3, new CpuBackend()), 9, 10).Generate([1, 2, 3], opts);
        var got = new BlockSampler(TinyModels.Random(config, 3, other), 9, 10).Generate([1, 2, 3], opts);
        Assert.Equal(cpu.Tokens, got.Tokens);
        Assert.Equal(cpu.Nfe, got.Nfe);
    }
}
