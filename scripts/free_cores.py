"""How many threads a small model should train with here: one per physical core that is free.

    OMP_NUM_THREADS=$(python scripts/free_cores.py)          # what scripts/demo.sh does
    python scripts/free_cores.py --why                       # the number, and why

PyTorch's default takes every logical CPU. Two threads on a core that share it with SMT, or
that other work keeps busy, wait for each other: on this project's 2-core machine with one
core busy, model=small trained at 1 015 target tokens/s with two threads and 2 013 with one
(docs/training.md). So: the physical cores this process may use (logical CPUs that share a
core count once), less those other work keeps busy over one second (Linux: /proc/stat).
"""

from __future__ import annotations

import os
import sys
import time


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int]) -> int:
    """The physical cores among the logical ``cpus`` (/proc/cpuinfo), or their number where unknown."""
    try:
        blocks = open("/proc/cpuinfo", encoding="utf-8").read().split("\n\n")
    except OSError:
        return len(cpus)
    core_of = {}
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        if "processor" in fields:
            core_of[int(fields["processor"])] = (fields.get("physical id"), fields.get("core id", fields["processor"]))
    found = {core_of[cpu] for cpu in cpus if cpu in core_of}
    return len(found) or len(cpus)


def busy_cpus(cpus: list[int], seconds: float = 1.0) -> float:
    """How many of the logical ``cpus`` other processes keep busy, measured over ``seconds``
    (/proc/stat's per-CPU lines; 0 where unknown)."""

    def totals() -> tuple[int, int]:
        idle = total = 0
        with open("/proc/stat", encoding="utf-8") as stat:
            for line in stat:
                name, *values = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    fields = [int(value) for value in values]
                    idle, total = idle + fields[3] + fields[4], total + sum(fields)  # idle + iowait, all
        return idle, total

    try:
        idle_before, total_before = totals()
        time.sleep(seconds)
        idle_after, total_after = totals()
    except (OSError, ValueError, IndexError):
        return 0.0
    return (1 - (idle_after - idle_before) / max(1, total_after - total_before)) * len(cpus)


def main() -> None:
    cpus = usable_cpus()
    cores = physical_cores(cpus)
    logical_per_core = max(1, len(cpus) // cores)
    busy = min(cores, round(busy_cpus(cpus) / logical_per_core))
    threads = max(1, cores - busy)
    if "--why" in sys.argv[1:]:
        print(threads, f"{cores} physical core(s) for this process, {busy} kept busy by other work")
    else:
        print(threads)


if __name__ == "__main__":
    main()
