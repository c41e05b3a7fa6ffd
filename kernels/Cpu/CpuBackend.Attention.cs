namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    // PLACEHOLDER (being replaced by the tiled online-softmax attention).
    public void AttentionForward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse) => throw new NotImplementedException();
    public void AttentionBackward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse, FloatView dOutput, FloatView dQkv) => throw new NotImplementedException();
    public void DecodeAttention(DecodeShape shape, FloatView qkv, FloatView kCache, FloatView vCache, FloatView output) => throw new NotImplementedException();
}
