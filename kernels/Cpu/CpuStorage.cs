namespace FastBlockDiff.Kernels.Cpu;

/// <summary>Managed array storage of the CPU backend.</summary>
public sealed class CpuStorage<T>(int length) : DeviceStorage where T : unmanaged
{
    public readonly T[] Data = new T[length];
    public override int Length => Data.Length;
}
