"""``nmt-serve``: translation over HTTP, built on FastAPI and uvicorn (``nmt.server``).

    nmt-serve ckpt=data/models/bible-es-en source=es target=en          # http://127.0.0.1:5000/
    nmt-serve 'models=[{ckpt: models/es-en, source: es, target: en}, {ckpt: models/en-es, source: en, target: es}]'
    curl -s localhost:5000/translate -H 'Content-Type: application/json' -d '{"q": "Hola.", "source": "es", "target": "en"}'

The models load in the background: ``GET /health`` answers 503 until they are ready. SIGTERM
or Ctrl-C stops accepting connections, finishes the requests in flight and exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from pathlib import Path

from nmt.commands.app import hydra_command
from nmt.config import ServeConfig, ServedModel
from nmt.errors import SettingError

log = logging.getLogger(__name__)


def served_models(cfg: ServeConfig) -> list[ServedModel]:
    """The pairs to serve: ``models=``, or ``ckpt=`` with ``source=`` and ``target=``."""
    if cfg.models and cfg.ckpt is not None:
        raise SettingError("give either ckpt= (with source= and target=) or models=, not both")
    if cfg.models:
        specs = list(cfg.models)
    elif cfg.ckpt is not None:
        if not cfg.source or not cfg.target:
            raise SettingError(f"ckpt={cfg.ckpt} needs source= and target=: the language codes clients ask for (e.g. es, en)")
        specs = [ServedModel(cfg.ckpt, cfg.source, cfg.target, cfg.decode, cfg.max_beam_size, cfg.max_nbest)]
    else:
        raise SettingError("ckpt= is required (with source= and target=), or models=[{ckpt: ..., source: ..., target: ...}]")
    seen = set()
    for i, spec in enumerate(specs):
        key = f"{spec.source}-{spec.target}"
        if key in seen:
            raise SettingError(f"models[{i}]: a second model for {spec.source}->{spec.target}; one model per pair")
        seen.add(key)
        if spec.max_nbest > spec.max_beam_size:
            raise SettingError(f"models[{i}] ({key}): max_nbest={spec.max_nbest} is over max_beam_size={spec.max_beam_size}")
        if spec.decode.beam_size > spec.max_beam_size:
            raise SettingError(
                f"models[{i}] ({key}): decode.beam_size={spec.decode.beam_size} is over max_beam_size={spec.max_beam_size}"
            )
    return specs


def read_api_keys(path: str | None) -> frozenset[str] | None:
    if path is None:
        return None
    try:
        keys = frozenset(line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as err:
        raise SettingError(f"api_keys={path}: cannot read it ({err})") from None
    if not keys:
        raise SettingError(f"api_keys={path} holds no key: one key per line")
    return keys


def request_log(path: str | None) -> None:
    """One line per request (``nmt.server``'s log) to ``path`` or stderr, each with its time."""
    handler = logging.FileHandler(path, encoding="utf-8") if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    requests = logging.getLogger("nmt.serve")
    requests.addHandler(handler)
    requests.setLevel(logging.INFO)
    requests.propagate = False


def run_serve(cfg: ServeConfig) -> int:
    specs = served_models(cfg)
    keys = read_api_keys(cfg.api_keys)
    if cfg.max_lines > cfg.max_queue_lines:
        raise SettingError(
            f"max_lines={cfg.max_lines} is over max_queue_lines={cfg.max_queue_lines}: such a request could never be queued"
        )
    try:
        listening = socket.create_server((cfg.host, cfg.port))
    except OSError as err:
        raise SettingError(
            f"host={cfg.host} port={cfg.port}: cannot listen there ({err.strerror}); choose another port="
        ) from None
    import uvicorn

    from nmt.server import Limits, create_app
    from nmt.serving import Pair, Worker

    request_log(cfg.log_file)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start-up chatter; its errors stay
    worker = Worker(
        [Pair(spec) for spec in specs],
        device=cfg.device,
        precision=cfg.precision,
        threads=cfg.threads,
        batching=cfg.batching,
        batch_wait_s=cfg.batch_wait_ms / 1000,
        batch_lines=cfg.batch_lines,
        max_queue_lines=cfg.max_queue_lines,
        max_source_subwords=cfg.max_source_subwords,
    )
    app = create_app(worker, Limits(cfg.max_lines, cfg.max_chars, keys, cfg.log_text))
    host, port = listening.getsockname()[:2]
    pairs = ", ".join(f"{s.source}->{s.target}" for s in specs)
    log.info("nmt-serve: %s on http://%s:%d/ (API: /docs; ready when /health says so)", pairs, host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=60))
    worker.on_failure = lambda: setattr(server, "should_exit", True)  # a model that cannot load: stop, say why
    # uvicorn re-raises the signal that stopped it once it has drained; these make that a clean exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    worker.start()
    server.run(sockets=[listening])
    worker.stop(timeout=60)
    if worker.failed:
        raise SettingError(f"the models could not be loaded: {worker.failed}")
    log.info("nmt-serve: stopped")
    return 0


main = hydra_command("serve", ServeConfig, run_serve)

if __name__ == "__main__":
    main()
