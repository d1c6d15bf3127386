"""`lightning-llm serve`: a live server on a free port, driven by the official `openai` client. Greedy outputs equal
`generate`'s (TextGenerator.complete, what the verb runs), concurrent clients get what sequential ones get while
their tokens are decoded together, bad requests get OpenAI's error body and a 4xx, a client that leaves frees its
row, and the chat page streams a reply in headless Chromium.

The checkpoints are real runs (our format, our SentencePiece tokenizer) whose weights are then drawn at random: a
tiny model trained for seconds answers every prompt with newlines, random weights make every token a choice."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_llm.inference import TextGenerator, chat_template, load_for_inference
from lightning_llm.models.scoring import GenerationSettings

from .browser import find_chromium, launch
from .conftest import TINY, compose_config

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from lightning_llm.inference.server import create_app, serving  # noqa: E402

PROMPTS = [
    "The for statement",
    "A dictionary is",
    "Exceptions",
    "x",
    "The import system searches for modules in a list of places",
    "Lists are mutable sequences",
    "def",
    "A class definition defines a class object",
]


#: conf/model/llama-nano.yaml's differences from gpt.yaml, with grouped-query attention at TINY's two heads
LLAMA = dict(n_kv_head=1, activation="silu", gated=True, norm="rmsnorm", positions="rope", bias=False,
             tie_embeddings=False)  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    """A GPT-2-style checkpoint of a real run and a Llama-style one (RoPE, grouped-query attention) beside it with
    the same tokenizer; context 64, random weights."""
    from lightning_llm.models import get_family
    from lightning_llm.recipe import train

    run = tmp_path_factory.mktemp("serve-gpt")
    overrides = [*TINY, "model.block_size=64", "trainer.max_steps=2", "~callbacks.sample"]
    train(compose_config(overrides, run, cache_dir))
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    llama = get_family("gpt").build({**checkpoint["model_config"], **LLAMA})
    out = {}
    torch.manual_seed(0)
    for name, state in (("gpt", checkpoint["state_dict"]), ("llama-nano", llama.state_dict())):
        state = {f"model.{k}" if name != "gpt" else k: torch.randn(v.shape) * 0.5 for k, v in state.items()}
        out[name] = run / f"{name}.ckpt"
        config = checkpoint["model_config"] if name == "gpt" else llama.config.to_dict()
        torch.save({**checkpoint, "state_dict": state, "model_config": config}, out[name])
    return out


def open_model(path: Path) -> TextGenerator:
    return TextGenerator(*load_for_inference(str(path)))


def generated(generator: TextGenerator, prompt: str, tokens: int, stops=(), temperature=0.0, seed=0):
    """What `lightning-llm generate` answers (its TextGenerator, top_k off as the API has none)."""
    settings = GenerationSettings(max_new_tokens=tokens, temperature=temperature, until=list(stops))
    return generator.complete([prompt], settings, seed)[0]


@pytest.fixture(scope="module")
def gpt(checkpoints) -> TextGenerator:
    return open_model(checkpoints["gpt"])


def client_of(url: str):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_openai_client_gets_what_generate_gives(gpt):
    template = chat_template(None, None)
    with serving(create_app(gpt, "tiny", template)) as url:
        client = client_of(url)
        assert [m.id for m in client.models.list()] == ["tiny"]
        for prompt in PROMPTS[:3]:
            expected = generated(gpt, prompt, 12)
            reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
            assert reply.choices[0].text == expected.output and reply.choices[0].finish_reason == "length"
            assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (expected.prompt_tokens + 1, 12)
            chunks = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0,
                                                    stream=True))  # fmt: skip
            assert "".join(c.choices[0].text for c in chunks) == expected.output and len(chunks) > 3

        full = generated(gpt, PROMPTS[0], 20).output
        stop = full[len(full) // 2 : len(full) // 2 + 3]
        expected = generated(gpt, PROMPTS[0], 20, [stop]).output
        assert expected == full.split(stop)[0]
        reply = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=20, temperature=0, stop=[stop])
        assert (reply.choices[0].text, reply.choices[0].finish_reason) == (expected, "stop")
        chunks = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=20, temperature=0, stop=stop,
                                           stream=True, stream_options={"include_usage": True})  # fmt: skip
        chunks = list(chunks)
        assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
        assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens

        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a list?"}]
        prompt = template.render(messages, {})
        expected = generated(gpt, prompt, 10, template.stops).output
        chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
        assert chat.choices[0].message.content == expected and chat.choices[0].message.role == "assistant"
        stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                                stream=True)  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in stream) == expected

        sampled = [
            client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=12, temperature=1.0, seed=7)
            .choices[0]
            .text
            for _ in range(2)
        ]
        assert sampled[0] == sampled[1] == generated(gpt, PROMPTS[1], 12, temperature=1.0, seed=7).output
        both = client.completions.create(model="tiny", prompt=PROMPTS[:2], max_tokens=6, temperature=0)
        assert [c.text for c in both.choices] == [generated(gpt, p, 6).output for p in PROMPTS[:2]]


@pytest.mark.parametrize("family", ["gpt", "llama-nano"])
def test_concurrent_clients_get_what_sequential_ones_get(family, checkpoints):
    """8 clients at once, prompts of different lengths and lengths of answer, 4 rows: rows end at different steps
    and waiting requests join running ones. Three rounds, to give races a chance."""
    generator = open_model(checkpoints[family])
    app = create_app(generator, "tiny", chat_template(None, None), max_batch_size=4, max_wait_s=0.02)
    requests = [(prompt, 6 + 3 * i) for i, prompt in enumerate(PROMPTS)]
    expected = [generated(generator, prompt, tokens).output for prompt, tokens in requests]
    with serving(app) as url:
        client = client_of(url)

        def ask(request: tuple[str, int], stream: bool) -> str:
            prompt, tokens = request
            reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=tokens, temperature=0,
                                              stream=stream)  # fmt: skip
            return "".join(c.choices[0].text for c in reply) if stream else reply.choices[0].text

        assert [ask(r, False) for r in requests] == expected
        engine = app.state.server.engine
        assert engine.largest_batch == 1
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for round in range(3):
                answers = list(pool.map(ask, requests, [(i + round) % 2 == 0 for i in range(8)]))
                assert answers == expected, round
    assert engine.largest_batch == 4, "the concurrent requests were decoded together"


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(gpt):
    with serving(create_app(gpt, "tiny", chat_template(None, None))) as url:
        post = lambda path, body: httpx.post(f"{url}/v1/{path}", json=body, timeout=30)  # noqa: E731
        good = {"model": "tiny", "prompt": "x", "max_tokens": 2}
        cases = [
            ({**good, "model": "gpt-4"}, 404, "model_not_found"),
            ({**good, "max_tokens": -1}, 400, "greater_than_equal"),
            ({**good, "max_tokens": 0}, 400, "greater_than_equal"),
            ({**good, "max_tokens": 10**6}, 400, "context_length_exceeded"),
            ({**good, "prompt": "word " * 200}, 400, "context_length_exceeded"),
            ({**good, "temperature": 5}, 400, "less_than_equal"),
            ({**good, "logprobs": 2}, 400, "extra_forbidden"),
            ({**good, "n": 3}, 400, "literal_error"),
            ({"model": "tiny"}, 400, "missing"),
        ]
        for body, status, code in cases:
            reply = post("completions", body)
            error = reply.json()["error"]
            assert (reply.status_code, error["code"]) == (status, code), (body, reply.text)
            assert error["type"] == "invalid_request_error" and error["message"]
        bad_json = httpx.post(f"{url}/v1/completions", content=b"{not json", timeout=30,
                              headers={"content-type": "application/json"})  # fmt: skip
        assert bad_json.status_code == 400 and "parse the JSON" in bad_json.json()["error"]["message"]
        reply = post("chat/completions", {"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]})
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "messages.0.role"
        assert httpx.get(f"{url}/v2/nothing").json()["error"]["message"] == "Not Found"
        with pytest.raises(openai.NotFoundError):
            client_of(url).completions.create(model="gpt-4", prompt="x")
        assert post("completions", good).status_code == 200


def test_a_client_that_leaves_frees_its_row(gpt):
    """Steps slowed to 20 ms so that a 50-token answer takes a second: a client that leaves after its first
    chunk (streaming) or while waiting (not streaming) stops its generation within a step or two."""
    app = create_app(gpt, "tiny", chat_template(None, None), max_batch_size=1)
    engine = app.state.server.engine
    step = engine.step
    engine.step = lambda admitted: (time.sleep(0.02), step(admitted))[1]
    body = {"model": "tiny", "prompt": "x", "max_tokens": 50, "temperature": 0}

    def idle_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while engine.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        return not engine.busy

    with serving(app) as url:
        started = time.monotonic()
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=30) as reply:
            next(reply.iter_lines())
        assert idle_within(0.5) and engine.rows == [] and time.monotonic() - started < 0.8
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/completions", json=body, timeout=0.2)
        assert idle_within(0.6)
        reply = httpx.post(f"{url}/v1/completions", json={**body, "max_tokens": 3}, timeout=30)
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3


def test_the_chat_page_streams_a_reply_in_headless_chromium(gpt, tmp_path):
    """Typed into and sent as a person would, in the system's Chromium driven by Playwright."""
    chromium = find_chromium()
    if chromium is None or importlib.util.find_spec("playwright") is None:
        pytest.skip("needs Chromium (apt install chromium) and playwright (the dev extra)")
    from playwright.sync_api import sync_playwright

    template = chat_template(None, None)
    prompt = template.render([{"role": "user", "content": "hello"}], {})
    rest = gpt.model.context_length - len(gpt.lm.frame_prompt(gpt.tokenizer.encode(prompt)))
    expected = generated(gpt, prompt, rest, template.stops)
    errors: list[str] = []
    with serving(create_app(gpt, "tiny", template)) as url, sync_playwright() as playwright:
        browser = launch(playwright, chromium)
        tab = browser.new_page(viewport={"width": 900, "height": 600})
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(url)
        tab.wait_for_function("document.getElementById('model').textContent === 'tiny'")
        tab.fill("#input", "hello")
        tab.press("#input", "Enter")
        tab.wait_for_selector(".assistant[data-done=true]", timeout=60_000)
        reply = tab.eval_on_selector(".assistant", "e => e.textContent")
        tab.screenshot(path=str(tmp_path / "chat.png"))
        browser.close()
    assert errors == [] and reply == expected.output and reply.strip()


@pytest.mark.slow
def test_the_serve_verb(checkpoints, tmp_path):
    """The installed command: a free port, the model's name from its run folder, one-line refusals."""
    command = [sys.executable, "-m", "lightning_llm", "serve", f"model.pretrained={checkpoints['gpt']}", "port=0",
               "log_level=warning"]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = server.stderr.readline()
        url = line.split(" at ")[1].split("/v1")[0]
        name = "gpt"  # the .ckpt's name (a run's checkpoints/last.ckpt: the run folder's)
        assert json.loads(httpx.get(f"{url}/v1/models", timeout=30).text)["data"][0]["id"] == name
        port = url.rsplit(":", 1)[1]
        taken = subprocess.run([*command[:-2], f"port={port}"], capture_output=True, text=True, timeout=120)
        assert taken.returncode == 2 and taken.stderr.strip().endswith("choose another port="), taken.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
    bad = subprocess.run([*command[:-2], "max_batch_size=0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: max_batch_size=0 must be at least 1"


def test_serve_without_its_extra_is_one_line(monkeypatch, capsys):
    from lightning_llm.cli.main import main

    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(["serve", "model.pretrained=anything"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: lightning-llm serve needs FastAPI: pip install 'lightning-llm[serve]'"
    )
