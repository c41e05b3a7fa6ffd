using FastBlockDiff.Engine.Model;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// The scheduler's forward pass (<see cref="Denoiser.ForwardCachedEach"/>) on the CPU backend: a request's logits
/// are the same bits whether its block runs alone or in one batch with other requests of other prompt lengths —
/// the dense layers (GEMM, LayerNorm, GELU, residuals) over all rows at once, attention per request — with the
/// batch-invariant GEMM that the scheduler turns on. Texts
/// compare only the sampled tokens; this compares every logit, so a last-bit difference cannot hide.
/// </summary>
public class BatchInvariantForwardTests
{
    static readonly ModelConfig Wide = ConcurrencyTests.ByteConfig() with { HiddenDim = 256, Heads = 4, ModelLength = 64 };

    /// <summary>One request: its own cache, first its own whole prompt blocks committed alone (as the scheduler starts it).</summary>
    sealed class Request(Denoiser net, int promptBlocks, int seed) : IDisposable
    {
        public readonly KvCache Cache = new(net.Backend, net.Config, 1, net.Config.ModelLength);
        public readonly Random Rng = new(seed);
        public readonly int PromptBlocks = promptBlocks;
        public void Dispose() => Cache.Dispose();
    }

    /// <summary>Runs one block of each request together; returns the logits [batch·L', V] (none when committing).</summary>
    static float[] Forward(Denoiser net, IReadOnlyList<Request> batch, bool commit)
    {
        var c = net.Config;
        int lb = c.BlockSize;
        using var ws = new DenoiserWorkspace(net.Backend, c, batch.Count, lb);
        var ids = new int[batch.Count * lb];
        var positions = new int[batch.Count * lb];
        for (int s = 0; s < batch.Count; s++)
        {
            var r = batch[s];
            for (int i = 0; i < lb; i++)
            {
                // a block being denoised: some masks among random tokens; a committed block: tokens only
                ids[s * lb + i] = !commit && r.Rng.Next(3) == 0 ? c.MaskId : r.Rng.Next(c.VocabSize - 1);
                positions[s * lb + i] = r.Cache.Length + i;
            }
            r.Cache.MakeRoom(lb);
        }
        net.Backend.Upload(ws.Ids, ids);
        net.Backend.Upload(ws.Positions, positions);
        net.ForwardCachedEach(ws, [.. batch.Select(r => r.Cache)], commit);
        if (commit) return [];
        var logits = new float[batch.Count * lb * c.VocabSize];
        net.Backend.Download(net.Head(ws, 0, lb), logits);
        return logits;
    }

    /// <summary>
    /// Every request's logits for <paramref name="rounds"/> rounds of (denoise a block, commit a block): each round
    /// of the requests together when <paramref name="together"/>, else each request's round alone.
    /// </summary>
    static float[][][] Run(Denoiser net, int count, int rounds, bool together)
    {
        var requests = Enumerable.Range(0, count).Select(i => new Request(net, i % 3, 1000 + i)).ToList();
        try
        {
            foreach (var r in requests)
                for (int b = 0; b < r.PromptBlocks; b++) Forward(net, [r], commit: true);
            var got = requests.Select(_ => new float[rounds][]).ToArray();
            int per = net.Config.BlockSize * net.Config.VocabSize;
            for (int round = 0; round < rounds; round++)
            {
                if (together)
                {
                    var logits = Forward(net, requests, commit: false);
                    for (int s = 0; s < count; s++) got[s][round] = logits[(s * per)..((s + 1) * per)];
                    Forward(net, requests, commit: true);
                }
                else
                    for (int s = 0; s < count; s++)
                    {
                        got[s][round] = Forward(net, [requests[s]], commit: false);
                        Forward(net, [requests[s]], commit: true);
                    }
            }
            return got;
        }
        finally { foreach (var r in requests) r.Dispose(); }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(6)]     // 24 rows: past the small-M paths
    [InlineData(16)]    // 64 rows
    public void LogitsOfARequestInABatchAreItsLogitsAlone(int count)
    {
        using var net = TinyModels.Random(Wide, seed: 3, backend: new CpuBackend { BatchInvariantGemm = true });
        var alone = Run(net, count, rounds: 3, together: false);
        var batched = Run(net, count, rounds: 3, together: true);
        for (int s = 0; s < count; s++)
            for (int round = 0; round < alone[s].Length; round++)
                for (int j = 0; j < alone[s][round].Length; j++)
                    if (BitConverter.SingleToInt32Bits(alone[s][round][j]) != BitConverter.SingleToInt32Bits(batched[s][round][j]))
                        Assert.Fail($"request {s} of {count}, round {round}: logit {j} is {batched[s][round][j]:R} in the batch, {alone[s][round][j]:R} alone");
    }
}
