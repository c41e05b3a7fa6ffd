using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Model;

/// <summary>One named tensor inside the flat parameter buffer.</summary>
public sealed record ParameterInfo(string Name, int[] Shape, int Offset, int Length, bool IsWeightMatrix);

/// <summary>
/// All parameters of a model live in one flat device buffer (and gradients in a twin), so that AdamW, EMA,
/// gradient norm and checkpoints are single calls. Names are the bd3lms keys without the "backbone." prefix.
/// </summary>
public sealed class ParameterSet
{
    readonly List<ParameterInfo> _infos = [];
    readonly Dictionary<string, ParameterInfo> _byName = [];
    public int Count { get; private set; }
    public IReadOnlyList<ParameterInfo> Infos => _infos;

    public ParameterInfo Add(string name, params int[] shape)
    {
        int length = shape.Aggregate(1, (a, b) => checked(a * b));
        var info = new ParameterInfo(name, shape, Count, length, shape.Length == 2);
        _infos.Add(info);
        _byName[name] = info;
        Count = checked(Count + length);
        return info;
    }

    public ParameterInfo this[string name] => _byName.TryGetValue(name, out var p) ? p
        : throw new KeyNotFoundException($"no parameter '{name}'");
    public bool Contains(string name) => _byName.ContainsKey(name);

    public static FloatView View(FloatView flat, ParameterInfo p) => flat.Slice(p.Offset, p.Length);
}
