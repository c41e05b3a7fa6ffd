using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Serving;
using FastBlockDiff.Engine.Text;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// DDPM and first-hitting steps run the output head (a GEMM over the whole vocabulary) only for the rows they reveal.
/// Those logits equal the whole head's rows, and a generation draws the tokens it drew from the whole head.
/// </summary>
public class SelectiveHeadTests
{
    static ModelConfig Gpt2Sized() => TinyModels.Config(length: 32, blockSize: 4, vocab: 50258, dim: 16, layers: 1);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void HeadRowsAreTheWholeHeadsRows(bool batchInvariant)
    {
        var be = new CpuBackend { BatchInvariantGemm = batchInvariant };
        var config = Gpt2Sized();
        using var model = TinyModels.Random(config, 4, be);
        int batch = 2, len = 8, v = config.VocabSize;
        using var ws = new DenoiserWorkspace(be, config, batch, len);
        be.Upload(ws.Ids, TinyModels.Tokens(batch * len, v - 1, 6));
        be.Upload(ws.Positions, Enumerable.Range(0, batch * len).Select(i => i % len).ToArray());
        model.Forward(ws, new AttentionShape(batch, config.Heads, config.HeadDim, len, MaskKind.BlockCausal, config.BlockSize));
        var whole = CpuBackend.Span(model.Head(ws, 0, len)).ToArray();
        int[] rows = [13, 0, 6, 9];
        var some = CpuBackend.Span(model.HeadRows(ws, rows)).ToArray();
        Assert.Equal(rows.Length * v, some.Length);
        for (int k = 0; k < rows.Length; k++)
            for (int j = 0; j < v; j++)
            {
                float want = whole[rows[k] * v + j], got = some[k * v + j];
                if (batchInvariant) Assert.True(want == got, $"row {rows[k]} token {j}: {got} vs {want} (batch-invariant GEMM: the same bits)");
                else Assert.True(Math.Abs(want - got) <= 1e-5f * (1 + Math.Abs(want)), $"row {rows[k]} token {j}: {got} vs {want}");
            }
    }

    /// <summary>
    /// The request scheduler computes every row of the head and copies out the ones a step samples; the sampler alone
    /// computes only those. With the batch-invariant GEMM (the scheduler turns it on) both see the same logits, so the
    /// same seed gives the same text, over the GPT-2 vocabulary where the nucleus search runs its bracketed path.
    /// </summary>
    [Theory]
    [InlineData(SamplerKind.FirstHitting, 0.9f)]
    [InlineData(SamplerKind.Ddpm, 0.9f)]
    [InlineData(SamplerKind.Ddpm, 1f)]
    public async Task AGenerationDrawsWhatTheWholeHeadDraws(SamplerKind kind, float topP)
    {
        using var model = BlockDiffusionModel.FromDenoiser(TinyModels.Random(Gpt2Sized(), 9), TokenizerFactory.Load("gpt2"));
        using var scheduler = new RequestScheduler(model, maxBatch: 4);
        var opts = new SamplingOptions { MaxTokens = 12, Seed = 21, Kind = kind, TopP = topP, StopOnEos = false, EntropyThreshold = 0, StepsPerBlock = 3 };
        var alone = model.Sample("the", opts);
        var text = new System.Text.StringBuilder();
        await foreach (var u in scheduler.StreamAsync(new GenerationRequest("the", opts), TestContext.Current.CancellationToken)) text.Append(u.Text);
        Assert.Equal(alone.Texts[0], text.ToString());
        Assert.Equal(12, alone.Result.GeneratedTokens);
    }

    [Fact]
    public void MeasuringTheSplitChangesNoToken()
    {
        var config = TinyModels.Config(length: 16, blockSize: 4, vocab: 300, dim: 16);
        using var m = TinyModels.Random(config, 2);
        var opts = new SamplingOptions { MaxTokens = 12, Seed = 8, StopOnEos = false, EntropyThreshold = 0, BatchSize = 2 };
        var plain = new BlockSampler(m, 9, 10).Generate([1, 2], opts);
        var timed = new BlockSampler(m, 9, 10).Generate([1, 2], opts with { MeasureSplit = true });
        Assert.Equal(plain.Tokens, timed.Tokens);
        Assert.Equal(0, plain.ModelSeconds);
        Assert.True(timed.ModelSeconds > 0 && timed.SamplerSeconds > 0, $"model {timed.ModelSeconds} s, sampler {timed.SamplerSeconds} s");
        Assert.True(timed.ModelSeconds + timed.SamplerSeconds <= timed.Elapsed.TotalSeconds * 1.01 + 1e-3);
    }
}
