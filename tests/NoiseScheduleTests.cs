using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Tests;

/// <summary>The reference's noise schedules (bd3lms noise_schedule.py): α_t, its derivative and the NELBO weight.</summary>
public sealed class NoiseScheduleTests
{
    static readonly NoiseKind[] Kinds = Enum.GetValues<NoiseKind>();

    sealed class ListBatchSource(List<int[]> rows) : IBatchSource
    {
        long next;
        public int SequenceLength => rows[0].Length;
        public void Next(Span<int> dst, int batch)
        {
            for (int i = 0; i < batch; i++) rows[(int)(next++ % rows.Count)].CopyTo(dst[(i * SequenceLength)..]);
        }
        public long[] SaveState() => [next];
        public void RestoreState(long[] state) => next = state[0];
    }

    /// <summary>The reference's (move_chance, loss_scaling) written out from noise_schedule.py, ε = 1e-3.</summary>
    static (double Move, double LossScaling) Reference(NoiseKind kind, double t)
    {
        const double eps = 1e-3;
        switch (kind)
        {
            case NoiseKind.Linear: return (t, -1 / t);
            case NoiseKind.Square:
            case NoiseKind.SquareRoot:
            {
                double exp = kind == NoiseKind.Square ? 2 : 0.5;
                double move = Math.Max(Math.Pow(t, exp), eps);
                return (move, -(exp * Math.Pow(t, exp - 1)) / move);
            }
            case NoiseKind.Log:
            {
                double move = Math.Log(1 + t) / Math.Log(2.0);
                return (move, -1 / (move * Math.Log(2.0) * (1 + t)));
            }
            default:
            {
                double cos = -(1 - eps) * Math.Cos(t * Math.PI / 2), sin = -(1 - eps) * Math.Sin(t * Math.PI / 2);
                double move = cos + 1;
                return (move, sin / (move + eps) * Math.PI / 2);
            }
        }
    }

    [Theory]
    [InlineData(0.05), InlineData(0.2), InlineData(0.5), InlineData(0.77), InlineData(0.999)]
    public void Mask_probability_and_weight_equal_the_reference_formulas(double t)
    {
        foreach (var kind in Kinds)
        {
            var (move, scaling) = Reference(kind, t);
            Assert.Equal(move, NoiseSchedule.MaskProbability(kind, t), 12);
            // the NELBO weight −α'_t/(1 − α_t) is the reference's −loss_scaling
            Assert.Equal(-scaling, NoiseSchedule.Weight(kind, t), 9);
            var s = new NoiseSchedule(0f, 1f, kind);
            Assert.Equal((float)move, s.MaskProbability((float)t), 5);
            Assert.Equal((float)-scaling, s.Weight((float)t), 2e-4f * (float)Math.Abs(scaling));
        }
    }

    [Fact]
    public void Derivative_matches_finite_differences_and_the_weight_is_its_ratio()
    {
        foreach (var kind in Kinds)
            foreach (double t in new[] { 0.1, 0.3, 0.5, 0.7, 0.9 })
            {
                const double h = 1e-6;
                double fd = (NoiseSchedule.MaskProbability(kind, t + h) - NoiseSchedule.MaskProbability(kind, t - h)) / (2 * h);
                double rate = NoiseSchedule.MaskProbabilityRate(kind, t);
                Assert.True(Math.Abs(fd - rate) < 1e-6 * Math.Max(1, Math.Abs(rate)), $"{kind} at t={t}: d(1-α)/dt {rate} vs finite difference {fd}");
                // α'_t / (1 − α_t) with α = 1 − move: the cosine keeps the reference's + ε in the denominator
                double denominator = NoiseSchedule.MaskProbability(kind, t) + (kind == NoiseKind.Cosine ? 1e-3 : 0);
                Assert.Equal(rate / denominator, NoiseSchedule.Weight(kind, t), 12);
            }
    }

    [Fact]
    public void Schedules_are_distinct_and_end_fully_masked()
    {
        foreach (var kind in Kinds)
        {
            Assert.Equal(1.0, NoiseSchedule.MaskProbability(kind, 1.0), 12);
            // monotone in t
            double last = -1;
            for (int i = 1; i <= 100; i++)
            {
                double m = NoiseSchedule.MaskProbability(kind, i / 100.0);
                Assert.True(m >= last, $"{kind} decreases at t={i / 100.0}");
                last = m;
            }
        }
        // at t = 0.5: linear 0.5, square 0.25, sqrt 0.707, log 0.585, cosine 0.294
        var mid = Kinds.Select(k => Math.Round(NoiseSchedule.MaskProbability(k, 0.5), 3)).ToArray();
        Assert.Equal([0.5, 0.25, 0.707, 0.585, 0.294], mid);
        // the clamp of square and square-root at ε
        Assert.Equal(1e-3, NoiseSchedule.MaskProbability(NoiseKind.Square, 0.01), 12);
    }

    [Fact]
    public void Names_parse_the_option_and_the_reference_noise_type()
    {
        foreach (var kind in Kinds)
        {
            Assert.Equal(kind, NoiseSchedule.Parse(NoiseSchedule.Name(kind)));
            Assert.Equal(kind, NoiseSchedule.Parse(NoiseSchedule.ReferenceName(kind)));
        }
        var e = Assert.Throws<UserInputException>(() => NoiseSchedule.Parse("quadratic"));
        Assert.Contains("--noise-schedule", e.Message);
        Assert.Contains("quadratic", e.Message);
    }

    [Fact]
    public void Batch_masks_with_the_schedule_probability_and_weighs_with_its_weight()
    {
        // many blocks at one fixed time: the masked share is 1 − α_t and every masked token weighs the schedule's weight
        foreach (var kind in Kinds)
        {
            var schedule = new NoiseSchedule(0.4f, 0.4000001f, kind);
            var batch = new Bd3Batch(64, 256, 4);
            var clean = TinyModels.Tokens(64 * 256, 10, 3);
            batch.Noise(clean, schedule, 12, new Rng(5), ignoreBos: false);
            int masked = batch.Noisy.Count(x => x == 12);
            double share = (double)masked / batch.Noisy.Length;
            double expected = NoiseSchedule.MaskProbability(kind, 0.4);
            Assert.True(Math.Abs(share - expected) < 0.01, $"{kind}: masked share {share:F4}, expected {expected:F4}");
            float w = (float)NoiseSchedule.Weight(kind, 0.4);
            for (int i = 0; i < batch.Noisy.Length; i++)
                Assert.Equal(batch.Noisy[i] == 12 ? w : 0f, batch.Weights[i], 1e-3f * w);
        }
    }

    [Fact]
    public void Config_json_stores_the_schedule_and_a_trainer_keeps_it_when_the_range_changes()
    {
        var config = TinyModels.Config() with { Noise = NoiseKind.Cosine };
        var json = config.ToJson();
        Assert.Contains("\"noise_type\": \"cosine\"", json);
        Assert.Equal(NoiseKind.Cosine, ModelConfig.FromJson(json, "config.json").Noise);
        Assert.Equal(NoiseKind.SquareRoot, ModelConfig.FromJson(json.Replace("\"cosine\"", "\"square_root\""), "config.json").Noise);
        // a bd3lms config without the key is the reference's default, loglinear
        Assert.Equal(NoiseKind.Linear, ModelConfig.FromJson(json.Replace("\"noise_type\": \"cosine\",", ""), "config.json").Noise);
        var e = Assert.Throws<UserInputException>(() => ModelConfig.FromJson(json.Replace("\"cosine\"", "\"spline\""), "ckpt/config.json"));
        Assert.Contains("ckpt/config.json", e.Message);
        Assert.Contains("spline", e.Message);

        using var model = TinyModels.Random(config);
        var rows = Enumerable.Range(0, 4).Select(i => TinyModels.Tokens(8, 10, i)).ToList();
        using var trainer = new Trainer(model, new TrainOptions { Steps = 2, BatchSize = 2 }, new ListBatchSource(rows));
        Assert.Equal(NoiseKind.Cosine, trainer.Schedule.Kind);
        trainer.Schedule = new NoiseSchedule(0.3f, 0.8f);   // what the search sets
        Assert.Equal(new NoiseSchedule(0.3f, 0.8f, NoiseKind.Cosine), trainer.Schedule);
    }

    [Fact]
    public void Evaluation_follows_the_checkpoint_schedule()
    {
        // the same weights scored under two schedules give different NELBOs; the default is the model's own
        var rows = Enumerable.Range(0, 4).Select(i => TinyModels.Tokens(8, 10, i)).ToList();
        using var linearModel = TinyModels.Random(TinyModels.Config());
        using var cosineModel = TinyModels.Random(TinyModels.Config() with { Noise = NoiseKind.Cosine });
        using var a = new Evaluator(linearModel);
        using var b = new Evaluator(cosineModel);
        double linear = a.Evaluate(rows, 2).Nelbo, cosine = b.Evaluate(rows, 2).Nelbo;
        Assert.NotEqual(linear, cosine, 6);
        Assert.Equal(cosine, a.Evaluate(rows, 2, NoiseSchedule.EvalWith(NoiseKind.Cosine)).Nelbo, 9);
    }
}
