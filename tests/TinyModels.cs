using FastBlockDiff.Engine.Model;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>Very small denoisers for exact tests.</summary>
static class TinyModels
{
    public static ModelConfig Config(int length = 8, int blockSize = 2, int vocab = 13, int dim = 16, int heads = 2, int layers = 2) => new()
    {
        VocabSize = vocab, MaskId = vocab - 1, HiddenDim = dim, CondDim = 8, Layers = layers, Heads = heads,
        ModelLength = length, BlockSize = blockSize, Dropout = 0f,
    };

    /// <summary>A model with every weight random (no zero-initialised gates), so no gradient is trivially zero.</summary>
    public static Denoiser Random(ModelConfig config, int seed = 7, IBackend? backend = null)
    {
        var m = new Denoiser(backend ?? new CpuBackend(), config);
        m.Initialize(seed, zeroInit: false);
        return m;
    }

    public static int[] Tokens(int count, int vocabWithoutMask, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => r.Next(vocabWithoutMask)).ToArray();
    }
}
