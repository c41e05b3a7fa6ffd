using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

public class ModelTests
{
    static Bd3Batch NoisedBatch(ModelConfig c, int batch, int seed, float[]? rates = null)
    {
        var b = new Bd3Batch(batch, c.ModelLength, c.BlockSize);
        var clean = TinyModels.Tokens(batch * c.ModelLength, c.VocabSize - 1, seed);
        var rng = new Rng((ulong)seed);
        if (rates != null) b.NoiseWithRates(clean, rates, c.MaskId, rng);
        else b.Noise(clean, new NoiseSchedule(0.2f, 0.9f), c.MaskId, rng);
        return b;
    }

    [Fact]
    public void ModelLossGradientMatchesFiniteDifferencesForEveryParameter()
    {
        var c = TinyModels.Config(length: 8, blockSize: 2);
        var model = TinyModels.Random(c);
        var batch = NoisedBatch(c, 2, 3);
        var obj = new Bd3Objective(model);
        var be = (CpuBackend)model.Backend;
        be.Fill(model.Grads, 0);
        obj.Run(batch, backward: true);
        var grad = new float[model.Params.Count];
        be.Download(model.Grads, grad);
        var w0 = model.DownloadWeights();
        var rnd = new Random(5);
        foreach (var p in model.Params.Infos)
        {
            // directional derivative along a random direction inside this tensor
            var dir = new double[p.Length];
            for (int i = 0; i < dir.Length; i++) dir[i] = rnd.NextDouble() * 2 - 1;
            double analytic = 0;
            for (int i = 0; i < dir.Length; i++) analytic += grad[p.Offset + i] * dir[i];
            double Loss(double eps)
            {
                var w = (float[])w0.Clone();
                for (int i = 0; i < dir.Length; i++) w[p.Offset + i] += (float)(eps * dir[i]);
                model.LoadWeights(w);
                return obj.Run(batch, backward: false);
            }
            const double h = 1e-2;
            double numeric = (Loss(h) - Loss(-h)) / (2 * h);
            double scale = Math.Max(1e-3, Math.Max(Math.Abs(numeric), Math.Abs(analytic)));
            Assert.True(Math.Abs(numeric - analytic) / scale < 2e-2, $"{p.Name}: analytic {analytic:g6} vs numeric {numeric:g6}");
        }
        model.LoadWeights(w0);
    }

    [Theory]
    [InlineData(8, 1)]
    [InlineData(8, 2)]
    [InlineData(12, 4)]
    [InlineData(8, 8)]
    public void VectorisedTrainingEqualsNaiveBlockLoop(int length, int blockSize)
    {
        var c = TinyModels.Config(length, blockSize);
        var model = TinyModels.Random(c, seed: length * 10 + blockSize);
        var batch = NoisedBatch(c, 2, length + blockSize);
        var obj = new Bd3Objective(model);
        double loss = obj.Run(batch, backward: false);
        var logits = obj.LastLogits(batch);

        // naive: for each block b, run the model on clean prefix ⊕ noisy block with a block-causal mask
        var be = model.Backend;
        int v = c.VocabSize, lb = blockSize;
        double naiveLossSum = 0;
        var lossRow = be.AllocFloat(lb); var tg = be.AllocInt(lb); var wt = be.AllocFloat(lb);
        for (int s = 0; s < batch.Batch; s++)
            for (int blk = 0; blk < batch.Blocks; blk++)
            {
                int len = (blk + 1) * lb;
                var ws = new DenoiserWorkspace(be, c, 1, len);
                var ids = new int[len];
                for (int i = 0; i < blk * lb; i++) ids[i] = batch.Clean[s * length + i];
                for (int i = 0; i < lb; i++) ids[blk * lb + i] = batch.Noisy[s * length + blk * lb + i];
                be.Upload(ws.Ids, ids);
                be.Upload(ws.Positions, Enumerable.Range(0, len).ToArray());
                model.Forward(ws, new AttentionShape(1, c.Heads, c.HeadDim, len, MaskKind.BlockCausal, lb));
                var lg = model.Head(ws, blk * lb, lb);
                var host = new float[lb * v];
                be.Download(lg, host);
                for (int i = 0; i < lb * v; i++)
                {
                    float expected = host[i], actual = logits[((s * length) + blk * lb) * v + i];
                    Assert.True(Math.Abs(expected - actual) <= 1e-5 + 1e-5 * Math.Abs(expected), $"logit {i} of block {blk}: naive {expected} vs vectorised {actual}");
                }
                be.Upload(tg, batch.Clean.AsSpan(s * length + blk * lb, lb));
                be.Upload(wt, batch.Weights.AsSpan(s * length + blk * lb, lb));
                be.SubsCrossEntropy(lg, tg, wt, lossRow, lb, v, c.MaskId, 1f, false);
                naiveLossSum += be.Sum(lossRow);
            }
        double naive = naiveLossSum / (batch.Batch * length);
        Assert.True(Math.Abs(naive - loss) <= 1e-5 * Math.Max(1, Math.Abs(naive)), $"naive loss {naive} vs vectorised {loss}");
    }

    [Fact]
    public void BlockSizeOneWithMaskRateOneIsAutoregressiveNll()
    {
        var c = TinyModels.Config(length: 10, blockSize: 1);
        var model = TinyModels.Random(c, seed: 21);
        var batch = NoisedBatch(c, 1, 4, rates: Enumerable.Repeat(1f, 10).ToArray());
        Assert.All(batch.Noisy, t => Assert.Equal(c.MaskId, t));
        double loss = new Bd3Objective(model).Run(batch, backward: false);

        // AR NLL: -log p(x_i | x_<i) from a causal pass over x_<i ⊕ [MASK], computed independently in double
        var be = model.Backend;
        double nll = 0;
        for (int i = 0; i < c.ModelLength; i++)
        {
            var ws = new DenoiserWorkspace(be, c, 1, i + 1);
            var ids = batch.Clean.Take(i).Append(c.MaskId).ToArray();
            be.Upload(ws.Ids, ids);
            be.Upload(ws.Positions, Enumerable.Range(0, i + 1).ToArray());
            model.Forward(ws, new AttentionShape(1, c.Heads, c.HeadDim, i + 1, MaskKind.Causal, 1));
            var host = new float[c.VocabSize];
            be.Download(model.Head(ws, i, 1), host);
            double max = host.Where((_, j) => j != c.MaskId).Max();
            double lse = max + Math.Log(host.Select((x, j) => j == c.MaskId ? 0 : Math.Exp(x - max)).Sum());
            nll += lse - host[batch.Clean[i]];
        }
        nll /= c.ModelLength;
        Assert.True(Math.Abs(nll - loss) < 1e-5 * Math.Max(1, nll), $"AR NLL {nll} vs BD3 L'=1 loss {loss}");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void KvCachedLogitsEqualUncached(int blockSize)
    {
        var c = TinyModels.Config(length: 12, blockSize: blockSize);
        var model = TinyModels.Random(c, seed: 30 + blockSize);
        var be = model.Backend;
        int prefixBlocks = 12 / blockSize - 1, lb = blockSize, batch = 2;
        int prefixLen = prefixBlocks * lb;
        var prefix = TinyModels.Tokens(batch * prefixLen, c.VocabSize - 1, 1);
        var block = TinyModels.Tokens(batch * lb, c.VocabSize, 2); // may contain masks

        var cache = new KvCache(be, c, batch, c.ModelLength);
        var wsBlock = new DenoiserWorkspace(be, c, batch, lb);
        for (int blk = 0; blk < prefixBlocks; blk++)
        {
            var ids = new int[batch * lb];
            for (int s = 0; s < batch; s++) Array.Copy(prefix, s * prefixLen + blk * lb, ids, s * lb, lb);
            be.Upload(wsBlock.Ids, ids);
            be.Upload(wsBlock.Positions, Enumerable.Range(0, batch * lb).Select(i => blk * lb + i % lb).ToArray());
            model.ForwardCached(wsBlock, cache, commit: true);
        }
        be.Upload(wsBlock.Ids, block);
        be.Upload(wsBlock.Positions, Enumerable.Range(0, batch * lb).Select(i => prefixLen + i % lb).ToArray());
        model.ForwardCached(wsBlock, cache, commit: false);
        var cached = new float[batch * lb * c.VocabSize];
        be.Download(model.Head(wsBlock, 0, lb), cached);

        int len = prefixLen + lb;
        var wsFull = new DenoiserWorkspace(be, c, batch, len);
        var full = new int[batch * len];
        for (int s = 0; s < batch; s++)
        {
            Array.Copy(prefix, s * prefixLen, full, s * len, prefixLen);
            Array.Copy(block, s * lb, full, s * len + prefixLen, lb);
        }
        be.Upload(wsFull.Ids, full);
        be.Upload(wsFull.Positions, Enumerable.Range(0, batch * len).Select(i => i % len).ToArray());
        model.Forward(wsFull, new AttentionShape(batch, c.Heads, c.HeadDim, len, MaskKind.BlockCausal, lb));
        var uncached = new float[batch * lb * c.VocabSize];
        be.Download(model.Head(wsFull, prefixLen, lb), uncached);
        for (int i = 0; i < cached.Length; i++)
            Assert.True(Math.Abs(cached[i] - uncached[i]) <= 1e-5 + 1e-5 * Math.Abs(uncached[i]), $"logit {i}: cached {cached[i]} vs uncached {uncached[i]}");
    }
}
