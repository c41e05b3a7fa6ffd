using System.Runtime.InteropServices;

namespace FastBlockDiff.Kernels;

/// <summary>
/// A double held in two float slots of a device buffer: how <see cref="IBackend.SumTo"/> leaves a sum computed in double
/// on the device (a training step's loss and gradient Σg²) so that reading it back later gives every bit of it.
/// Slot pairs start at even offsets (8-byte aligned on a device).
/// </summary>
public static class DoubleSlots
{
    /// <summary>Float slots taken by <paramref name="count"/> doubles.</summary>
    public static int Floats(int count) => checked(2 * count);

    /// <summary>The double stored in slots [2·index, 2·index + 2) of <paramref name="floats"/>.</summary>
    public static double Read(ReadOnlySpan<float> floats, int index = 0) =>
        MemoryMarshal.Read<double>(MemoryMarshal.AsBytes(floats.Slice(2 * index, 2)));

    /// <summary>The two float slots holding <paramref name="value"/>'s bits.</summary>
    public static float[] Of(double value)
    {
        var slots = new float[2];
        MemoryMarshal.Write(MemoryMarshal.AsBytes(slots.AsSpan()), in value);
        return slots;
    }

    /// <summary>Reads the double at the start of <paramref name="slots"/> (a device view: synchronises on a device backend).</summary>
    public static double Download(IBackend backend, FloatView slots)
    {
        Span<float> two = stackalloc float[2];
        backend.Download(slots.Slice(0, 2), two);
        return Read(two);
    }
}
