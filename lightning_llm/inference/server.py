"""An OpenAI-compatible HTTP server for a decoder (FastAPI + uvicorn): /v1/models, /v1/completions and
/v1/chat/completions (server-sent events with `stream: true`), a chat page at `/`, and /health.

Requests become sequences of the batching engine (inference.batching), which decodes all of them together. Bad
requests get OpenAI's error body with a 4xx status; a client that leaves (mid-stream or while waiting) frees its
row at the next step.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager, suppress
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lightning_llm.errors import ConfigError
from lightning_llm.inference.batching import BatchingEngine, Event, Sampling, Sequence, read_events
from lightning_llm.inference.chat import ChatTemplate
from lightning_llm.inference.openai_api import (
    APIError,
    ChatRequest,
    CompletionRequest,
    SamplingRequest,
    chat_choice,
    chat_delta,
    completion_choice,
    envelope,
    new_id,
    usage,
)
from lightning_llm.inference.session import TextGenerator

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


class Server:
    """What the routes share: the model behind its generator, its served name, chat template and engine."""

    def __init__(
        self, generator: TextGenerator, model_name: str, template: ChatTemplate, engine: BatchingEngine
    ) -> None:
        self.generator, self.model_name, self.template, self.engine = generator, model_name, template, engine
        tokenizer = generator.tokenizer
        special = getattr(tokenizer, "special", None) or {}
        self.special = {"bos_token": special.get("bos", "<s>"), "eos_token": special.get("eos", "</s>")}

    def check_model(self, body: SamplingRequest) -> None:
        if body.model != self.model_name:
            raise APIError(404, f"The model '{body.model}' does not exist: this server serves '{self.model_name}'",
                           "model", "model_not_found")  # fmt: skip

    def frame(self, text: str) -> list[int]:
        """The ids the model reads for `text` (its tokenizer's framing: <s> first where it adds one)."""
        return self.generator.lm.frame_prompt(self.generator.tokenizer.encode(text))

    def sequences(
        self, prompts: list[list[int]], body: SamplingRequest, default_tokens: int | None, stops: list[str]
    ) -> tuple[asyncio.Queue, list[Sequence]]:
        """Check each prompt and its completion against the context, then queue them on the engine."""
        context = self.generator.model.context_length
        queue: asyncio.Queue = asyncio.Queue()
        sequences = []
        for index, ids in enumerate(prompts):
            wanted = body.max_tokens or getattr(body, "max_completion_tokens", None) or default_tokens
            wanted = wanted or context - len(ids)
            if len(ids) + wanted > context:
                raise APIError(
                    400,
                    f"This model's maximum context length is {context} tokens. However, you requested "
                    f"{len(ids) + wanted} tokens ({len(ids)} in the prompt, {wanted} in the completion). Please "
                    "reduce the prompt or the completion length.",
                    "messages" if isinstance(body, ChatRequest) else "prompt",
                    "context_length_exceeded",
                )
            top_p = body.top_p if body.top_p < 1 else None
            sampling = Sampling(wanted, body.temperature, top_p, None, stops, body.seed)
            sequences.append(Sequence(ids, sampling, queue, index))
        self.engine.submit(sequences)
        return queue, sequences


def create_app(
    generator: TextGenerator,
    model_name: str,
    template: ChatTemplate,
    max_batch_size: int = 8,
    max_wait_s: float = 0.01,
) -> FastAPI:
    """The server's ASGI app; the engine's scheduler runs while the app's lifespan does."""
    engine = BatchingEngine(generator.model, generator.tokenizer, max_batch_size, max_wait_s)
    server = Server(generator, model_name, template, engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(engine.run())
        yield
        task.cancel()
        engine.close()

    app = FastAPI(title="lightning-llm", summary="OpenAI-compatible API", lifespan=lifespan)
    app.state.server = server
    add_error_handlers(app)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return (files("lightning_llm.inference") / "static" / "chat.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "generating": engine.busy}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": "lightning-llm"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        server.check_model(body)
        prompts = [server.frame(p) for p in body.prompts()]
        queue, sequences = server.sequences(prompts, body, DEFAULT_COMPLETION_TOKENS, body.stops())
        ids, tokens = new_id("cmpl"), sum(map(len, prompts))
        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            chunks = completion_chunks(server, ids, queue, sequences, tokens if include else None)
            return StreamingResponse(sse(chunks), media_type="text/event-stream")
        texts, reasons = await collect(queue, sequences, request)
        choices = [completion_choice(i, texts[i], reasons[i]) for i in range(len(sequences))]
        return {**envelope("text_completion", ids, model_name, choices), "usage": usage_of(tokens, sequences)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        server.check_model(body)
        try:
            prompt = template.render(body.conversation(), server.special)
        except ConfigError as err:
            raise APIError(400, str(err), "messages") from err
        ids = server.frame(prompt)
        stops = list(dict.fromkeys([*body.stops(), *template.stops]))
        queue, sequences = server.sequences([ids], body, None, stops)
        chat_id = new_id("chatcmpl")
        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            chunks = chat_chunks(server, chat_id, queue, sequences, len(ids) if include else None)
            return StreamingResponse(sse(chunks), media_type="text/event-stream")
        texts, reasons = await collect(queue, sequences, request)
        choices = [chat_choice(0, texts[0], reasons[0])]
        return {**envelope("chat.completion", chat_id, model_name, choices), "usage": usage_of(len(ids), sequences)}

    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's body: {"error": {"message", "type", "param", "code"}}."""

    @app.exception_handler(APIError)
    async def api_error(_: Request, err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        if first.get("type") == "json_invalid":
            problem = APIError(400, f"We could not parse the JSON body of your request: {first.get('msg')}")
        else:
            where = [str(part) for part in first.get("loc", ()) if part != "body"]
            param = ".".join(where) or None
            message = "Unrecognized request argument supplied" if first.get("type") == "extra_forbidden" else "Invalid"
            problem = APIError(400, f"{message}: {param}: {first.get('msg')}", param, first.get("type"))
        return JSONResponse(problem.body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse(APIError(err.status_code, str(err.detail)).body(), status_code=err.status_code)


def usage_of(prompt_tokens: int, sequences: list[Sequence]) -> dict[str, int]:
    return usage(prompt_tokens, sum(len(s.new_ids) for s in sequences))


async def collect(
    queue: asyncio.Queue, sequences: list[Sequence], request: Request
) -> tuple[dict[int, str], dict[int, str | None]]:
    """Each sequence's whole text and finish reason; the sequences are cancelled if the client leaves first."""
    texts = {s.index: "" for s in sequences}
    reasons: dict[int, str | None] = {}

    async def read() -> None:
        async with aclosing(read_events(queue, sequences)) as events:
            async for event in events:
                fail_on_error(event)
                texts[event.index] += event.text
                reasons[event.index] = event.finish_reason

    task = asyncio.ensure_future(read())
    while not task.done():
        await asyncio.wait({task}, timeout=0.2)
        if not task.done() and await request.is_disconnected():  # nobody reads the answer: free the rows
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            return texts, reasons
    task.result()  # a failed generation's error
    return texts, reasons


def fail_on_error(event: Event) -> None:
    if event.finish_reason == "error":
        raise APIError(500, f"generation failed: {event.error}")


async def sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Server-sent events as OpenAI streams them: one `data:` line per chunk, then `data: [DONE]`."""
    async with aclosing(chunks):
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        except APIError as err:
            yield f"data: {json.dumps(err.body())}\n\n"
    yield "data: [DONE]\n\n"


async def completion_chunks(
    server: Server, request_id: str, queue: asyncio.Queue, sequences: list[Sequence], prompt_tokens: int | None
) -> AsyncIterator[dict[str, Any]]:
    name = server.model_name
    async with aclosing(read_events(queue, sequences)) as events:
        async for event in events:
            fail_on_error(event)
            if event.text or event.finish_reason:
                choice = completion_choice(event.index, event.text, event.finish_reason)
                yield envelope("text_completion", request_id, name, [choice])
    if prompt_tokens is not None:
        yield {**envelope("text_completion", request_id, name, []), "usage": usage_of(prompt_tokens, sequences)}


async def chat_chunks(
    server: Server, request_id: str, queue: asyncio.Queue, sequences: list[Sequence], prompt_tokens: int | None
) -> AsyncIterator[dict[str, Any]]:
    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        return envelope("chat.completion.chunk", request_id, server.model_name, [chat_delta(0, delta, finish_reason)])

    yield chunk({"role": "assistant", "content": ""})
    async with aclosing(read_events(queue, sequences)) as events:
        async for event in events:
            fail_on_error(event)
            if event.text:
                yield chunk({"content": event.text})
            if event.finish_reason:
                yield chunk({}, event.finish_reason)
    if prompt_tokens is not None:
        usage_chunk = envelope("chat.completion.chunk", request_id, server.model_name, [])
        yield {**usage_chunk, "usage": usage_of(prompt_tokens, sequences)}


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one); a port in use is one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror}): choose another port=") from err
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def serving(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` on a thread of this process (tests and benchmarks) while the block runs; yields its URL."""
    import uvicorn

    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="lightning-llm-serve", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
