using System.Text;
using FastBlockDiff.Engine;

namespace FastBlockDiff.Cli;

/// <summary>
/// Standard output whose write failures (a full device, `&gt; /dev/full`, a closed file) are bad input, not bugs:
/// they surface as a <see cref="UserInputException"/> naming standard output.
/// </summary>
sealed class StdoutWriter(TextWriter inner) : TextWriter
{
    public override Encoding Encoding => inner.Encoding;
    public override IFormatProvider FormatProvider => inner.FormatProvider;
    public override string NewLine { get => inner.NewLine; set => inner.NewLine = value; }

    public override void Write(char value) => Guard(() => inner.Write(value));
    public override void Write(string? value) => Guard(() => inner.Write(value));
    public override void Write(char[] buffer, int index, int count) => Guard(() => inner.Write(buffer, index, count));
    public override void WriteLine(string? value) => Guard(() => inner.WriteLine(value));
    public override void WriteLine() => Guard(inner.WriteLine);
    public override void Flush() => Guard(inner.Flush);

    static void Guard(Action write)
    {
        try { write(); }
        catch (IOException e) { throw new UserInputException($"cannot write to standard output: {e.Message.TrimEnd('.')}; redirect it to a file on a device with free space"); }
    }
}
