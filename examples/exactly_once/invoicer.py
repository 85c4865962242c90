"""An exactly-once read-process-write service: orders in, invoices out.

    python examples/exactly_once/invoicer.py --broker 127.0.0.1:50051 [--once]

It reads partition P of ``orders`` from its group's committed offset, turns
each order into an invoice, and writes the invoices to partition P of
``invoices`` together with the new committed offset, in one atomic step
(``AtomicWriter.write``, the ``Groups.ProduceAndCommit`` RPC).  Kill it at
any moment (even with SIGKILL) and start it again: it resumes after the last
commit, and ``invoices`` ends up with exactly one invoice per order, in
order.  A second copy started with the same ``--client-id`` fences the
first one, and the ``if_committed`` check stops a zombie that read stale
offsets.

``--once`` stops at the end of the orders instead of waiting for more;
``--chunk`` sets how many orders go into one write.  Each partition of
``orders`` is handled in turn (a real deployment would run one instance per
partition, or spread them over threads).
"""

from __future__ import annotations

import argparse
import json
import sys

from logstore.client import Admin, AtomicWriter, Reader

ORDERS = "orders"
INVOICES = "invoices"
GROUP = "invoicer"


def invoice_for(order: bytes) -> bytes:
    """The processing step: any pure function of the input."""
    data = json.loads(order)
    return json.dumps({"invoice_for": data["order"], "amount_cents": data["qty"] * 250}, sort_keys=True).encode()


def run_partition(broker: str, writer: AtomicWriter, partition: int, chunk: int, follow: bool) -> int:
    """Invoice the orders of one partition from the committed offset; return how many were written."""
    committed = writer.committed(ORDERS, partition)  # -1: nothing committed yet
    position = max(committed, 0)
    written = 0
    with Reader(broker, ORDERS, partitions=[partition], start={partition: position}, follow=follow) as reader:
        for batch in reader.batches():
            for i in range(0, len(batch.records), chunk):
                invoices = [invoice_for(r.value) for r in batch.records[i : i + chunk]]
                end = position + len(invoices)
                # The output and the input position, both or neither; only if nobody moved the position.
                writer.write(INVOICES, partition, invoices, commit={(ORDERS, partition): end},
                             if_committed={(ORDERS, partition): committed})
                committed = position = end
                written += len(invoices)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="127.0.0.1:50051")
    parser.add_argument("--client-id", default="invoicer-0")
    parser.add_argument("--chunk", type=int, default=20)
    parser.add_argument("--once", action="store_true", help="stop at the end of the orders")
    args = parser.parse_args(argv)
    partitions = Admin(args.broker).describe_topic(ORDERS).partition_count
    with AtomicWriter(args.broker, group=GROUP, client_id=args.client_id) as writer:
        total = sum(run_partition(args.broker, writer, p, args.chunk, not args.once) for p in range(partitions))
    print(f"invoiced {total} order(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
