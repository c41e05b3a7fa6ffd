using System.Globalization;
using FastBlockDiff.Engine.Formats;
using FastBlockDiff.Engine.Training;

namespace FastBlockDiff.Engine.Checkpoints;

/// <summary>
/// training_state.safetensors beside the model files: raw weights, Adam moments, EMA, RNG and data position,
/// step and current schedule, and the loss log — what `train --resume` needs to continue the same trajectory.
/// </summary>
public static class TrainingCheckpoint
{
    public const string StateFile = "training_state.safetensors";

    public static bool Exists(string dir) => File.Exists(Path.Combine(dir, StateFile));

    public static void Save(string dir, TrainingState s)
    {
        Directory.CreateDirectory(dir);
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
        SafetensorsFile.Write(Path.Combine(dir, StateFile), tensors, meta);
    }

    public static TrainingState Load(string dir)
    {
        string path = Path.Combine(dir, StateFile);
        if (!File.Exists(path)) throw new UserInputException($"'{dir}' has no {StateFile} to resume from");
        using var f = SafetensorsFile.Read(path);
        string Meta(string key) => f.Metadata.TryGetValue(key, out var v) ? v : throw new UserInputException($"{path}: metadata '{key}' missing");
        var steps = f.ReadInt64("loss_log_step");
        var losses = f.ReadFloat32("loss_log");
        return new TrainingState
        {
            Step = int.Parse(Meta("step"), CultureInfo.InvariantCulture),
            ScheduleMin = float.Parse(Meta("schedule_min"), CultureInfo.InvariantCulture),
            ScheduleMax = float.Parse(Meta("schedule_max"), CultureInfo.InvariantCulture),
            Weights = f.ReadFloat32("weights"), M = f.ReadFloat32("adam_m"), V = f.ReadFloat32("adam_v"), Ema = f.ReadFloat32("ema"),
            Rng = f.ReadInt64("rng").Select(l => unchecked((ulong)l)).ToArray(),
            Data = f.ReadInt64("data_position"),
            LossLog = steps.Zip(losses, (st, l) => ((int)st, (double)l)).ToList(),
        };
    }
}
