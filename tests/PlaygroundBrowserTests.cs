using FastBlockDiff.Cli;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Serving;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Playwright;

namespace FastBlockDiff.Tests;

/// <summary>The playground page in a real browser: Debian's chromium driven by Playwright (no browser download).</summary>
public class PlaygroundBrowserTests
{
    const string Chromium = "/usr/bin/chromium";

    [Fact]
    public async Task ThePlaygroundShowsTheDenoisingAndTheGeneratedText()
    {
        if (!File.Exists(Chromium)) Assert.Skip($"{Chromium} is not installed (.ci/install-chromium.sh installs it)");
        using var model = ConcurrencyTests.FreshByteModel();
        using var scheduler = new RequestScheduler(model);
        var app = OpenAiServer.Build(scheduler, "tiny", new ServerOptions { Port = 0 }, l => l.ClearProviders());
        await app.StartAsync();
        try
        {
            string url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            using var playwright = await Playwright.CreateAsync();
            await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
            {
                ExecutablePath = Chromium, Headless = true, Args = ["--no-sandbox", "--disable-gpu"],
            });
            var page = await browser.NewPageAsync();
            await page.GotoAsync(url);
            await page.FillAsync("#prompt", "Once upon");
            await page.FillAsync("#max_tokens", "24");
            await page.FillAsync("#seed", "6");
            await page.FillAsync("#steps", "3");
            await page.ClickAsync("#generate");
            await page.WaitForFunctionAsync("document.getElementById('status').textContent.startsWith('done')", null, new PageWaitForFunctionOptions { Timeout = 120_000 });

            string expected = model.Sample("Once upon", new SamplingOptions { MaxTokens = 24, Seed = 6, StepsPerBlock = 3 }).Texts[0];
            Assert.Equal("Once upon" + expected, await page.TextContentAsync("#committed"));
            Assert.Matches(@"NFEs [1-9]\d* · \d+ tokens · [\d.]+ tokens/s", await page.InnerTextAsync("#stats"));
            Assert.True(await page.Locator("#block span").CountAsync() > 0, "the last denoised block is shown");

            string shot = Path.Combine(Path.GetTempPath(), $"fbd-playground-{Guid.NewGuid():N}.png");
            await page.ScreenshotAsync(new PageScreenshotOptions { Path = shot, FullPage = true });
            try { Assert.True(new FileInfo(shot).Length > 1000, "the screenshot is an image"); }
            finally { File.Delete(shot); }
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }
}
