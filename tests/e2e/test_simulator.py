"""The upstream simulator on loopback, driven by the real openai and anthropic SDKs."""

from __future__ import annotations

import base64
import http.client
import json
import math
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Simulator, http_json

pytestmark = pytest.mark.e2e

MESSAGES: Any = [{"role": "user", "content": "What is the weather like in Paris today?"}]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CLOCK: Any = {"type": "function", "function": {"name": "get_time", "parameters": {}}}


@pytest.fixture
def oai(sim: Simulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{sim.url}/v1", api_key="sk-test", max_retries=0, timeout=10
    ) as client:
        yield client


@pytest.fixture
def ant(sim: Simulator) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=sim.url, api_key="sk-ant-test", max_retries=0, timeout=10
    ) as client:
        yield client


def raw_post(
    url: str, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(
            "POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})}
        )
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# -- OpenAI chat


def test_chat_reply_is_deterministic_with_usage(oai: openai.OpenAI, sim: Simulator) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="any-model", messages=MESSAGES, extra_headers={"X-Request-ID": "rid-7"}
    )
    resp = raw.parse()
    assert raw.headers["x-request-id"] == "rid-7"
    content = resp.choices[0].message.content
    assert content is not None
    assert content.startswith("This is a simulated reply to: What is the weather like in Paris")
    assert len(content.split()) == 16
    assert resp.model == "any-model" and resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (8, 16)
    again = oai.chat.completions.create(model="any-model", messages=MESSAGES)
    assert again.choices[0].message.content == content


def test_chat_max_tokens_cuts_with_length(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=4)
    assert resp.choices[0].message.content == "This is a simulated"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 4


def test_chat_stream_matches_non_stream_and_reports_usage(oai: openai.OpenAI) -> None:
    whole = oai.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
    stream = oai.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    with stream:
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and finish.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_without_usage_has_no_usage_chunk(oai: openai.OpenAI) -> None:
    with oai.chat.completions.create(model="m", messages=MESSAGES, stream=True) as stream:
        chunks = list(stream)
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_call_when_required(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(
        model="m", messages=MESSAGES, tools=[WEATHER, CLOCK], tool_choice="required"
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call: Any = calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "sim"}


def test_tool_call_by_name_or_by_prompt(oai: openai.OpenAI) -> None:
    named: Any = {"type": "function", "function": {"name": "get_time"}}
    resp = oai.chat.completions.create(
        model="m", messages=MESSAGES, tools=[WEATHER, CLOCK], tool_choice=named
    )
    calls: Any = resp.choices[0].message.tool_calls
    assert calls[0].function.name == "get_time" and calls[0].function.arguments == "{}"
    asked: Any = [{"role": "user", "content": "please call tool now"}]
    resp = oai.chat.completions.create(model="m", messages=asked, tools=[WEATHER])
    assert resp.choices[0].finish_reason == "tool_calls"
    plain = oai.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER])
    assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.content


def test_tool_call_streams_arguments_in_pieces(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="m", messages=MESSAGES, tools=[WEATHER], tool_choice="required", stream=True
    )
    with stream:
        chunks = list(stream)
    deltas: Any = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    pieces = [d.function.arguments for d in deltas if d.function.arguments]
    assert len(pieces) >= 2
    assert json.loads("".join(pieces)) == {"city": "sim"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# -- OpenAI completions, embeddings, models, Azure


def test_completions_plain_and_streamed(oai: openai.OpenAI) -> None:
    resp = oai.completions.create(model="m", prompt="Once upon a time", max_tokens=6)
    assert resp.choices[0].text == "This is a simulated reply to:"
    assert resp.choices[0].finish_reason == "length" and resp.object == "text_completion"
    assert resp.usage is not None and resp.usage.prompt_tokens == 4
    stream = oai.completions.create(
        model="m",
        prompt="Once upon a time",
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.startswith("This is a simulated reply to: Once upon a time")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16


def test_embeddings_float_and_base64_agree(oai: openai.OpenAI) -> None:
    # the SDK asks for base64 by default and decodes it; "float" asks for JSON numbers
    decoded_by_sdk = oai.embeddings.create(model="emb", input="alpha")
    floats = oai.embeddings.create(
        model="emb", input=["alpha", "beta", "alpha"], encoding_format="float"
    )
    vectors = [d.embedding for d in floats.data]
    assert [len(v) for v in vectors] == [16, 16, 16]
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(math.sqrt(sum(x * x for x in vectors[0])), 1.0, rel_tol=1e-5)
    assert floats.usage.prompt_tokens == 3 and floats.model == "emb"
    raw = oai.embeddings.create(model="emb", input="alpha", encoding_format="base64")
    encoded: Any = raw.data[0].embedding
    decoded = struct.unpack("<16f", base64.b64decode(encoded))
    assert list(decoded) == vectors[0] == decoded_by_sdk.data[0].embedding


def test_embeddings_dimensions_and_token_ids(oai: openai.OpenAI) -> None:
    resp = oai.embeddings.create(model="emb", input=[[1, 2, 3], [4, 5]], dimensions=64)
    assert [len(d.embedding) for d in resp.data] == [64, 64]
    assert resp.usage.prompt_tokens == 5
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="emb", input="x", dimensions=0)


def test_models_and_health(oai: openai.OpenAI, sim: Simulator) -> None:
    assert "gpt-4o-mini" in {m.id for m in oai.models.list()}
    assert http_json(f"{sim.url}/health") == {"status": "ok"}


def test_azure_deployment_paths(sim: Simulator) -> None:
    with openai.AzureOpenAI(
        azure_endpoint=sim.url,
        api_key="az-key",
        api_version="2024-10-21",
        max_retries=0,
        timeout=10,
    ) as client:
        resp = client.chat.completions.create(model="my-deploy", messages=MESSAGES)
        emb = client.embeddings.create(model="my-deploy", input="x")
    assert resp.choices[0].message.content and len(emb.data[0].embedding) == 16
    last = sim.stats()["last"]
    assert last["path"] == "/openai/deployments/my-deploy/embeddings"
    assert last["headers"]["api-key"] == "az-key"


# -- Anthropic


def test_anthropic_message(ant: anthropic.Anthropic) -> None:
    msg = ant.messages.create(
        model="claude-x", max_tokens=100, system="Be brief.", messages=MESSAGES
    )
    block: Any = msg.content[0]
    assert block.type == "text" and block.text.startswith("This is a simulated reply to: What")
    assert msg.stop_reason == "end_turn" and msg.model == "claude-x"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (10, 16)
    short = ant.messages.create(model="claude-x", max_tokens=3, messages=MESSAGES)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3


def test_anthropic_stream_event_sequence(ant: anthropic.Anthropic) -> None:
    whole: Any = ant.messages.create(model="c", max_tokens=100, messages=MESSAGES).content[0]
    with ant.messages.stream(model="c", max_tokens=100, messages=MESSAGES) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert kinds.count("content_block_delta") == 16
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    final_block: Any = final.content[0]
    assert final_block.text == whole.text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 16


def test_anthropic_raw_stream_has_ping_and_event_lines(sim: Simulator) -> None:
    body = {"model": "c", "max_tokens": 5, "stream": True, "messages": MESSAGES}
    status, headers, raw = raw_post(sim.url, "/v1/messages", body)
    assert status == 200 and headers["content-type"] == "text/event-stream"
    names = [line[7:] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names.count("content_block_delta") == 5


def test_anthropic_tool_use(ant: anthropic.Anthropic) -> None:
    tool: Any = {
        "name": "lookup",
        "description": "d",
        "input_schema": {"type": "object", "properties": {"q": {}}, "required": ["q"]},
    }
    msg = ant.messages.create(
        model="c", max_tokens=50, messages=MESSAGES, tools=[tool], tool_choice={"type": "any"}
    )
    block: Any = msg.content[0]
    assert msg.stop_reason == "tool_use" and block.type == "tool_use"
    assert block.name == "lookup" and block.input == {"q": "sim"}
    with ant.messages.stream(
        model="c", max_tokens=50, messages=MESSAGES, tools=[tool], tool_choice={"type": "any"}
    ) as stream:
        partial = [e.partial_json for e in stream if e.type == "input_json"]
        final: Any = stream.get_final_message()
    assert len([p for p in partial if p]) >= 2
    assert final.content[0].input == {"q": "sim"} and final.stop_reason == "tool_use"


# -- faults


def test_status_fault_in_each_dialect(
    oai: openai.OpenAI, ant: anthropic.Anthropic, sim: Simulator
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        oai.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={"x-sim-fault": "status:500"}
        )
    assert caught.value.status_code == 500
    assert caught.value.type == "server_error"
    sim.configure(fault="status:429")
    with pytest.raises(anthropic.RateLimitError) as limited:
        ant.messages.create(model="c", max_tokens=10, messages=MESSAGES)
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "simulated fault status:429"},
    }
    assert sim.stats()["faults"] == {"status:500": 1, "status:429": 1}


def test_drop_cuts_the_stream_after_n_chunks(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_headers={"x-sim-fault": "drop:3"}
    )
    pieces: list[str] = []
    with stream, pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == "This is a"


def test_reset_and_timeout_faults(sim: Simulator) -> None:
    with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="k", max_retries=0, timeout=0.5) as client:
        with pytest.raises(openai.APIConnectionError) as reset:
            client.chat.completions.create(
                model="m", messages=MESSAGES, extra_headers={"x-sim-fault": "reset"}
            )
        assert not isinstance(reset.value, openai.APITimeoutError)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(
                model="m", messages=MESSAGES, extra_headers={"x-sim-fault": "timeout"}
            )
        assert client.chat.completions.create(model="m", messages=MESSAGES).choices


def test_seeded_fault_rate_replays_after_reset(sim: Simulator) -> None:
    sim.configure(fault="status:503", fault_rate=0.5, seed=11)

    def pattern() -> list[int]:
        body = {"model": "m", "messages": MESSAGES}
        return [raw_post(sim.url, "/v1/chat/completions", body)[0] for _ in range(30)]

    first = pattern()
    assert set(first) == {200, 503}
    sim.configure(seed=11)  # naming the seed again starts the dice over
    assert pattern() == first


# -- knobs, control endpoints, CLI


def test_headers_override_config(oai: openai.OpenAI, sim: Simulator) -> None:
    sim.configure(completion_tokens=5)
    resp = oai.chat.completions.create(model="m", messages=MESSAGES)
    assert resp.usage is not None and resp.usage.completion_tokens == 5
    resp = oai.chat.completions.create(
        model="m", messages=MESSAGES, extra_headers={"x-sim-completion-tokens": "7"}
    )
    assert resp.usage is not None and resp.usage.completion_tokens == 7
    sim.reset()
    resp = oai.chat.completions.create(model="m", messages=MESSAGES)
    assert resp.usage is not None and resp.usage.completion_tokens == 16


def test_latency_and_token_rate_slow_the_answer(oai: openai.OpenAI) -> None:
    started = time.monotonic()
    oai.chat.completions.create(
        model="m", messages=MESSAGES, extra_headers={"x-sim-latency-ms": "300"}
    )
    assert time.monotonic() - started >= 0.29
    started = time.monotonic()
    headers = {"x-sim-tokens-per-s": "50", "x-sim-completion-tokens": "10"}
    with oai.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_headers=headers
    ) as stream:
        list(stream)
    assert time.monotonic() - started >= 0.19


def test_bad_input_gets_clear_errors(sim: Simulator) -> None:
    status, _, body = raw_post(sim.url, "/v1/chat/completions", ["not", "an", "object"])
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
    status, _, body = raw_post(
        sim.url, "/v1/chat/completions", {"messages": []}, {"x-sim-fault": "explode"}
    )
    assert status == 400 and "x-sim" in json.loads(body)["error"]["message"]
    status, _, body = raw_post(sim.url, "/sim/config", {"latency_ms": -1})
    assert status == 400 and "latency_ms" in json.loads(body)["error"]["message"]
    status, _, _ = raw_post(sim.url, "/v1/nowhere", {})
    assert status == 404


def test_stats_show_what_was_sent(oai: openai.OpenAI, sim: Simulator) -> None:
    oai.chat.completions.create(model="m", messages=MESSAGES, temperature=0.5)
    oai.embeddings.create(model="emb", input="x")
    oai.models.list()  # probes are counted but not kept, so "last" stays the model call
    stats = sim.stats()
    assert stats["requests_total"] == 3
    assert stats["by_path"] == {"/v1/chat/completions": 1, "/v1/embeddings": 1, "/v1/models": 1}
    first, last = stats["requests"]
    assert first["body"] == {"model": "m", "messages": MESSAGES, "temperature": 0.5}
    assert first["headers"]["authorization"] == "Bearer sk-test"
    assert last == stats["last"] and last["method"] == "POST"
    assert last["body"] == {"model": "emb", "input": "x", "encoding_format": "base64"}


def test_cli_defaults_and_sigterm() -> None:
    args = [sys.executable, "-m", "aigw.simulator", "--port", "0", "--completion-tokens", "3"]
    proc = Simulator([*args, "--fault", "status:503", "--seed", "5"])
    try:
        assert http_json(f"{proc.url}/sim/config")["fault"] == "status:503"
        status, headers, _ = raw_post(proc.url, "/v1/chat/completions", {"messages": MESSAGES})
        assert status == 503 and headers["retry-after"] == "1"
        proc.configure(fault="none")
        status, _, body = raw_post(proc.url, "/v1/chat/completions", {"messages": MESSAGES})
        assert json.loads(body)["usage"]["completion_tokens"] == 3
    finally:
        assert proc.stop() == 0


def test_cli_rejects_bad_flags() -> None:
    args = [sys.executable, "-m", "aigw.simulator", "--port", "0", "--fault", "boom"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "--fault: fault 'boom': expected none, status:CODE" in done.stderr
