"""nmt-serve's HTTP layer: a FastAPI app over ``nmt.serving`` (the models and the batching
worker) and the library's search. No state between requests: scale out with replicas.

- LibreTranslate's API: ``POST /translate`` (``q`` a string or a list, ``source``, ``target``,
  ``format=text``, ``alternatives``; JSON or form encoded), ``GET /languages``;
- native: ``POST /v1/translate`` (lines, decoding settings within each pair's limits, n-best,
  alignments), ``POST /v1/score``, ``GET /v1/models``, ``GET /health``; the OpenAPI page at /docs;
- ``GET /``: a page to try a model and see its alignments (nmt/static/index.html).

Every error is one JSON object ``{"error": "..."}`` with its status: 400 bad input, 403 no
valid API key, 413 too much text, 422 a field of the wrong type, 503 busy or loading.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from nmt.serving import Job, Pair, QueueFull, Worker

log = logging.getLogger("nmt.serve")
PAGE = Path(__file__).parent / "static" / "index.html"
# Names GET /languages gives the codes it knows (LibreTranslate lists {code, name, targets}).
LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "de": "German", "en": "English", "es": "Spanish", "fi": "Finnish",
    "fr": "French", "hi": "Hindi", "it": "Italian", "ja": "Japanese", "ko": "Korean", "nl": "Dutch",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "tr": "Turkish",
    "uk": "Ukrainian", "zh": "Chinese",
}  # fmt: skip


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers


@dataclass
class Limits:
    max_lines: int = 100  # per request
    max_chars: int = 20000  # per request
    api_keys: frozenset[str] | None = None  # None: no key needed
    log_text: bool = False

    @property
    def max_body_bytes(self) -> int:  # a character outside the BMP: 12 bytes as a JSON escape pair or percent-encoded
        return 12 * self.max_chars + 64 * self.max_lines + 65536


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lines: list[str] = Field(description="one sentence per item; an empty line gives an empty translation")
    source: str | None = Field(None, description="the pair's source language (needed when the server holds several)")
    target: str | None = None
    beam_size: int | None = Field(None, ge=1, description="1: greedy; default: the pair's")
    nbest: int | None = Field(None, ge=1, description="this many alternatives per line (the beam widened to it)")
    length_penalty: float | None = Field(None, ge=0, le=10)
    alignments: bool = Field(False, description="attention models: each line's alignment matrix with its pieces")
    api_key: str | None = None


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pairs: list[tuple[str, str]] = Field(description="[source, target] pairs: log p(target | source) of each")
    source: str | None = None
    target: str | None = None
    api_key: str | None = None


def create_app(worker: Worker, limits: Limits) -> FastAPI:
    """The app over a started (or starting) ``worker``; ``nmt.commands.serve`` runs it under uvicorn."""
    app = FastAPI(title="nmt-serve", description=__doc__.split("\n\n")[0], version="1")
    app.add_middleware(GuardAndLog, limits=limits)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:  # logged by the worker or here, answered as JSON
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error; the server's log has the details"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    async def decode(request: Request, job: Job) -> Any:
        """Queue ``job`` and wait for it; a client that goes away has its job dropped."""
        try:
            future = worker.submit(job)
        except QueueFull as err:
            raise ApiError(503, f"busy: {err}; retry later", {"Retry-After": "1"}) from None
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=0.1)
                if done:
                    if future.exception() is not None:  # logged with its traceback by the worker
                        raise ApiError(500, "internal error while decoding; the server's log has the details")
                    return future.result()
                if await request.is_disconnected():
                    raise ApiError(499, "client closed the request")  # nginx's status for it; nobody reads it
        except BaseException:  # gone, or cancelled: its lines are not decoded if they have not started
            job.cancelled = True
            future.cancel()
            raise

    def pair_for(source: str | None, target: str | None) -> Pair:
        if worker.failed:
            raise ApiError(503, f"the models could not be loaded: {worker.failed}")
        if not worker.ready.is_set():
            raise ApiError(503, "loading the models; GET /health says when they are ready", {"Retry-After": "5"})
        pairs = worker.pairs
        if source is None and target is None and len(pairs) == 1:
            return next(iter(pairs.values()))
        pair = pairs.get(f"{source}-{target}")
        if pair is None:
            have = ", ".join(f"{p.spec.source}->{p.spec.target}" for p in pairs.values())
            if source is not None and source not in {p.spec.source for p in pairs.values()}:
                raise ApiError(400, f"{source} is not supported (this server translates {have})")
            raise ApiError(400, f"{source}->{target} is not supported (this server translates {have})")
        return pair

    def check_key(given: str | None, request: Request) -> None:
        if limits.api_keys is None:
            return
        key = given or request.headers.get("x-api-key") or request.query_params.get("api_key")
        if key not in limits.api_keys:
            raise ApiError(403, "Invalid API key" if key else "an API key is required (api_key= or the X-API-Key header)")

    def check_size(request: Request, lines: list[str], count: int | None = None) -> None:
        """``count`` lines (default: ``lines``) within max_lines, ``lines`` within max_chars, all of them text."""
        count = len(lines) if count is None else count
        request.state.lines, request.state.text = count, lines
        if count > limits.max_lines:
            raise ApiError(413, f"{count} lines in one request; at most {limits.max_lines} (max_lines)")
        for i, line in enumerate(lines):
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as err:  # a lone surrogate, as a JSON escape can carry
                raise ApiError(400, f"line {i}: not text UTF-8 can hold ({err.reason} at character {err.start})") from None
        chars = sum(len(line) for line in lines)
        if chars > limits.max_chars:
            raise ApiError(413, f"{chars} characters in one request; at most {limits.max_chars} (max_chars)")

    def settings(pair: Pair, beam_size: int | None, nbest: int | None, length_penalty: float | None):
        spec = pair.spec
        beam = spec.decode.beam_size if beam_size is None else beam_size
        if beam > spec.max_beam_size:
            raise ApiError(400, f"beam_size={beam}: this server allows at most {spec.max_beam_size} for {pair.key}")
        if nbest is not None and nbest > spec.max_nbest:
            raise ApiError(400, f"nbest={nbest}: this server allows at most {spec.max_nbest} for {pair.key}")
        k = nbest or 1
        beam = max(beam, k)
        penalty = spec.decode.length_penalty if length_penalty is None else length_penalty
        return replace(spec.decode, name="beam" if beam > 1 else "greedy", beam_size=beam, nbest=k, length_penalty=penalty)

    # ------------------------------------------------------------------ LibreTranslate

    @app.post("/translate", summary="LibreTranslate: translate q (a string or a list)")
    async def libre_translate(request: Request) -> JSONResponse:
        body = await read_body(request, limits.max_body_bytes)
        check_key(_text(body.get("api_key")), request)
        q = body.get("q")
        for name in ("q", "source", "target"):
            if body.get(name) in (None, "", []):
                raise ApiError(400, f"Invalid request: missing {name} parameter")
        if not (isinstance(q, str) or (isinstance(q, list) and all(isinstance(item, str) for item in q))):
            raise ApiError(400, "Invalid request: q must be a string or a list of strings")
        text_format = body.get("format") or "text"
        if text_format != "text":
            raise ApiError(400, f"{text_format} format is not supported (only text)")
        source, target = body.get("source"), body.get("target")
        if not isinstance(source, str) or not isinstance(target, str):
            raise ApiError(400, "Invalid request: source and target must be language codes (text)")
        if source == "auto":
            raise ApiError(400, "source=auto: this server does not detect languages; name the source language")
        try:
            alternatives = int(body.get("alternatives") or 0)
        except (TypeError, ValueError):
            raise ApiError(400, "Invalid request: alternatives must be a whole number") from None
        pair = pair_for(source, target)
        texts = [q] if isinstance(q, str) else q
        lines = [line for text in texts for line in text.split("\n")]  # a text of several lines: each one translated
        check_size(request, lines)
        if alternatives < 0 or alternatives >= pair.spec.max_nbest:
            raise ApiError(400, f"alternatives={alternatives}: at least 0 and at most {pair.spec.max_nbest - 1} here")
        decode_settings = settings(pair, None, alternatives + 1 if alternatives else None, None)
        rows = await decode(request, Job(pair, "translate", lines, decode_settings))
        done, alts, start = [], [], 0
        for text in texts:
            n = text.count("\n") + 1
            hyps = [row for row, _ in rows[start : start + n]]
            start += n
            done.append("\n".join(h[0][0] for h in hyps))
            alts.append(["\n".join(h[k][0] if k < len(h) else h[-1][0] for h in hyps) for k in range(1, alternatives + 1)])
        answer: dict[str, Any] = {"translatedText": done[0] if isinstance(q, str) else done}
        if alternatives:
            answer["alternatives"] = alts[0] if isinstance(q, str) else alts
        return JSONResponse(answer)

    @app.get("/languages", summary="LibreTranslate: the languages and their targets")
    async def languages(request: Request) -> JSONResponse:  # public, as LibreTranslate's is
        targets: dict[str, list[str]] = {}
        for pair in worker.pairs.values():
            targets.setdefault(pair.spec.source, []).append(pair.spec.target)
            targets.setdefault(pair.spec.target, [])
        return JSONResponse([{"code": c, "name": LANGUAGE_NAMES.get(c, c), "targets": t} for c, t in targets.items()])

    # ------------------------------------------------------------------ native

    @app.post("/v1/translate", summary="translate lines: n-best, scores and alignments")
    async def translate(request: Request, body: TranslateRequest) -> JSONResponse:
        check_key(body.api_key, request)
        check_size(request, body.lines)
        pair = pair_for(body.source, body.target)
        decode_settings = settings(pair, body.beam_size, body.nbest, body.length_penalty)
        if body.alignments and not pair.has_alignments():
            raise ApiError(400, f"alignments: the model of {pair.key} has no attention (the Cho et al. model reads one vector)")
        rows = await decode(request, Job(pair, "translate", body.lines, decode_settings, alignments=body.alignments))
        out = []
        for hyps, alignment in rows:
            text, best = hyps[0]
            line: dict[str, Any] = {"translation": text, "score": best.score, "normalized_score": best.normalized_score}
            if body.nbest:
                line["nbest"] = [{"translation": t, "score": h.score, "normalized_score": h.normalized_score} for t, h in hyps]
            if body.alignments:
                line["alignment"] = alignment
            out.append(line)
        return JSONResponse({"model": pair.key, "beam_size": decode_settings.beam_size, "lines": out})

    @app.post("/v1/score", summary="log p(target | source) of each pair, as nmt-score")
    async def score(request: Request, body: ScoreRequest) -> JSONResponse:
        check_key(body.api_key, request)
        check_size(request, [side for pair in body.pairs for side in pair], count=len(body.pairs))
        pair = pair_for(body.source, body.target)
        results = await decode(request, Job(pair, "score", [tuple(p) for p in body.pairs]))
        scores = [{"log_prob": None if math.isnan(total) else total, "tokens": n} for total, n in results]
        return JSONResponse({"model": pair.key, "scores": scores})

    @app.get("/v1/models", summary="the language pairs, their models, defaults and limits")
    async def models(request: Request) -> JSONResponse:  # public: the page reads it before it has a key
        pairs = [pair.describe() for pair in worker.pairs.values()]
        limits_ = {
            "max_lines": limits.max_lines,
            "max_chars": limits.max_chars,
            "api_key_required": limits.api_keys is not None,
        }
        return JSONResponse({"ready": worker.ready.is_set(), "models": pairs, "limits": limits_})

    @app.get("/health", summary="200 once the models are loaded, 503 before (or if they failed)")
    async def health() -> JSONResponse:
        if worker.failed:
            return JSONResponse({"status": "failed", "error": worker.failed}, status_code=503)
        if not worker.ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"status": "ready", "models": sorted(worker.pairs)})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return app


class GuardAndLog:
    """Refuses a body over ``limits.max_body_bytes`` before reading it, and logs one line per
    request: method, path, status, lines, milliseconds (and its text with ``log_text``). Plain
    ASGI, so that an endpoint still sees its client disconnect."""

    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [0]
        headers = dict(scope["headers"])
        scope.setdefault("state", {})

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            length = headers.get(b"content-length")
            if length is None and scope["method"] not in ("GET", "HEAD"):  # chunked: read it here, within the limit
                body, receive = await _buffered(receive, self.limits.max_body_bytes)
                length = str(len(body) if body is not None else self.limits.max_body_bytes + 1).encode()
            length = length.decode("latin-1") if length is not None else "0"
            if not length.isdigit() or int(length) > self.limits.max_body_bytes:
                answer = JSONResponse({"error": f"request body over {self.limits.max_body_bytes} bytes"}, 413)
                await answer(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            state = scope["state"]
            text = f" text={json.dumps(state['text'], ensure_ascii=False)}" if self.limits.log_text and "text" in state else ""
            milliseconds = 1000 * (time.perf_counter() - start)
            log.info(
                "%s %s %d lines=%d ms=%.1f%s",
                scope["method"],
                scope["path"],
                status[0] or 500,
                state.get("lines", 0),
                milliseconds,
                text,
            )


async def _buffered(receive, max_bytes: int):
    """Read a body sent without Content-Length (chunked) up to ``max_bytes``: (the body, or None
    if it is longer, and a ``receive`` that replays it)."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
        if size > max_bytes:
            return None, receive
    body, sent = b"".join(chunks), [False]

    async def replay():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def read_body(request: Request, max_bytes: int) -> dict:
    """A LibreTranslate request's fields, from JSON or a form (urlencoded or multipart), as
    LibreTranslate accepts them; 400 for text that is not UTF-8 or not JSON, 413 beyond ``max_bytes``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        return {key: value for key, value in form.multi_items() if isinstance(value, str)}
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise ApiError(413, f"request body over {max_bytes} bytes")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(400, f"the request body is not valid UTF-8 (byte {err.start})") from None
    if kind == "application/json" or (not kind and text.lstrip().startswith("{")):
        try:
            body = json.loads(text) if text.strip() else {}
        except ValueError as err:
            raise ApiError(400, f"Invalid request: the body is not valid JSON ({err})") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid request: the JSON body must be an object with q, source and target")
        return body
    try:
        fields = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError as err:
        raise ApiError(400, f"a form field is not valid UTF-8 once decoded (byte {err.start})") from None
    body: dict[str, Any] = dict(fields)
    questions = [value for key, value in fields if key == "q"]
    if len(questions) > 1:  # q=...&q=...: a list, as LibreTranslate's form parsing gives
        body["q"] = questions
    return body


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
