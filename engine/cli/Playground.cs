using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Serving;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;

namespace FastBlockDiff.Cli;

/// <summary>
/// The playground at `/`: a prompt box and options; the block being denoised is shown live (masked positions
/// filling in step by step) above the committed text, with NFEs and tokens/s. The page reads
/// `/playground/stream` (server-sent events: step, block, done, error).
/// </summary>
static class Playground
{
    public static void Map(WebApplication app, RequestScheduler scheduler, string modelId)
    {
        app.MapGet("/", () => Results.Content(Page.Replace("{{MODEL}}", System.Net.WebUtility.HtmlEncode(modelId)), "text/html; charset=utf-8"));
        app.MapGet("/playground/stream", async (HttpContext http) =>
        {
            http.Response.ContentType = "text/event-stream";
            http.Response.Headers.CacheControl = "no-cache";
            var q = http.Request.Query;
            var clock = Stopwatch.StartNew();
            try
            {
                var chat = new ChatOptions
                {
                    MaxOutputTokens = Number(q, "max_tokens", int.Parse), Seed = Number(q, "seed", long.Parse),
                    Temperature = Number(q, "temperature", float.Parse), AdditionalProperties = [],
                };
                if (q["sampler"].ToString() is { Length: > 0 } sampler) chat.AdditionalProperties[ChatOptionsMapping.Sampler] = sampler;
                if (q["steps"].ToString() is { Length: > 0 } steps) chat.AdditionalProperties[ChatOptionsMapping.Steps] = steps;
                var (options, _) = ChatOptionsMapping.Map(chat, new SamplingOptions { MaxTokens = 128 });
                if (options.MaxTokens > 4096) throw new UserInputException($"max_tokens is {options.MaxTokens}; the playground generates at most 4096");
                var request = new GenerationRequest(q["prompt"].ToString(), options, ReportSteps: true);
                await foreach (var u in scheduler.StreamAsync(request, http.RequestAborted))
                {
                    JsonObject e;
                    if (u.IsFinal)
                        e = new JsonObject
                        {
                            ["type"] = "done", ["reason"] = u.Reason.ToString(), ["tokens"] = u.OutputTokens, ["nfe"] = u.Nfe,
                            ["tokens_per_second"] = u.OutputTokens / Math.Max(1e-9, clock.Elapsed.TotalSeconds),
                        };
                    else if (u.Draft is { } draft)
                        e = new JsonObject
                        {
                            ["type"] = "step", ["nfe"] = u.Nfe,
                            ["block"] = new JsonArray([.. draft.Select(t => t == scheduler.Config.MaskId ? null : (JsonNode)scheduler.Tokenizer.Decode([t], skipSpecial: false))]),
                        };
                    else
                        e = new JsonObject { ["type"] = "block", ["text"] = u.Text, ["tokens"] = u.OutputTokens, ["nfe"] = u.Nfe, ["tokens_per_second"] = u.OutputTokens / Math.Max(1e-9, clock.Elapsed.TotalSeconds) };
                    await Send(http, e);
                }
            }
            catch (UserInputException e) { await Send(http, new JsonObject { ["type"] = "error", ["message"] = e.Message }); }
            catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested) { }
        });
    }

    static T? Number<T>(IQueryCollection q, string key, Func<string, IFormatProvider, T> parse) where T : struct
    {
        string s = q[key].ToString();
        if (s.Length == 0) return null;
        try { return parse(s, CultureInfo.InvariantCulture); }
        catch (Exception e) when (e is FormatException or OverflowException) { throw new UserInputException($"'{key}' must be a number, got '{s}'"); }
    }

    static async Task Send(HttpContext http, JsonObject e)
    {
        await http.Response.WriteAsync($"data: {e.ToJsonString()}\n\n", http.RequestAborted);
        await http.Response.Body.FlushAsync(http.RequestAborted);
    }

    const string Page = """
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>FastBlockDiff playground: {{MODEL}}</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  textarea { width: 100%; height: 5rem; font: 14px monospace; }
  label { margin-right: 1rem; }
  input[type=number] { width: 5rem; }
  #committed { white-space: pre-wrap; font: 14px monospace; background: #f4f4f4; padding: .75rem; min-height: 4rem; }
  #block { font: 16px monospace; margin: .75rem 0; min-height: 1.5rem; }
  #block span { display: inline-block; min-width: 1ch; padding: 0 1px; margin: 0 1px; border-bottom: 2px solid #4a7; white-space: pre; }
  #block span.mask { color: #bbb; border-color: #bbb; }
  #stats { color: #555; }
</style>
</head>
<body>
<h1>FastBlockDiff playground</h1>
<p>Model <b>{{MODEL}}</b>. Each block starts as masks and is denoised in steps; a finished block is committed below.</p>
<textarea id="prompt" placeholder="Prompt (plain text)"></textarea>
<div>
  <label>max tokens <input id="max_tokens" type="number" value="64" min="1" max="4096"></label>
  <label>steps / block <input id="steps" type="number" value="0" min="0"></label>
  <label>sampler <select id="sampler"><option>first-hitting</option><option>ddpm</option><option>confidence</option></select></label>
  <label>seed <input id="seed" type="number" value="0" min="0"></label>
  <button id="generate">Generate</button>
</div>
<h3>Block being denoised</h3>
<div id="block"></div>
<h3>Text</h3>
<div id="committed"></div>
<p id="stats">NFEs 0 · 0 tokens · 0 tokens/s</p>
<p id="status">idle</p>
<script>
const $ = id => document.getElementById(id);
let source = null;
$("generate").onclick = () => {
  if (source) source.close();
  $("committed").textContent = $("prompt").value;
  $("block").textContent = "";
  $("status").textContent = "running";
  const q = new URLSearchParams({ prompt: $("prompt").value, max_tokens: $("max_tokens").value, steps: $("steps").value,
                                  sampler: $("sampler").value, seed: $("seed").value });
  source = new EventSource("/playground/stream?" + q);
  source.onmessage = m => {
    const e = JSON.parse(m.data);
    if (e.type === "step") {
      const block = $("block");
      block.textContent = "";
      for (const t of e.block) {
        const s = document.createElement("span");
        if (t === null) { s.className = "mask"; s.textContent = "▒"; } else s.textContent = t;
        block.appendChild(s);
      }
    } else if (e.type === "block") {
      $("committed").textContent += e.text;
    }
    if (e.nfe !== undefined) $("stats").textContent = `NFEs ${e.nfe} · ${e.tokens ?? 0} tokens · ${(e.tokens_per_second ?? 0).toFixed(1)} tokens/s`;
    if (e.type === "done" || e.type === "error") {
      source.close();
      $("status").textContent = e.type === "done" ? "done (" + e.reason + ")" : "error: " + e.message;
    }
  };
  source.onerror = () => { source.close(); $("status").textContent = "disconnected"; };
};
</script>
</body>
</html>
""";
}
