using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Engine.Experiments;

/// <summary>
/// Generative perplexity: scores token sequences with an autoregressive model of this engine (L' = 1), the
/// stand-in for GPT-2 Large. The NLL is the L' = 1, t = 1 objective, which is exact for that model: every
/// position is masked and sees only the clean tokens before it. A sequence is scored as BOS ⊕ tokens; longer
/// ones than L are scored in windows of L with half a window of context.
/// </summary>
public sealed class ArScorer
{
    readonly Denoiser _model;
    readonly Bd3Objective _objective;
    readonly int _bos, _pad;
    readonly int _batch;

    public ArScorer(Denoiser arModel, int bosId, int padId, int batchSize = 8)
    {
        if (arModel.Config.BlockSize != 1) throw new UserInputException($"the AR scorer needs a model with L' = 1, got L' = {arModel.Config.BlockSize}");
        _model = arModel; _objective = new Bd3Objective(arModel); _bos = bosId; _pad = padId; _batch = Math.Max(1, batchSize);
    }

    /// <summary>Total NLL (nats) of every sample's tokens given BOS and the tokens before them, and how many tokens were scored.</summary>
    public (double Nll, long Tokens) Score(IReadOnlyList<int[]> samples)
    {
        var each = ScoreEach(samples);
        return (each.Sum(e => e.Nll), each.Sum(e => e.Tokens));
    }

    /// <summary>
    /// The NLL and scored-token count of each sample separately. With <paramref name="excludeTarget"/> (the
    /// reference's EOS) a position whose token is that id is not scored, as bd3lms's generative perplexity does.
    /// </summary>
    public IReadOnlyList<SampleScore> ScoreEach(IReadOnlyList<int[]> samples, int? excludeTarget = null)
    {
        int len = _model.Config.ModelLength, ctx = len / 2;
        // windows: (sample, ids, first scored position inside the window, end of the scored positions)
        var windows = new List<(int Sample, int[] Ids, int From, int To)>();
        for (int k = 0; k < samples.Count; k++)
        {
            var sample = samples[k];
            var seq = new int[sample.Length + 1];
            seq[0] = _bos;
            sample.CopyTo(seq, 1);
            int pos = 1;   // next position to score
            while (pos < seq.Length)
            {
                int start = pos == 1 ? 0 : pos - ctx;
                int end = Math.Min(seq.Length, start + len);
                var ids = new int[len];
                Array.Fill(ids, _pad);
                seq.AsSpan(start, end - start).CopyTo(ids);
                windows.Add((k, ids, pos - start, end - start));
                pos = end;
            }
        }
        var nll = new double[samples.Count];
        var tokens = new long[samples.Count];
        var rates = new float[0];
        for (int w0 = 0; w0 < windows.Count; w0 += _batch)
        {
            int b = Math.Min(_batch, windows.Count - w0);
            var batch = new Bd3Batch(b, len, 1);
            var flat = new int[b * len];
            for (int i = 0; i < b; i++) windows[w0 + i].Ids.CopyTo(flat, i * len);
            if (rates.Length != b * len) { rates = new float[b * len]; Array.Fill(rates, 1f); }
            batch.NoiseWithRates(flat, rates, _model.Config.MaskId, new Rng(0));
            for (int i = 0; i < b; i++)
            {
                var (k, ids, from, to) = windows[w0 + i];
                for (int p = 0; p < len; p++)
                {
                    bool scored = p >= from && p < to && ids[p] != excludeTarget;
                    if (!scored) batch.Weights[i * len + p] = 0f;
                    else tokens[k]++;
                }
            }
            _objective.Run(batch, backward: false);
            var loss = _objective.TokenLosses();
            for (int i = 0; i < b; i++)
            {
                double sum = 0;
                for (int p = 0; p < len; p++) sum += loss[i * len + p];
                nll[windows[w0 + i].Sample] += sum;
            }
        }
        return [.. Enumerable.Range(0, samples.Count).Select(k => new SampleScore(nll[k], tokens[k]))];
    }
}

/// <summary>One sample's NLL (nats) under the scorer and the number of tokens scored.</summary>
public readonly record struct SampleScore(double Nll, long Tokens)
{
    public double Perplexity => Math.Exp(Nll / Tokens);
}
