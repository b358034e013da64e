"""nmt-serve under load (issue 30): throughput against offline decoding, and latency.

1. offline: the library decodes the sentences in one process (``nmt.load(...).translate``, as
   nmt-translate does), beam ``--beam``, ``--threads`` threads: sentences/s, start-up excluded;
2. the server (``nmt-serve``, same threads and beam) with batching on, then off: ``--clients``
   concurrent clients each sending one sentence per request (LibreTranslate's POST /translate)
   until every sentence is translated: sentences/s, and whether each answer equals the offline one;
3. latency: short sentences (at most 10 words) one at a time on the idle server; then the
   capacity for an even mix of short and long (at least 40 words) requests, and that mix
   arriving at random (Poisson) at half the capacity: p50 and p95 of each kind.

The load generator (httpx, asyncio) runs in this process, on the same machine as the server.
JSON lines, then a summary with the issue's targets: batched >= 70 % of offline and >= 5x
unbatched; short requests' p95 under load <= 3x their idle median.

    python scripts/bench_serve.py --out docs/results/DATE-cpu-serve/bench.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import JsonLines, common_fields  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def start_server(ckpt: str, threads: int, batching: bool, beam: int, log: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    args = [f"ckpt={ckpt}", "source=es", "target=en", "port=0", f"threads={threads}", f"batching={str(batching).lower()}"]
    args += [f"decode.beam_size={beam}", "max_queue_lines=100000", f"log_file={log}"]
    stderr = open(log.with_suffix(".stderr"), "w")  # noqa: SIM115 - the server's lifetime
    proc = subprocess.Popen([sys.executable, "-m", "nmt.commands.serve", *args], stderr=stderr, env=env, cwd=ROOT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        match = re.search(r"on (http://[\d.]+:\d+)/", log.with_suffix(".stderr").read_text())
        if match:
            try:
                if httpx.get(f"{match.group(1)}/health", timeout=5).status_code == 200:
                    return proc, match.group(1)
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"bench_serve: the server did not start:\n{log.with_suffix('.stderr').read_text()}")


async def translate(client: httpx.AsyncClient, line: str) -> tuple[str, float]:
    start = time.perf_counter()
    answer = await client.post("/translate", json={"q": line, "source": "es", "target": "en"})
    answer.raise_for_status()
    return answer.json()["translatedText"], time.perf_counter() - start


async def closed_loop(url: str, lines: list[str], clients: int) -> tuple[list[str], float]:
    """``clients`` clients, each sending its next sentence as soon as its last one is answered."""
    results: list[str] = [""] * len(lines)
    todo = iter(range(len(lines)))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in todo:
            results[i], _ = await translate(client, lines[i])

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        return results, time.perf_counter() - start


async def open_loop(url: str, mix: list[tuple[str, str]], rate: float, seconds: float, seed: int) -> dict[str, list[float]]:
    """Requests arriving at random (exponential gaps, ``rate`` per second) for ``seconds``; latency by kind."""
    rng, latencies, tasks = random.Random(seed), {"short": [], "long": []}, []

    async def one(client: httpx.AsyncClient, kind: str, line: str) -> None:
        latencies[kind].append((await translate(client, line))[1])

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=512)) as client:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            kind, line = rng.choice(mix)
            tasks.append(asyncio.create_task(one(client, kind, line)))
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--ckpt", default=str(ROOT / "data" / "models" / "bible-es-en"), help="a release, run or checkpoint (es->en)"
    )
    parser.add_argument("--sentences", type=int, default=320, help="test sentences for the throughput runs")
    parser.add_argument("--unbatched-sentences", type=int, default=96, help="... for the run without batching (slow)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="of the offline decoder and of the server")
    parser.add_argument("--latency-seconds", type=float, default=60.0, help="duration of the loaded latency run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/bench-serve", help="server logs")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args()
    out, work = JsonLines(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    import torch

    import nmt
    from nmt.config import DataConfig
    from nmt.data import load_corpus

    test = load_corpus(DataConfig(), splits=("test",))["test"]
    sources = list(test["src"])
    lines = sources[: args.sentences]
    torch.set_num_threads(args.threads)
    model = nmt.load(args.ckpt, device="cpu")
    model.translate(lines[:4], beam_size=args.beam)  # warm-up
    start = time.perf_counter()
    offline = model.translate(lines, beam_size=args.beam)
    offline_seconds = time.perf_counter() - start
    del model
    cpu = torch.device("cpu")
    base = {**common_fields("bench_serve", cpu), "ckpt": args.ckpt, "beam": args.beam, "threads": args.threads}
    offline_rate = len(lines) / offline_seconds
    out.emit(
        {
            **base,
            "run": "offline",
            "sentences": len(lines),
            "seconds": round(offline_seconds, 2),
            "sentences_per_s": round(offline_rate, 2),
        }
    )

    rates = {}
    for batching, n in ((True, len(lines)), (False, min(args.unbatched_sentences, len(lines)))):
        proc, url = start_server(args.ckpt, args.threads, batching, args.beam, work / f"serve-batching-{batching}.log")
        try:
            asyncio.run(closed_loop(url, lines[:4], 4))  # warm-up
            answers, seconds = asyncio.run(closed_loop(url, lines[:n], args.clients))
            rates[batching] = n / seconds
            same = sum(a == b for a, b in zip(answers, offline[:n])) / n
            run = {"run": "server", "batching": batching, "clients": args.clients, "sentences": n, "seconds": round(seconds, 2)}
            out.emit({**base, **run, "sentences_per_s": round(rates[batching], 2), "same_as_offline": round(same, 4)})
            if batching:  # latency on this server: idle, then under half its capacity for the mix
                latency = measure_latency(url, sources, args, out, base)
        finally:
            proc.terminate()
            proc.wait(60)
    batched_over_offline = rates[True] / offline_rate
    batched_over_unbatched = rates[True] / rates[False]
    p95_ratio = latency["loaded_short_ms"]["p95"] / latency["idle_short_ms"]["p50"]
    out.emit(
        {
            **common_fields("bench_serve_summary", cpu),
            "batched_over_offline": round(batched_over_offline, 3),
            "target_batched_over_offline": 0.7,
            "met_batched_over_offline": batched_over_offline >= 0.7,
            "batched_over_unbatched": round(batched_over_unbatched, 2),
            "target_batched_over_unbatched": 5.0,
            "met_batched_over_unbatched": batched_over_unbatched >= 5.0,
            "short_p95_loaded_over_idle_p50": round(p95_ratio, 2),
            "target_short_p95_ratio": 3.0,
            "met_short_p95_ratio": p95_ratio <= 3.0,
        }
    )


def measure_latency(url: str, sources: list[str], args, out: JsonLines, base: dict) -> dict:
    """Short sentences alone on the idle server; the mix's capacity (closed loop, ``--clients``);
    then short and long requests in equal numbers, arriving at random at half that capacity."""
    words = [len(s.split()) for s in sources]
    short = [s for s, w in zip(sources, words) if w <= 10]
    long = [s for s, w in zip(sources, words) if w >= 40]
    idle = [asyncio.run(_one(url, line)) for line in short[:30]]
    rng = random.Random(args.seed)
    mix = [("short", line) for line in short] + [("long", rng.choice(long)) for _ in short]
    sample = rng.sample(mix, min(len(mix), 6 * args.clients))
    _, seconds = asyncio.run(closed_loop(url, [line for _, line in sample], args.clients))
    capacity = len(sample) / seconds
    loaded = asyncio.run(open_loop(url, mix, capacity / 2, args.latency_seconds, args.seed))
    row = {"run": "latency", "short_words_max": 10, "long_words_min": 40, "mix_capacity_requests_per_s": round(capacity, 2)}
    row["idle_short_ms"] = {
        "n": len(idle),
        "p50": round(1000 * statistics.median(idle), 1),
        "p95": round(1000 * percentile(idle, 95), 1),
    }
    row["load_requests_per_s"] = round(capacity / 2, 2)
    for kind, values in loaded.items():
        row[f"loaded_{kind}_ms"] = {
            "n": len(values),
            "p50": round(1000 * statistics.median(values), 1),
            "p95": round(1000 * percentile(values, 95), 1),
        }
    out.emit({**base, **row})
    return row


async def _one(url: str, line: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        return (await translate(client, line))[1]


if __name__ == "__main__":
    main()
