using System.Diagnostics;
using FastBlockDiff.Engine.Checkpoints;
using FastBlockDiff.Engine.Experiments;
using FastBlockDiff.Engine.Text;

namespace FastBlockDiff.Tests;

/// <summary>Generative perplexity as bd3lms's metrics.py: per-sample perplexity averaged over samples, EOS targets left out.</summary>
public sealed class GenerativePerplexityTests
{
    [Fact]
    public void Mean_of_per_sample_perplexities_differs_from_the_pooled_one()
    {
        // sample A: 10 tokens at 1 nat each → PPL e; sample B: 2 tokens at 3 nats each → PPL e³
        var g = GenerativePerplexity.FromScores([new SampleScore(10, 10), new SampleScore(6, 2)]);
        Assert.Equal(2, g.Samples);
        Assert.Equal((Math.E + Math.Exp(3)) / 2, g.Mean, 9);             // ≈ 11.40
        Assert.Equal(Math.Exp(16.0 / 12), g.Pooled, 9);                   // ≈ 3.79
        Assert.Equal(Math.Abs(Math.E - Math.Exp(3)) / Math.Sqrt(2), g.Std, 9);
        // a sample with no scored token (EOS only) is left out instead of dividing by zero
        var h = GenerativePerplexity.FromScores([new SampleScore(10, 10), new SampleScore(0, 0)]);
        Assert.Equal(1, h.Samples);
        Assert.Equal(Math.E, h.Mean, 9);
        Assert.Equal(0, GenerativePerplexity.FromScores([new SampleScore(0, 0)]).Samples);
    }

    [Fact]
    public void Scorer_leaves_EOS_targets_out_of_each_sample()
    {
        var config = TinyModels.Config(length: 8, blockSize: 1);
        using var model = TinyModels.Random(config);
        int bos = 10, eos = 10, pad = 11;
        var scorer = new ArScorer(model, bos, pad, batchSize: 2);
        int[] withEos = [3, 4, eos, 5, eos], plain = [3, 4, 6, 5];
        var all = scorer.ScoreEach([withEos, plain]);
        var excluded = scorer.ScoreEach([withEos, plain], excludeTarget: eos);
        Assert.Equal(5, all[0].Tokens);
        Assert.Equal(3, excluded[0].Tokens);
        Assert.Equal(4, excluded[1].Tokens);    // a sample without EOS is scored whole
        Assert.Equal(all[1].Nll, excluded[1].Nll, 9);
        Assert.True(excluded[0].Nll > 0 && excluded[0].Nll < all[0].Nll);
        // the excluded NLL is the sum of the non-EOS positions' NLLs: the prefix [3, 4] scores the same either way,
        // and the EOS positions add what the difference says
        var prefix = scorer.ScoreEach([[3, 4]])[0];
        var upToFirstEos = scorer.ScoreEach([[3, 4, eos]])[0];
        var upToFive = scorer.ScoreEach([[3, 4, eos, 5]])[0];
        double five = upToFive.Nll - upToFirstEos.Nll;
        Assert.Equal(prefix.Nll + five, excluded[0].Nll, 4);
        // per-sample scores add up to the pooled Score
        var (nll, n) = scorer.Score([withEos, plain]);
        Assert.Equal(all[0].Nll + all[1].Nll, nll, 4);
        Assert.Equal(9, n);
    }

    [Fact]
    public void Eval_gen_ppl_scores_a_sample_file_with_an_L1_checkpoint()
    {
        string dir = Directory.CreateTempSubdirectory("fbd-genppl-").FullName;
        try
        {
            // a random byte-level L' = 1 model saved as a checkpoint, and a JSONL file of three samples
            var tok = TokenizerFactory.Load("byte");
            var config = TinyModels.Config(length: 16, blockSize: 1, vocab: tok.ModelVocabSize) with { MaskId = tok.MaskId, Tokenizer = "byte" };
            using var model = TinyModels.Random(config);
            string ckpt = Path.Combine(dir, "ar");
            ModelCheckpoint.Save(ckpt, config, model.Params, model.DownloadWeights());
            string[] texts = ["the cat sat", "on a mat and then some more words than fit one window", "x"];
            string samples = Path.Combine(dir, "samples.jsonl");
            File.WriteAllLines(samples, texts.Select(t => System.Text.Json.JsonSerializer.Serialize(new { text = t })));

            var psi = CliLauncher.StartInfo();
            foreach (var a in new[] { "eval", "--gen-ppl", "--scorer", ckpt, "--samples", samples, "--backend", "cpu" }) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, err);

            var expected = GenerativePerplexity.FromScores(new ArScorer(model, tok.BosId, tok.PadId ?? tok.EosId, 8).ScoreEach([.. texts.Select(tok.Encode)], tok.EosId));
            Assert.Equal(3, expected.Samples);
            Assert.Contains($"generative perplexity {expected.Mean:F3} ± {expected.Std:F3} (mean ± std over 3 samples, EOS excluded); pooled {expected.Pooled:F3}", stdout.Result);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
