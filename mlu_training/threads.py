"""How many threads torch uses, and how its OpenMP threads wait: the one place that decides.

Two rules, both measured (issue #14, `bench/under_load.py`):
- OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE) instead of spinning. With any
  other busy process on the machine (the Dagster daemon, a UI, a test run), spinning threads made
  torch 8-14x slower; sleeping ones lose almost nothing when the machine is idle. The variable is
  read once, when torch loads its OpenMP runtime, so it is set when `mlu_training` is imported
  (before any torch import of ours) and by the Makefile for every process.
- A run that shares the machine with other runs by design (the baselines and the experts, which
  `mlu run` and the Dagster queue run side by side) takes its share of the cores, not all of them;
  a run that is alone by design (the base model, LUMoE's sequence) takes every core.
  The count depends on the machine's cores and the settings only, never on the load of the moment:
  the thread count changes the order of float sums (1 and 2 threads give different bits after a
  few training steps), so a load-dependent count would make the same seed give different numbers.
"""

from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"


def sleep_while_waiting() -> None:
    """OMP_WAIT_POLICY=PASSIVE for this process and its children, unless the user chose another."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def cores() -> int:
    """The cores this process may run on (its affinity, which containers and taskset narrow)."""
    return max(1, len(os.sched_getaffinity(0)))


def threads_per_run(parallel_runs: int = 1, threads: int | None = None) -> int:
    """Torch threads for one run among `parallel_runs` that share the machine: its share of the
    cores, at least one. `threads` (MLU_THREADS) overrides the rule."""
    if threads:
        return max(1, int(threads))
    return max(1, cores() // max(1, int(parallel_runs)))


def use_threads(parallel_runs: int = 1, threads: int | None = None) -> int:
    """Set torch's intra-op threads for this run; returns the count (runs log it)."""
    import torch

    n = threads_per_run(parallel_runs, threads)
    torch.set_num_threads(n)
    return n
