"""The chat model the agents talk through, chosen by `CLERA_LLM`: `offline` or any OpenAI-compatible server."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from agents.llm.offline import OfflineChatModel
from agents.symbols import SymbolResolver
from engine.config import Settings

NO_KEY = "not-needed"  # local OpenAI-compatible servers (vLLM, Ollama, llama.cpp) accept any key


def chat_model(settings: Settings, resolver: SymbolResolver) -> BaseChatModel:
    if settings.llm == "offline":
        return OfflineChatModel(resolver=resolver)
    from langchain_openai import ChatOpenAI  # optional and heavy (the openai SDK): only with CLERA_LLM=openai

    return ChatOpenAI(
        model=settings.llm_model,
        base_url=settings.llm_base_url,
        api_key=settings.openai_api_key or NO_KEY,  # type: ignore[arg-type]  # the pydantic field takes a plain string too
        timeout=settings.llm_timeout_s,
        max_retries=2,
        temperature=0,
        stream_usage=True,
    )
