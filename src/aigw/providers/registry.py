"""Provider kind (as written in settings) → provider class."""

from __future__ import annotations

from aigw.providers.anthropic import AnthropicProvider
from aigw.providers.base import Provider
from aigw.providers.openai import AzureProvider, OpenAIProvider, WorkerProvider
from aigw.settings import DeploymentSettings

PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "azure": AzureProvider,
    "anthropic": AnthropicProvider,
    "aigw-worker": WorkerProvider,
}


def make_provider(settings: DeploymentSettings) -> Provider:
    return PROVIDERS[settings.provider](settings)
