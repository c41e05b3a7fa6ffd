using System.Text;

namespace FastBlockDiff.Engine.Text;

/// <summary>
/// Byte-level tokenizer: ids 0..255 are the UTF-8 bytes of the text, BOS = 256, EOS = 257,
/// PAD = 258, MASK = 259, so the model vocabulary is 260. Decoding tolerates invalid UTF-8
/// (invalid sequences become U+FFFD), which matters for sampled byte sequences.
/// </summary>
public sealed class ByteTokenizer : ITextTokenizer
{
    public const int Bos = 256, Eos = 257, Pad = 258, Mask = 259;

    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);

    public ByteTokenizer(int? maskId = null)
    {
        MaskId = maskId ?? Mask;
        if (MaskId < 0 || MaskId == Bos || MaskId == Eos || MaskId == Pad)
            throw new UserInputException($"byte tokenizer: mask id {MaskId} collides with a special token or is negative");
    }

    public string Name => "byte";
    public int VocabSize => 259;
    public int BosId => Bos;
    public int EosId => Eos;
    public int MaskId { get; }
    public int? PadId => Pad;

    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bytes = Utf8.GetBytes(text);
        var ids = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) ids[i] = bytes[i];
        return ids;
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecial = true)
    {
        var sb = new StringBuilder(ids.Length);
        var run = new List<byte>(ids.Length);
        int modelVocab = Math.Max(VocabSize, MaskId + 1);
        void Flush()
        {
            if (run.Count == 0) return;
            sb.Append(Utf8.GetString(run.ToArray()));
            run.Clear();
        }
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)modelVocab)
                throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside the byte tokenizer's vocabulary [0, {modelVocab})");
            if (id == MaskId) { Flush(); if (!skipSpecial) sb.Append(SpecialTokenText.Mask); }
            else if (id < 256) run.Add((byte)id);
            else
            {
                Flush();
                if (!skipSpecial)
                    sb.Append(id switch { Bos => SpecialTokenText.Bos, Eos => SpecialTokenText.Eos, Pad => SpecialTokenText.Pad, _ => SpecialTokenText.Mask });
            }
        }
        Flush();
        return sb.ToString();
    }

    public TokenizerDescriptor Describe() => new("byte", [], "byte", VocabSize, BosId, EosId, MaskId, PadId);
}
