using System.Text;

namespace FastBlockDiff.Tests;

/// <summary>
/// Turns a valid file into a nearly valid one for fuzzing: bit flips, truncation, byte insertion and deletion, splices
/// from itself or from other valid files, and edits of numbers written as text (a digit run becomes 0, -1, 2^31,
/// 256.9, 1e308, NaN, "abc"...). Deterministic for a given <see cref="Random"/>.
/// </summary>
static class FileMutator
{
    static readonly string[] Numbers =
    [
        "0", "-1", "1", "-0", "2147483647", "2147483648", "-2147483649", "4294967296", "9223372036854775807",
        "9223372036854775808", "18446744073709551616", "256.9", "1e308", "1e-320", "-1e309", "NaN", "Infinity",
        "\"abc\"", "abc", "null", "true", "[]", "{}", "00", "1.0", "3e2", "99999999999999999999999",
    ];

    /// <summary>Bytes that matter to the formats: JSON syntax, line structure, quotes, escapes, invalid UTF-8.</summary>
    static readonly byte[] Interesting = "{}[]\":,\\\n\r \t0-9.eE+"u8.ToArray().Concat(new byte[] { 0, 0x7F, 0x80, 0xC0, 0xED, 0xF4, 0xFF }).ToArray();

    /// <summary>Applies 1 to 3 mutations; returns the result and what was done (for failure messages).</summary>
    public static (byte[] Bytes, string Description) Mutate(byte[] valid, Random rng, IReadOnlyList<byte[]> donors)
    {
        var bytes = new List<byte>(valid);
        var done = new List<string>();
        int count = 1 + rng.Next(3);
        for (int m = 0; m < count; m++)
        {
            int at = bytes.Count == 0 ? 0 : rng.Next(bytes.Count);
            switch (rng.Next(8))
            {
                case 0 when bytes.Count > 0:
                    bytes[at] ^= (byte)(1 << rng.Next(8));
                    done.Add($"flip bit of byte {at}");
                    break;
                case 1 when bytes.Count > 0:
                    // bytes near the start carry the most structure (lengths, headers)
                    int head = rng.Next(Math.Min(bytes.Count, 16));
                    bytes[head] = (byte)rng.Next(256);
                    done.Add($"set byte {head}");
                    break;
                case 2:
                    int keep = rng.Next(bytes.Count + 1);
                    bytes.RemoveRange(keep, bytes.Count - keep);
                    done.Add($"truncate to {keep}");
                    break;
                case 3:
                    int n = 1 + rng.Next(4);
                    for (int i = 0; i < n; i++) bytes.Insert(at, rng.Next(2) == 0 ? Interesting[rng.Next(Interesting.Length)] : (byte)rng.Next(256));
                    done.Add($"insert {n} at {at}");
                    break;
                case 4 when bytes.Count > 0:
                    int del = Math.Min(1 + rng.Next(8), bytes.Count - at);
                    bytes.RemoveRange(at, del);
                    done.Add($"delete {del} at {at}");
                    break;
                case 5:
                    var donor = donors.Count > 0 && rng.Next(2) == 0 ? donors[rng.Next(donors.Count)] : valid;
                    if (donor.Length == 0) break;
                    int from = rng.Next(donor.Length), len = Math.Min(1 + rng.Next(64), donor.Length - from);
                    bytes.InsertRange(at, donor.AsSpan(from, len).ToArray());
                    done.Add($"splice {len} bytes at {at}");
                    break;
                default:
                    var (ok, what) = EditNumber(bytes, rng);
                    if (ok) done.Add(what);
                    else { bytes.Insert(at, Interesting[rng.Next(Interesting.Length)]); done.Add($"insert 1 at {at}"); }
                    break;
            }
        }
        return ([.. bytes], string.Join("; ", done));
    }

    /// <summary>Replaces a run of ASCII digits (a number written as text) with a boundary value.</summary>
    static (bool, string) EditNumber(List<byte> bytes, Random rng)
    {
        var starts = new List<int>();
        for (int i = 0; i < bytes.Count; i++)
            if (IsDigit(bytes[i]) && (i == 0 || !IsDigit(bytes[i - 1]))) starts.Add(i);
        if (starts.Count == 0) return (false, "");
        int s = starts[rng.Next(starts.Count)], e = s;
        while (e < bytes.Count && (IsDigit(bytes[e]) || bytes[e] == '.')) e++;
        string value = Numbers[rng.Next(Numbers.Length)];
        bytes.RemoveRange(s, e - s);
        bytes.InsertRange(s, Encoding.ASCII.GetBytes(value));
        return (true, $"number at {s} := {value}");
    }

    static bool IsDigit(byte b) => b is >= (byte)'0' and <= (byte)'9';
}
