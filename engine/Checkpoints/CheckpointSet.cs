using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastBlockDiff.Engine.Formats;
using Microsoft.Win32.SafeHandles;

namespace FastBlockDiff.Engine.Checkpoints;

/// <summary>One file of a checkpoint: its name inside the directory and the code that writes its bytes.</summary>
public sealed record CheckpointFile(string Name, Action<Stream> Write);

/// <summary>
/// Publishes the files of one checkpoint (config.json, model.safetensors, training_state.safetensors, train_log.csv)
/// as one consistent set, and opens them only as members of that set.
/// <para>
/// Publishing: every file is written to a staged temp file beside its target and fsynced; then
/// <see cref="ManifestFile"/> — naming each file with its size, SHA-256 and staged name — is written atomically: that
/// rename is the commit. Only then are the staged files renamed over their targets. A crash before the commit
/// leaves the previous set untouched; a crash after it leaves staged files that readers use in place of the stale
/// targets and that the next writer renames into place (<see cref="Recover"/>).
/// </para>
/// <para>
/// Reading: with a manifest, a file is opened only if its size and hash match (else the message says it changed
/// after the checkpoint was written); without one (a published bd3lms checkpoint) the files are read as they are.
/// </para>
/// </summary>
public static class CheckpointSet
{
    public const string ManifestFile = "checkpoint_manifest.json";
    const string Format = "fastblockdiff-checkpoint/1";

    /// <summary>What the manifest records of one file.</summary>
    sealed record Entry(string Name, long Bytes, string Sha256, string Staged);

    sealed record Manifest(int? Step, Dictionary<string, Entry> Files);

    /// <summary>Writes <paramref name="files"/> into <paramref name="dir"/> as one set; <paramref name="step"/> is recorded when known.</summary>
    public static void Publish(string dir, int? step, IReadOnlyList<CheckpointFile> files)
    {
        try { Directory.CreateDirectory(dir); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserInputException($"cannot create checkpoint directory '{dir}': {e.Message}", e); }
        if (files.Select(f => f.Name).Distinct(StringComparer.Ordinal).Count() != files.Count)
            throw new ArgumentException("a checkpoint names one file twice", nameof(files));
        var entries = new List<Entry>();
        try
        {
            foreach (var f in files)
                entries.Add(WriteStaged(dir, f));
            var manifest = new JsonObject
            {
                ["format"] = Format,
                ["step"] = step,
                ["files"] = new JsonObject(entries.Select(e => KeyValuePair.Create(e.Name, (JsonNode?)new JsonObject
                {
                    ["bytes"] = e.Bytes, ["sha256"] = e.Sha256, ["staged"] = e.Staged,
                }))),
            };
            AtomicFile.WriteAllText(Path.Combine(dir, ManifestFile), manifest.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        catch
        {
            foreach (var e in entries) TryDelete(Path.Combine(dir, e.Staged));
            throw;
        }
        foreach (var e in entries)
            Rename(dir, e);
        Recover(dir);
    }

    /// <summary>
    /// Finishes what a crashed writer left behind in <paramref name="dir"/>: staged files of the committed set are
    /// renamed into place, and temp files of processes that no longer run are deleted. Call before writing into a
    /// directory; readers never need it.
    /// </summary>
    public static void Recover(string dir)
    {
        if (!Directory.Exists(dir)) return;
        Manifest? manifest = null;
        try { manifest = ReadManifest(dir); }
        catch (UserInputException) { /* a corrupt manifest is reported when the set is read */ }
        var keep = new HashSet<string>(StringComparer.Ordinal);
        if (manifest != null)
            foreach (var e in manifest.Files.Values)
            {
                string staged = Path.Combine(dir, e.Staged);
                if (!File.Exists(staged)) continue;
                if (Matches(Path.Combine(dir, e.Name), e)) TryDelete(staged);
                else if (Matches(staged, e)) Rename(dir, e);
                else keep.Add(e.Staged); // it changed after the commit: leave it for the user to look at
            }
        foreach (var path in Directory.EnumerateFiles(dir, ".*.tmp"))
        {
            string name = Path.GetFileName(path);
            if (!keep.Contains(name) && AtomicFile.TempOwner(name) is int pid && !ProcessIsRunning(pid))
                TryDelete(path);
        }
    }

    /// <summary>Whether <paramref name="name"/> belongs to the checkpoint in <paramref name="dir"/> (exists, and is in the manifest when there is one).</summary>
    public static bool Contains(string dir, string name)
    {
        var manifest = ReadManifest(dir);
        return manifest == null ? File.Exists(Path.Combine(dir, name)) : manifest.Files.ContainsKey(name);
    }

    /// <summary>
    /// Opens <paramref name="name"/> of the checkpoint in <paramref name="dir"/> for reading, checked against the
    /// manifest when there is one. Returns the handle (the caller disposes it) and the path it names in messages;
    /// a missing file returns null.
    /// </summary>
    public static (SafeFileHandle Handle, string Path)? Open(string dir, string name)
    {
        string path = Path.Combine(dir, name);
        for (int attempt = 0; ; attempt++)
        {
            var manifest = ReadManifest(dir);
            if (manifest == null)
                return File.Exists(path) ? (OpenRead(path), path) : null;
            if (!manifest.Files.TryGetValue(name, out var entry))
            {
                if (!File.Exists(path)) return null;
                throw new UserInputException($"'{path}' is not part of the checkpoint{StepText(manifest)} in '{dir}' (see {ManifestFile}): " +
                    $"it is left over from another run; delete it, or delete {ManifestFile} to load the files as they are");
            }
            // The target, or (after a crash between commit and rename) the staged copy: whichever matches.
            foreach (string candidate in new[] { path, Path.Combine(dir, entry.Staged) })
            {
                if (!File.Exists(candidate)) continue;
                var handle = OpenRead(candidate);
                if (Matches(handle, entry)) return (handle, path);
                handle.Dispose();
            }
            // A writer may have committed a newer set while we looked: read the manifest again.
            if (attempt < 3 && !SameManifest(manifest, ReadManifest(dir))) continue;
            if (!File.Exists(path)) throw new UserInputException($"checkpoint '{dir}' lacks {name}, which its {ManifestFile} lists");
            throw new UserInputException($"'{path}' does not match the checkpoint{StepText(manifest)} recorded in {ManifestFile} " +
                $"({entry.Bytes} bytes, SHA-256 {entry.Sha256[..12]}…): it changed after the checkpoint was written. " +
                $"Restore it, or delete {ManifestFile} to load the files as they are");
        }
    }

    static string StepText(Manifest m) => m.Step is int s ? $" of step {s}" : "";

    static bool SameManifest(Manifest a, Manifest? b) =>
        b != null && a.Step == b.Step && a.Files.Count == b.Files.Count && a.Files.All(kv => b.Files.TryGetValue(kv.Key, out var e) && e == kv.Value);

    static Entry WriteStaged(string dir, CheckpointFile f)
    {
        string staged = AtomicFile.TempName(f.Name);
        string path = Path.Combine(dir, staged);
        try
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            long bytes;
            using (var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                using var hashing = new HashingStream(fs, hash);
                f.Write(hashing);
                fs.Flush(flushToDisk: true);
                bytes = hashing.Length;
            }
            return new Entry(f.Name, bytes, Convert.ToHexStringLower(hash.GetHashAndReset()), staged);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(path);
            throw new UserInputException($"cannot write '{Path.Combine(dir, f.Name)}': {e.Message}", e);
        }
        catch
        {
            TryDelete(path);
            throw;
        }
    }

    static void Rename(string dir, Entry e)
    {
        try { File.Move(Path.Combine(dir, e.Staged), Path.Combine(dir, e.Name), overwrite: true); }
        catch (Exception x) when (x is IOException or UnauthorizedAccessException)
        {
            // The set is committed; readers use the staged file until a later writer renames it.
            throw new UserInputException($"checkpoint written to '{dir}' but '{e.Name}' could not be put in place: {x.Message}", x);
        }
    }

    static Manifest? ReadManifest(string dir)
    {
        string path = Path.Combine(dir, ManifestFile);
        if (!File.Exists(path)) return null;
        string Bad(string what) => $"checkpoint manifest '{path}' {what}; delete it to load the files as they are";
        JsonNode? root;
        try
        {
            var bytes = File.ReadAllBytes(path);
            if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new UserInputException(Bad("is not valid UTF-8"));
            root = JsonNode.Parse(bytes, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false });
        }
        catch (JsonException e) { throw new UserInputException(Bad($"is not valid JSON ({e.Message})"), e); }
        catch (IOException e) { throw new UserInputException($"cannot read checkpoint manifest '{path}': {e.Message}", e); }
        if (root is not JsonObject o || o["format"] is not JsonValue f || f.GetValueKind() != JsonValueKind.String || f.GetValue<string>() != Format)
            throw new UserInputException(Bad($"is not a {Format} manifest"));
        int? step = null;
        if (o["step"] is JsonNode s)
        {
            if (s is not JsonValue sv || sv.GetValueKind() != JsonValueKind.Number || !sv.TryGetValue<int>(out int si) || si < 0)
                throw new UserInputException(Bad("has a 'step' that is not a non-negative integer"));
            step = si;
        }
        if (o["files"] is not JsonObject files || files.Count == 0)
            throw new UserInputException(Bad("lists no files"));
        var entries = new Dictionary<string, Entry>(StringComparer.Ordinal);
        foreach (var (name, node) in files)
        {
            if (!IsPlainName(name)) throw new UserInputException(Bad($"names a file '{name}' outside the directory"));
            if (node is not JsonObject e
                || e["bytes"] is not JsonValue b || b.GetValueKind() != JsonValueKind.Number || !b.TryGetValue<long>(out long bytes) || bytes < 0
                || e["sha256"] is not JsonValue h || h.GetValueKind() != JsonValueKind.String || h.GetValue<string>() is not { Length: 64 } sha
                || !sha.All(char.IsAsciiHexDigitLower)
                || e["staged"] is not JsonValue st || st.GetValueKind() != JsonValueKind.String || st.GetValue<string>() is not { } staged
                || !IsPlainName(staged) || AtomicFile.TempOwner(staged) == null)
                throw new UserInputException(Bad($"has a malformed entry for '{name}' (needs bytes, sha256 and staged)"));
            entries[name] = new Entry(name, bytes, sha, staged);
        }
        return new Manifest(step, entries);
    }

    static bool IsPlainName(string name) =>
        name.Length > 0 && name != "." && name != ".." && name.IndexOfAny(['/', '\\', '\0']) < 0 && Path.GetFileName(name) == name;

    static SafeFileHandle OpenRead(string path)
    {
        InputFile.RequireRegular(path, "checkpoint file");   // a FIFO would block the open itself
        try { return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserInputException($"cannot open '{path}': {e.Message}", e); }
    }

    static bool Matches(string path, Entry e)
    {
        if (!File.Exists(path)) return false;
        try { using var h = OpenRead(path); return Matches(h, e); }
        catch (UserInputException) { return false; }
    }

    static bool Matches(SafeFileHandle h, Entry e)
    {
        if (RandomAccess.GetLength(h) != e.Bytes) return false;
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buf = new byte[1 << 20];
        for (long at = 0; at < e.Bytes;)
        {
            int n = RandomAccess.Read(h, buf, at);
            if (n <= 0) return false;
            hash.AppendData(buf, 0, n);
            at += n;
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset()) == e.Sha256;
    }

    static bool ProcessIsRunning(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        try { using var p = System.Diagnostics.Process.GetProcessById(pid); return !p.HasExited; }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* best effort */ }
    }

    /// <summary>Passes writes through to a file while hashing them and counting their bytes.</summary>
    sealed class HashingStream(Stream inner, IncrementalHash hash) : Stream
    {
        long _length;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _length;
        public override long Position { get => _length; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Write(ReadOnlySpan<byte> buffer)
        {
            hash.AppendData(buffer);
            inner.Write(buffer);
            _length += buffer.Length;
        }
    }
}
