namespace FastBlockDiff.Kernels;

/// <summary>Storage owned by one backend. Engine code never looks inside; it passes views to backend ops.</summary>
public abstract class DeviceStorage : IDisposable
{
    public abstract int Length { get; }
    /// <summary>True once Dispose ran (tests count live buffers with it).</summary>
    public bool IsDisposed { get; private set; }
    public virtual void Dispose() { IsDisposed = true; GC.SuppressFinalize(this); }
}

/// <summary>A contiguous range of float elements in backend storage.</summary>
public readonly record struct FloatView(DeviceStorage Storage, int Offset, int Length)
{
    public FloatView Slice(int offset, int length)
    {
        if ((uint)offset > (uint)Length || (uint)length > (uint)(Length - offset))
            throw new ArgumentOutOfRangeException(nameof(offset), $"slice [{offset}, {offset + length}) outside a view of {Length}");
        return new FloatView(Storage, Offset + offset, length);
    }
    public FloatView Slice(int offset) => Slice(offset, Length - offset);
}

/// <summary>A contiguous range of int32 elements in backend storage.</summary>
public readonly record struct IntView(DeviceStorage Storage, int Offset, int Length)
{
    public IntView Slice(int offset, int length)
    {
        if ((uint)offset > (uint)Length || (uint)length > (uint)(Length - offset))
            throw new ArgumentOutOfRangeException(nameof(offset), $"slice [{offset}, {offset + length}) outside a view of {Length}");
        return new IntView(Storage, Offset + offset, length);
    }
}
