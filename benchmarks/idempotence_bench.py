"""What the idempotent producer costs: produce throughput and latency with and without it.

Run it as::

    python benchmarks/idempotence_bench.py              # 1,000,000 records per run, 3 rounds: about 1 minute
    python benchmarks/idempotence_bench.py --quick      # 200,000 records, 2 rounds
    python benchmarks/idempotence_bench.py --acks durable

One broker process (``python -m logstore serve``, see ``broker_bench.py``)
serves every run; the client is this process.  Each round runs the produce
phase of ``broker_bench.py`` twice on fresh 8-partition topics, once with
``Producer(idempotent=False)`` and once with the default idempotent
Producer, alternating which goes first so drift in the machine's state
(page cache, CPU frequency, neighbours) does not favour one side.  Records
are keyed, 100-byte values (``peers.VALUE``); MB counts values only.

For each mode the script prints every run and then the median run's
records/s, MB/s and send->ack latency percentiles (p50/p99/max of every
1,000th record), then the ratio idempotent / plain of the medians.  The
target is a ratio of at least 0.90 (idempotence costs at most 10 %).

What the idempotent path adds: one InitProducer call per Producer; per
request, 3 varints on the wire and a sequence counter in the client; on the
broker, a lock, a dict lookup and a 5-entry list check per batch, and the
producer fields in the batch header (which exist either way).  Nothing per
record.

What this benchmark does NOT tell you: the cost of retries (no failures are
injected; see tests/server/test_exactly_once.py for correctness under
failures), or of rebuilding producer state after a crash (bounded by the
log written since the last checkpoint).  Runs on a shared 2-core VM vary by
10-30 %; compare the medians of several rounds, not single runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker_bench import PhaseResult, _cpu_model, _fmt_ms, _load_average, _log, phase_produce, running_broker  # noqa: E402

from logstore.client import Admin  # noqa: E402


def _median_run(runs: list[PhaseResult]) -> PhaseResult:
    rates = sorted(runs, key=lambda r: r.records_per_s)
    return rates[len(rates) // 2]


def _summary(label: str, runs: list[PhaseResult]) -> PhaseResult:
    m = _median_run(runs)
    _log(
        f"  {label:<14} median {m.records_per_s:>11,.0f} records/s  {m.mb_per_s:7.1f} MB/s  "
        f"latency p50 {_fmt_ms(m.percentile_ms(50))} ms  p99 {_fmt_ms(m.percentile_ms(99))} ms  "
        f"max {_fmt_ms(m.percentile_ms(100))} ms   (runs: "
        + ", ".join(f"{r.records_per_s:,.0f}" for r in runs)
        + ")"
    )
    return m


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=None, help="records per run (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of (plain, idempotent) runs (default 3)")
    parser.add_argument("--acks", choices=("leader", "durable"), default="leader")
    parser.add_argument("--quick", action="store_true", help="200,000 records, 2 rounds")
    parser.add_argument("--dir", default=None, help="parent directory for the broker's data (default: tmp)")
    args = parser.parse_args(argv)
    records = args.records or (200_000 if args.quick else 1_000_000)
    rounds = args.rounds or (2 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="logstore-idem-", dir=args.dir) as parent:
        _log(f"machine: {_cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
             f"Python {platform.python_version()}; load average {_load_average()} before the run")
        _log(f"idempotence cost: {records:,} keyed 100-byte records per run, acks={args.acks}, {rounds} rounds")
        plain: list[PhaseResult] = []
        idem: list[PhaseResult] = []
        with running_broker(parent) as broker, Admin(broker.address) as admin:
            for round_no in range(rounds):
                order = (False, True) if round_no % 2 == 0 else (True, False)
                for idempotent in order:
                    topic = f"idem-{round_no}-{'on' if idempotent else 'off'}"
                    result = phase_produce(broker, admin, topic, records, args.acks, idempotent=idempotent)
                    (idem if idempotent else plain).append(result)
                    _log(
                        f"[round {round_no + 1}] {'idempotent' if idempotent else 'plain':<10} "
                        f"{result.records_per_s:>11,.0f} records/s  {result.mb_per_s:7.1f} MB/s  "
                        f"p50 {_fmt_ms(result.percentile_ms(50))} ms  p99 {_fmt_ms(result.percentile_ms(99))} ms"
                    )
        _log("")
        _log("summary (median run of each mode):")
        p = _summary("plain", plain)
        i = _summary("idempotent", idem)
        ratio = i.records_per_s / p.records_per_s
        verdict = "within" if ratio >= 0.90 else "NOT within"
        _log(f"  ratio idempotent / plain: {ratio:.3f} ({verdict} the 10 % target); "
             f"mean of per-round ratios {statistics.mean(a.records_per_s / b.records_per_s for a, b in zip(idem, plain)):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
