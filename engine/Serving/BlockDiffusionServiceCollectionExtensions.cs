using FastBlockDiff.Engine.Sampling;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FastBlockDiff.Engine.Serving;

/// <summary>Registers a checkpoint as an <see cref="IChatClient"/> in dependency injection.</summary>
public static class BlockDiffusionServiceCollectionExtensions
{
    /// <summary>
    /// Registers, as singletons, the model loaded from <paramref name="checkpointDirectory"/> (on first use; disposed
    /// with the container), a <see cref="RequestScheduler"/> over it that batches concurrent requests, and an
    /// <see cref="IChatClient"/> over the scheduler that logs through the container's <see cref="ILoggerFactory"/>.
    /// </summary>
    public static IServiceCollection AddBlockDiffusionChatClient(this IServiceCollection services, string checkpointDirectory,
        string backend = "auto", string? tokenizer = null, SamplingOptions? defaults = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentException.ThrowIfNullOrEmpty(checkpointDirectory);
        services.AddSingleton(_ => BlockDiffusionModel.Load(checkpointDirectory, tokenizer, backend));
        services.AddSingleton(sp => new RequestScheduler(sp.GetRequiredService<BlockDiffusionModel>(),
            logger: sp.GetService<ILoggerFactory>()?.CreateLogger<RequestScheduler>()));
        services.AddSingleton<IChatClient>(sp => new BlockDiffusionChatClient(sp.GetRequiredService<RequestScheduler>(),
            Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(checkpointDirectory))), defaults,
            sp.GetService<ILoggerFactory>()?.CreateLogger<BlockDiffusionChatClient>()));
        return services;
    }
}
