using System.Globalization;
using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Engine.Checkpoints;

/// <summary>
/// training_state.safetensors beside the model files: raw weights, Adam moments, EMA, RNG and data position,
/// step and current schedule, and the loss log — what `train --resume` needs to continue the same trajectory.
/// Published together with the model files (<see cref="CheckpointSet"/>); every field is checked at load.
/// </summary>
public static class TrainingCheckpoint
{
    public const string StateFile = "training_state.safetensors";

    /// <summary>Whether <paramref name="dir"/> holds a training state that belongs to its checkpoint set.</summary>
    public static bool Exists(string dir) => Directory.Exists(dir) && CheckpointSet.Contains(dir, StateFile);

    /// <summary>The state file, for publishing with the model files; refuses NaN/Inf anywhere in the state.</summary>
    public static CheckpointFile File(TrainingState s)
    {
        const string advice = "nothing was written; lower --lr (or raise --warmup), check --ema, and train again from the last checkpoint";
        string at = $"training state of step {s.Step}:";
        NonFiniteValues.Refuse(s.Weights, $"{at} the weights", advice);
        NonFiniteValues.Refuse(s.M, $"{at} the Adam first moment", advice);
        NonFiniteValues.Refuse(s.V, $"{at} the Adam second moment", advice);
        NonFiniteValues.Refuse(s.Ema, $"{at} the EMA weights", advice);
        foreach (var (step, loss) in s.LossLog)
            if (!double.IsFinite(loss)) throw new UserInputException($"{at} the loss of step {step} is {loss}; {advice}");
        int n = s.Weights.Length;
        var tensors = new List<SafetensorsTensorData>
        {
            SafetensorsTensorData.F32("weights", [n], s.Weights),
            SafetensorsTensorData.F32("adam_m", [n], s.M),
            SafetensorsTensorData.F32("adam_v", [n], s.V),
            SafetensorsTensorData.F32("ema", [n], s.Ema),
            SafetensorsTensorData.I64("rng", [s.Rng.Length], s.Rng.Select(u => unchecked((long)u)).ToArray()),
            SafetensorsTensorData.I64("data_position", [s.Data.Length], s.Data),
            SafetensorsTensorData.I64("loss_log_step", [s.LossLog.Count], s.LossLog.Select(l => (long)l.Step).ToArray()),
            SafetensorsTensorData.F32("loss_log", [s.LossLog.Count], s.LossLog.Select(l => (float)l.Loss).ToArray()),
        };
        var meta = new Dictionary<string, string>
        {
            ["step"] = s.Step.ToString(CultureInfo.InvariantCulture),
            ["schedule_min"] = s.ScheduleMin.ToString("R", CultureInfo.InvariantCulture),
            ["schedule_max"] = s.ScheduleMax.ToString("R", CultureInfo.InvariantCulture),
        };
        return new CheckpointFile(StateFile, SafetensorsFile.Writer(StateFile, tensors, meta));
    }

    /// <summary>
    /// Reads and checks the training state of <paramref name="dir"/>: metadata, tensor lengths, RNG words, loss log,
    /// and (unless <paramref name="allowNonFinite"/>) that weights, moments and EMA are finite.
    /// </summary>
    public static TrainingState Load(string dir, bool allowNonFinite = false)
    {
        var (handle, path) = CheckpointSet.Open(dir, StateFile) ?? throw new UserInputException($"'{dir}' has no {StateFile} to resume from");
        using var f = SafetensorsFile.Read(path, handle);
        string Meta(string key) => f.Metadata.TryGetValue(key, out var v) ? v : throw new UserInputException($"{path}: metadata '{key}' missing");
        UserInputException Bad(string what) => new($"{path}: {what}; the training state is corrupt (train again without --resume, or from an intact copy)");

        if (!int.TryParse(Meta("step"), NumberStyles.None, CultureInfo.InvariantCulture, out int step))
            throw Bad($"metadata 'step' is \"{Meta("step")}\", not a non-negative integer");
        float Schedule(string key) => float.TryParse(Meta(key), NumberStyles.Float, CultureInfo.InvariantCulture, out float x) && float.IsFinite(x) ? x
            : throw Bad($"metadata '{key}' is \"{Meta(key)}\", not a finite number");
        float min = Schedule("schedule_min"), max = Schedule("schedule_max");
        try { new NoiseSchedule(min, max).Validate(); }
        catch (UserInputException e) { throw Bad($"metadata schedule_min/schedule_max: {e.Message}"); }

        var rng = f.ReadInt64("rng");
        if (rng.Length != 4 || rng.All(w => w == 0)) throw Bad($"tensor 'rng' must hold 4 words, not all zero, holds {rng.Length}");
        var data = f.ReadInt64("data_position");
        if (data.Length != 3) throw Bad($"tensor 'data_position' must hold 3 values, holds {data.Length}");

        var logSteps = f.ReadInt64("loss_log_step");
        var losses = f.ReadFloat32("loss_log");
        if (logSteps.Length != losses.Length)
            throw Bad($"the loss log has {logSteps.Length} steps but {losses.Length} losses");
        if (logSteps.Length != step)
            throw Bad($"the loss log holds {logSteps.Length} entries but the state is at step {step}");
        for (int i = 0; i < logSteps.Length; i++)
        {
            if (logSteps[i] != i + 1) throw Bad($"loss log entry {i} is for step {logSteps[i]}, expected {i + 1}");
            if (!allowNonFinite && !float.IsFinite(losses[i])) throw Bad($"the loss of step {i + 1} is {losses[i]}");
        }

        long n = f["weights"].ElementCount;
        foreach (var name in new[] { "weights", "adam_m", "adam_v", "ema" })
            if (f[name].ElementCount != n || f[name].Shape.Length != 1)
                throw Bad($"tensor '{name}' has shape [{string.Join(",", f[name].Shape)}]; weights, adam_m, adam_v and ema must all be [{n}]");
        float[] Tensor(string name)
        {
            var x = f.ReadFloat32(name);
            if (!allowNonFinite) NonFiniteValues.Refuse(x, $"{path}: tensor '{name}'", ModelCheckpoint.AllowNonFiniteAdvice);
            return x;
        }
        var v = Tensor("adam_v");
        for (int i = 0; i < v.Length; i++)
            if (v[i] < 0) throw Bad($"tensor 'adam_v' holds the negative second moment {v[i]} at index {i}");
        return new TrainingState
        {
            Step = step, ScheduleMin = min, ScheduleMax = max,
            Weights = Tensor("weights"), M = Tensor("adam_m"), V = v, Ema = Tensor("ema"),
            Rng = rng.Select(l => unchecked((ulong)l)).ToArray(),
            Data = data,
            LossLog = logSteps.Zip(losses, (st, l) => ((int)st, (double)l)).ToList(),
        };
    }
}
