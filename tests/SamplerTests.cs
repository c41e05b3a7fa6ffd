using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;

namespace FastBlockDiff.Tests;

public class SamplerTests
{
    const int Bos = 9, Eos = 10;

    static Denoiser Model(int blockSize, int seed = 3, int length = 16)
    {
        var c = TinyModels.Config(length: length, blockSize: blockSize, vocab: 13);
        return TinyModels.Random(c, seed);
    }

    /// <summary>Adds <paramref name="amount"/> to the output bias of one token so the model prefers it.</summary>
    static void Favour(Denoiser m, int token, float amount)
    {
        var w = m.DownloadWeights();
        w[m.Params["output_layer.linear.bias"].Offset + token] += amount;
        m.LoadWeights(w);
    }

    [Theory]
    [InlineData(SamplerKind.Ddpm)]
    [InlineData(SamplerKind.FirstHitting)]
    [InlineData(SamplerKind.Confidence)]
    public void SamplingIsReproducibleFromSeed(SamplerKind kind)
    {
        var m = Model(4);
        var opts = new SamplingOptions { MaxTokens = 12, Seed = 42, Kind = kind, StopOnEos = false, EntropyThreshold = 0, BatchSize = 2, TopP = 0.9f };
        var a = new BlockSampler(m, Bos, Eos).Generate([1, 2, 3], opts);
        var b = new BlockSampler(m, Bos, Eos).Generate([1, 2, 3], opts);
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.Equal(a.Nfe, b.Nfe);
        var other = new BlockSampler(m, Bos, Eos).Generate([1, 2, 3], opts with { Seed = 43 });
        Assert.NotEqual(a.Tokens.SelectMany(t => t), other.Tokens.SelectMany(t => t));
        Assert.All(a.Tokens, t => Assert.Equal(12, t.Length));
        Assert.All(a.Tokens.SelectMany(t => t), t => Assert.NotEqual(m.Config.MaskId, t));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void KvCachedSamplingEqualsUncachedWithinTheWindow(int blockSize)
    {
        var m = Model(blockSize, seed: 11);
        var opts = new SamplingOptions { MaxTokens = 10, Seed = 5, StopOnEos = false, EntropyThreshold = 0 };
        var cached = new BlockSampler(m, Bos, Eos).Generate([4, 5], opts);
        var uncached = new BlockSampler(m, Bos, Eos).Generate([4, 5], opts with { UseKvCache = false });
        Assert.Equal(cached.Tokens, uncached.Tokens);
        Assert.Equal(cached.Nfe, uncached.Nfe);
    }

    [Fact]
    public void StopsAtEos()
    {
        var m = Model(4);
        Favour(m, Eos, 50f);
        var r = new BlockSampler(m, Bos, Eos).Generate([1], new SamplingOptions { MaxTokens = 100, Seed = 1 });
        Assert.Equal(StopReason.Eos, r.Reasons[0]);
        Assert.Equal(Eos, r.Tokens[0][^1]);
        Assert.Single(r.Tokens[0], Eos);
        Assert.True(r.Tokens[0].Length <= 4, $"generated {r.Tokens[0].Length} tokens after the EOS block");
    }

    [Fact]
    public void StopsAtMaxTokensInsideABlock()
    {
        var m = Model(4);
        var r = new BlockSampler(m, Bos, Eos).Generate([1, 2], new SamplingOptions { MaxTokens = 7, Seed = 1, StopOnEos = false, EntropyThreshold = 0 });
        Assert.Equal(StopReason.MaxTokens, r.Reasons[0]);
        Assert.Equal(7, r.Tokens[0].Length);
    }

    [Fact]
    public void VariableLengthCutsTheLowEntropyWindowAndGoesBeyondTheTrainedLength()
    {
        var m = Model(2, length: 8);
        Favour(m, 3, 50f);
        var r = new BlockSampler(m, Bos, Eos).Generate([], new SamplingOptions { MaxTokens = 200, Seed = 1, EntropyThreshold = 0.5f, EntropyWindow = 20 });
        Assert.Equal(StopReason.LowEntropy, r.Reasons[0]);
        // BOS + 20 or 21 generated tokens reach the window; the window of 20 is cut off (the reference's x[:, :-256])
        Assert.InRange(r.Tokens[0].Length, 0, 1);
        Assert.InRange(r.GeneratedTokens, 20, 21);

        var longRun = new BlockSampler(Model(2, length: 8), Bos, Eos).Generate([], new SamplingOptions { MaxTokens = 30, Seed = 2, StopOnEos = false, EntropyThreshold = 0 });
        Assert.Equal(30, longRun.Tokens[0].Length); // well past L = 8: the cache slides
    }

    [Fact]
    public void FixedLengthIgnoresEosAndRegeneratesLowEntropySamples()
    {
        var m = Model(4);
        Favour(m, Eos, 50f);
        var r = new BlockSampler(m, Bos, Eos).Generate([1], new SamplingOptions { MaxTokens = 12, Seed = 1, StopOnEos = false, EntropyThreshold = 0 });
        Assert.Equal(StopReason.MaxTokens, r.Reasons[0]);
        Assert.Equal(12, r.Tokens[0].Length);
        Assert.True(r.Tokens[0].Count(t => t == Eos) > 1, "EOS does not stop a fixed-length sample");

        // every draw falls to low entropy: the sample is discarded and drawn again, 1 + MaxRegenerations times in all
        var low = new BlockSampler(m, Bos, Eos);
        var streamed = new List<int[]>();
        var once = low.Generate([], new SamplingOptions { MaxTokens = 40, Seed = 1, StopOnEos = false, EntropyThreshold = 0.5f, EntropyWindow = 8, MaxRegenerations = 0 });
        var r3 = low.Generate([], new SamplingOptions { MaxTokens = 40, Seed = 1, StopOnEos = false, EntropyThreshold = 0.5f, EntropyWindow = 8, MaxRegenerations = 2 },
            (s, block) => streamed.Add(block));
        Assert.Equal(StopReason.LowEntropy, r3.Reasons[0]);
        Assert.True(r3.Nfe > 2 * once.Nfe, $"{r3.Nfe} NFEs for three attempts vs {once.Nfe} for one");
        Assert.Single(streamed);                                   // only the final sample reaches the consumer
        Assert.Equal(r3.Tokens[0], streamed[0]);
        Assert.True(r3.Tokens[0].Length >= 8, "a fixed-length sample is not cut");
    }

    [Fact]
    public void FirstHittingRevealsExactlyOneTokenPerStep()
    {
        var m = Model(4);
        // no prompt remainder: block 0 holds BOS and 3 masks, every later block 4 masks. One token per step means one
        // denoiser call per masked position (a step that revealed nothing would reuse logits; two would save a call).
        var r = new BlockSampler(m, Bos, Eos).Generate([], new SamplingOptions { MaxTokens = 11, Seed = 9, StopOnEos = false, EntropyThreshold = 0, StepsPerBlock = 64 });
        Assert.Equal(SamplerKind.FirstHitting, new SamplingOptions().Kind);
        Assert.Equal(3 + 4 + 4, r.Nfe);
        var ddpm = new BlockSampler(m, Bos, Eos).Generate([], new SamplingOptions { MaxTokens = 11, Seed = 9, StopOnEos = false, EntropyThreshold = 0, Kind = SamplerKind.Ddpm, StepsPerBlock = 2 });
        Assert.True(ddpm.Nfe <= 3 * 2, $"DDPM with T = 2 calls the denoiser at most twice per block, got {ddpm.Nfe}");
    }

    [Fact]
    public void StepSkippingSavesNfes()
    {
        var m = Model(4);
        // many more steps than tokens: most DDPM steps reveal nothing and reuse the previous logits
        var r = new BlockSampler(m, Bos, Eos).Generate([], new SamplingOptions { MaxTokens = 8, Seed = 3, StepsPerBlock = 64, StopOnEos = false, EntropyThreshold = 0, Kind = SamplerKind.Ddpm });
        int blocks = 3; // BOS + 8 tokens → blocks [BOS,x,x,x], [x×4], [x…]
        Assert.True(r.Nfe <= blocks * 4, $"{r.Nfe} NFEs for {blocks} blocks of 4 tokens with 64 steps");
        Assert.True(r.Nfe >= blocks);
    }
}
