"""nmt-serve as clients meet it: a real server process on a free local port, the shipped model
(an attention model) and a tiny Cho model behind it, LibreTranslate's own Python client, and
the answers held to what nmt-translate and nmt-score give for the same lines and settings."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from nmt.config import DataConfig, TokenizerConfig
from nmt.data import load_corpus
from tests.test_docs import ROOT

RELEASE = ROOT / "data" / "models" / "bible-es-en"
LISTENING = re.compile(r"on (http://[\d.]+:\d+)/")
JSON = {"content-type": "application/json"}


class ServerProcess:
    """``python -m nmt.commands.serve ARGS port=0`` until it stops; ``url`` once /health says ready."""

    def __init__(self, args: list[str], tmp: Path, timeout: float = 120):
        self.log = tmp / f"serve-{time.monotonic_ns()}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nmt.commands.serve", *args, "port=0", "threads=1", "device=cpu"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "w"),  # noqa: SIM115 - the server's lifetime
            env=env,
            cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        self.url = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            match = LISTENING.search(self.log.read_text())
            if match:
                self.url = match.group(1)
                try:
                    if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"nmt-serve did not become ready:\n{self.log.read_text()}")

    def text(self) -> str:
        return self.log.read_text()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_run):
    """es->en: the shipped model (beam 5 by default); de->en: a tiny Cho model (no attention)."""
    models = f"models=[{{ckpt: {RELEASE}, source: es, target: en}}, {{ckpt: {trained_run}, source: de, target: en}}]"
    process = ServerProcess([models, "max_lines=50", "max_chars=4000", "max_queue_lines=60"], tmp_path_factory.mktemp("serve"))
    yield process
    assert process.stop() == 0, process.text()


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    """The first 50 Bible test sentences (the shipped model's held-out split)."""
    data = DataConfig(tokenizer=TokenizerConfig())
    return list(load_corpus(data, splits=("test",))["test"]["src"][:50])


def post(server: ServerProcess, path: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=120, **kwargs)


def cli(module: str, args: list[str], stdin: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"nmt.commands.{module}", *args, "device=cpu"],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=True,
    )
    return done.stdout


def test_libretranslate_client(server, sentences):
    from libretranslatepy import LibreTranslateAPI

    client = LibreTranslateAPI(server.url)
    expected = cli("translate", [f"ckpt={RELEASE}", "decode=beam"], sentences[0] + "\n").rstrip("\n")
    assert client.translate(sentences[0], "es", "en") == expected
    languages = {row["code"]: row for row in client.languages()}
    assert languages["es"]["targets"] == ["en"] and languages["es"]["name"] == "Spanish"
    assert set(languages) == {"es", "de", "en"}


def test_libretranslate_lists_forms_and_alternatives(server, sentences):
    lines = sentences[:3]
    nbest = cli("translate", [f"ckpt={RELEASE}", "decode=beam", "nbest=3"], "\n".join(lines) + "\n")
    rows = [row.split("\t") for row in nbest.splitlines()]
    best = [r[4] for r in rows if r[1] == "0"]
    answer = post(server, "/translate", json={"q": lines, "source": "es", "target": "en", "format": "text"}).json()
    assert answer == {"translatedText": best}
    form = post(server, "/translate", data={"q": lines[0], "source": "es", "target": "en", "alternatives": "2"}).json()
    assert form["translatedText"] == best[0]
    assert form["alternatives"] == [r[4] for r in rows if r[0] == "0" and r[1] in ("1", "2")]
    two_lines = post(server, "/translate", json={"q": f"{lines[0]}\n{lines[1]}", "source": "es", "target": "en"}).json()
    assert two_lines["translatedText"] == f"{best[0]}\n{best[1]}"  # a text of several lines: line by line


def test_native_translate_equals_nmt_translate(server, sentences, tmp_path):
    lines = [*sentences[3:6], ""]
    alignments = tmp_path / "alignments.jsonl"
    args = [f"ckpt={RELEASE}", "decode=beam", "decode.beam_size=4", "nbest=2", f"alignments={alignments}"]
    rows = [row.split("\t") for row in cli("translate", args, "\n".join(lines) + "\n").splitlines()]
    body = {"lines": lines, "source": "es", "target": "en", "beam_size": 4, "nbest": 2, "alignments": True}
    answer = post(server, "/v1/translate", json=body).json()
    assert answer["model"] == "es-en" and answer["beam_size"] == 4
    expected_alignments = [json.loads(line) for line in alignments.read_text().splitlines()]
    for i, line in enumerate(answer["lines"]):
        mine = [r for r in rows if int(r[0]) == i]
        assert [n["translation"] for n in line["nbest"]] == [r[4] for r in mine]
        assert [round(n["normalized_score"], 4) for n in line["nbest"]] == [float(r[2]) for r in mine]
        assert [round(n["score"], 4) for n in line["nbest"]] == [float(r[3]) for r in mine]
        assert line["translation"] == mine[0][4]
        assert line["alignment"] == expected_alignments[i]
    assert answer["lines"][3]["translation"] == "" and answer["lines"][3]["alignment"]["weights"] == []


def test_native_score_equals_nmt_score(server, sentences):
    pairs = [(sentences[0], "And God said."), (sentences[1], "In the beginning."), ("", "x")]
    printed = cli("score", [f"ckpt={RELEASE}"], "".join(f"{s}\t{t}\n" for s, t in pairs)).splitlines()
    answer = post(server, "/v1/score", json={"pairs": pairs, "source": "es", "target": "en"}).json()
    assert len(answer["scores"]) == len(printed) == len(pairs)
    for row, line in zip(answer["scores"], printed):
        expected = float(line.split("\t")[0])
        assert (row["log_prob"] is None) if math.isnan(expected) else row["log_prob"] == pytest.approx(expected, abs=1e-3)
    models = httpx.get(f"{server.url}/v1/models").json()["models"]
    assert {m["id"]: m["alignments"] for m in models} == {"es-en": True, "de-en": False}


def test_concurrent_requests_each_get_their_own_answer(server, sentences):
    """50 requests at once, batched together by the server: each answer is its line's, and
    equal to the line translated alone (the search is batch-invariant)."""
    expected = cli("translate", [f"ckpt={RELEASE}", "decode=greedy"], "\n".join(sentences) + "\n").splitlines()

    async def one(client: httpx.AsyncClient, line: str) -> str:
        answer = await client.post("/v1/translate", json={"lines": [line], "source": "es", "target": "en", "beam_size": 1})
        return answer.json()["lines"][0]["translation"]

    async def everyone() -> list[str]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(one(client, line) for line in sentences))

    assert asyncio.run(everyone()) == expected
    assert len(sentences) == 50


@pytest.mark.parametrize(
    "path, request_kwargs, status, message",
    [
        ("/translate", {"content": b'{"q": ', "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        ("/translate", {"json": {"source": "es", "target": "en"}}, 400, "Invalid request: missing q parameter"),
        ("/translate", {"json": {"q": "Hola", "source": "zz", "target": "en"}}, 400, "zz is not supported"),
        ("/translate", {"json": {"q": "Hola", "source": "en", "target": "es"}}, 400, "es->en, de->en"),
        ("/translate", {"json": {"q": "Hola", "source": "es", "target": "en", "format": "html"}}, 400, "html format"),
        ("/translate", {"content": b"q=\xff\xfe&source=es&target=en"}, 400, "not valid UTF-8"),
        ("/translate", {"content": b"q=%FF&source=es&target=en"}, 400, "not valid UTF-8"),
        ("/translate", {"content": b'{"q": "a\\ud800", "source": "es", "target": "en"}', "headers": JSON}, 400, "surrogates"),
        ("/translate", {"content": (b"q" * 1000 for _ in range(200)), "headers": JSON}, 413, "request body over"),
        ("/translate", {"json": {"q": "Hola", "source": 1, "target": "en"}}, 400, "must be language codes"),
        ("/translate", {"json": {"q": ["a"] * 51, "source": "es", "target": "en"}}, 413, "at most 50 (max_lines)"),
        ("/translate", {"json": {"q": "a" * 4001, "source": "es", "target": "en"}}, 413, "at most 4000 (max_chars)"),
        ("/v1/translate", {"json": {"source": "es", "target": "en"}}, 422, "lines: Field required"),
        ("/v1/translate", {"json": {"lines": ["a"], "source": "es", "target": "en", "ckpt": "/etc"}}, 422, "ckpt"),
        ("/v1/translate", {"json": {"lines": ["a"], "source": "es", "target": "en", "beam_size": 11}}, 400, "at most 10"),
        ("/v1/translate", {"json": {"lines": ["a"], "source": "de", "target": "en", "alignments": True}}, 400, "no attention"),
        ("/v1/translate", {"json": {"lines": ["a"], "source": "es", "target": "en", "beam_size": "x"}}, 422, "beam_size"),
        ("/v1/score", {"json": {"pairs": [["a"]], "source": "es", "target": "en"}}, 422, "pairs"),
    ],
)
def test_bad_input_is_one_json_error(server, path, request_kwargs, status, message):
    answer = post(server, path, **request_kwargs)
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ["error"] and message in answer.json()["error"], answer.text
    assert "\n" not in answer.text


def test_a_full_queue_is_503_with_retry_after(server, sentences):
    """40 lines decoding (max_queue_lines=60 counts them until they are answered): 21 more do not fit."""
    busy = {"lines": [s[:90] for s in sentences[:40]], "source": "es", "target": "en", "beam_size": 8}  # max_chars=4000
    more = {"lines": [s[:10] for s in sentences[:21]], "source": "es", "target": "en"}

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            first = asyncio.create_task(client.post("/v1/translate", json=busy))
            await asyncio.sleep(0.3)
            refused = await client.post("/v1/translate", json=more)
            return refused, await first

    refused, first = asyncio.run(scenario())
    assert first.status_code == 200
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "40 lines are waiting (max_queue_lines=60)" in refused.json()["error"]


def test_a_client_that_goes_away_has_its_work_dropped(server, sentences):
    """A long request keeps the worker busy; a second client sends its request and leaves: its job is dropped."""
    body = json.dumps({"lines": sentences[:20], "source": "es", "target": "en", "beam_size": 8}).encode()

    async def scenario() -> int:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            busy = asyncio.create_task(client.post("/v1/translate", content=body, headers={"content-type": "application/json"}))
            await asyncio.sleep(0.3)
            with socket.create_connection(server.url.removeprefix("http://").split(":")) as leaving:
                request = json.dumps({"lines": sentences[40:50], "source": "es", "target": "en", "beam_size": 8}).encode()
                head = "POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                head += f"Content-Length: {len(request)}\r\n\r\n"
                leaving.sendall(head.encode() + request)
                await asyncio.sleep(0.3)
            return (await busy).status_code

    assert asyncio.run(scenario()) == 200
    deadline = time.monotonic() + 30
    while "dropped 1 request(s) whose clients went away" not in server.text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "dropped 1 request(s) whose clients went away" in server.text()
    assert re.search(r"POST /v1/translate 499 lines=10 ms=", server.text())


def test_request_log_has_no_text_and_one_line_per_request(server, sentences):
    post(server, "/translate", json={"q": sentences[7], "source": "es", "target": "en"})
    lines = [line for line in server.text().splitlines() if "POST /translate 200" in line]
    assert lines and re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ POST /translate 200 lines=1 ms=[\d.]+$", lines[-1])
    assert sentences[7] not in server.text()


def test_api_keys_sigterm_drains_and_exits_0(tmp_path, trained_run):
    keys = tmp_path / "keys.txt"
    keys.write_text("secret-1\nsecret-2\n")
    process = ServerProcess(
        [f"ckpt={trained_run}", "source=de", "target=en", f"api_keys={keys}", "max_lines=500", "max_chars=300000"], tmp_path
    )
    try:
        request = {"q": "uno dos", "source": "de", "target": "en"}
        assert post(process, "/translate", json=request).status_code == 403
        assert post(process, "/translate", json={**request, "api_key": "wrong"}).json() == {"error": "Invalid API key"}
        assert post(process, "/translate", json={**request, "api_key": "secret-2"}).status_code == 200
        assert post(process, "/translate", data={**request, "api_key": "secret-1"}).status_code == 200
        assert httpx.get(f"{process.url}/v1/translate").status_code == 405
        assert post(process, "/v1/translate", json={"lines": ["uno"]}).status_code == 403
        assert post(process, "/v1/translate", json={"lines": ["uno"]}, headers={"X-API-Key": "secret-1"}).status_code == 200
        assert httpx.get(f"{process.url}/languages").status_code == 200  # public, as LibreTranslate's
        assert httpx.get(f"{process.url}/v1/models").json()["limits"]["api_key_required"] is True  # the page asks for one
        assert httpx.get(f"{process.url}/health").status_code == 200  # no key: a load balancer's probe
        # A slow request in flight when SIGTERM comes: it is answered, then the server exits 0.
        # (Its log line shows that it took longer than the 0.3 s before the signal, and then some.)
        lines = [" ".join(["uno dos tres"] * 60)] * 300
        slow = {"lines": lines, "beam_size": 10, "api_key": "secret-1"}

        async def drain() -> httpx.Response:
            async with httpx.AsyncClient(base_url=process.url, timeout=120) as client:
                answer = asyncio.create_task(client.post("/v1/translate", json=slow))
                await asyncio.sleep(0.3)
                process.proc.send_signal(signal.SIGTERM)
                return await answer

        answer = asyncio.run(drain())
        assert answer.status_code == 200 and len(answer.json()["lines"]) == 300
        assert process.proc.wait(60) == 0, process.text()
        took = re.search(r"POST /v1/translate 200 lines=300 ms=([\d.]+)", process.text())
        assert took and float(took.group(1)) > 600, process.text()  # it was in flight when the signal came
        assert "nmt-serve: stopped" in process.text()
    finally:
        process.stop()


def test_refused_settings(tmp_path, trained_run):
    def refused(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "nmt.commands.serve", *args], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        return done.stderr

    assert "needs source= and target=" in refused(f"ckpt={trained_run}")
    assert "ckpt= is required" in refused()
    assert "over max_beam_size=3" in refused(f"ckpt={trained_run}", "source=a", "target=b", "max_beam_size=3")
    assert "api_keys=" in refused(f"ckpt={trained_run}", "source=a", "target=b", f"api_keys={tmp_path / 'none.txt'}")
    two = f"models=[{{ckpt: {trained_run}, source: a, target: b}}, {{ckpt: {trained_run}, source: a, target: b}}]"
    assert "a second model for a->b" in refused(two)
    # A model that cannot load stops the server (exit 1, the error last), rather than serving 503s.
    args = [f"ckpt={tmp_path / 'no-run'}", "source=a", "target=b", "port=0"]
    done = subprocess.run([sys.executable, "-m", "nmt.commands.serve", *args], capture_output=True, text=True, cwd=ROOT)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("error: the models could not be loaded") and "no-run" in last, done.stderr
