using Microsoft.Extensions.AI;

namespace FastBlockDiff.Engine.Serving;

/// <summary>
/// The prompt format for models trained on plain text: no chat template is pretended where the model has none.
/// The text of the messages, in order, is joined with a blank line; roles are not written, so a system message
/// reads as the opening of the document and a last assistant message is continued. The reply is the continuation.
/// </summary>
public static class PlainTextPrompt
{
    public const string Separator = "\n\n";

    public static string Format(IEnumerable<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        return string.Join(Separator, messages.Select(m => m.Text).Where(t => !string.IsNullOrEmpty(t)));
    }
}
