namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    // Tiled online-softmax attention; the kernels live in CpuAttention.cs.
    public void AttentionForward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse)
        => CpuAttention.Forward(shape, qkv, output, lse);

    public void AttentionBackward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse, FloatView dOutput, FloatView dQkv)
        => CpuAttention.Backward(shape, qkv, output, lse, dOutput, dQkv);

    public void DecodeAttention(DecodeShape shape, FloatView qkv, FloatView kCache, FloatView vCache, FloatView output)
        => CpuAttention.Decode(shape, qkv, kCache, vCache, output);
}
