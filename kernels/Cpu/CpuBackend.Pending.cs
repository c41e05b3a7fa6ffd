namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void LayerNormForward(FloatView x, FloatView weight, FloatView? bias, FloatView y, FloatView mean, FloatView rstd, int rows, int dim, float eps) => throw new NotImplementedException();
    public void LayerNormBackward(FloatView dy, FloatView x, FloatView weight, FloatView mean, FloatView rstd, FloatView dx, FloatView dWeight, FloatView? dBias, int rows, int dim) => throw new NotImplementedException();
    public void GeluForward(FloatView x, FloatView y) => throw new NotImplementedException();
    public void GeluBackward(FloatView x, FloatView dy, FloatView dx) => throw new NotImplementedException();
    public void SiluForward(FloatView x, FloatView y) => throw new NotImplementedException();
    public void SiluBackward(FloatView x, FloatView dy, FloatView dx) => throw new NotImplementedException();
    public void Rotary(FloatView x, int rows, int rowStride, int heads, int headDim, IntView positions, FloatView cos, FloatView sin, bool inverse) => throw new NotImplementedException();
    public void EmbeddingForward(IntView ids, FloatView table, FloatView output, int rows, int dim) => throw new NotImplementedException();
    public void EmbeddingBackward(IntView ids, FloatView dOutput, FloatView dTable, int rows, int dim) => throw new NotImplementedException();
    public void ResidualGatedForward(FloatView x, FloatView y, FloatView gate, int rows, int dim, float dropP, ulong seed) => throw new NotImplementedException();
    public void ResidualGatedBackward(FloatView dx, FloatView y, FloatView gate, FloatView dy, FloatView dGate, int rows, int dim, float dropP, ulong seed) => throw new NotImplementedException();
    public void SubsCrossEntropy(FloatView logits, IntView targets, FloatView weights, FloatView loss, int rows, int vocab, int maskId, float gradScale, bool writeGrad) => throw new NotImplementedException();
    public void AdamW(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep step) => throw new NotImplementedException();
    public void Ema(FloatView ema, FloatView param, float decay) => throw new NotImplementedException();
    public void SampleCategorical(FloatView logits, int rows, int vocab, int maskId, float temperature, float topP, FloatView uniforms, IntView tokens, FloatView probs) => throw new NotImplementedException();
}
