"""SIGKILL of a real broker process: every record acknowledged with ACKS_DURABLE is there after restart."""

from __future__ import annotations

import random
import threading
import time

import grpc

from logstore._proto.logstore.v1 import admin_pb2, admin_pb2_grpc, log_pb2, log_pb2_grpc
from logstore.broker.partitioner import partition_for_key

from server_helpers import fetch_range, free_port, kill_process, precord, start_broker_process

ROUNDS = 8
PARTITIONS = 3
PRODUCERS = 2
TOPIC = "durable"


class Producer(threading.Thread):
    """Produces with ACKS_DURABLE until the broker dies, recording every acknowledged record."""

    def __init__(self, address: str, tag: str, seed: int, killing: threading.Event) -> None:
        super().__init__(daemon=True)
        self.killing = killing
        self.address = address
        self.tag = tag
        self.rng = random.Random(seed)
        self.acked: list[tuple[int, int, bytes]] = []  # (partition, offset, value)
        self.failure: BaseException | None = None

    def run(self) -> None:
        seq = 0
        with grpc.insecure_channel(self.address) as channel:
            log = log_pb2_grpc.LogStub(channel)
            while True:
                n = self.rng.randint(1, 5)
                recs = []
                for _ in range(n):
                    value = f"{self.tag}:{seq}:".encode() + b"x" * self.rng.randint(0, 200)
                    recs.append(precord(value, key=f"{self.tag}-{seq % 17}".encode()))
                    seq += 1
                request = log_pb2.ProduceRequest(topic=TOPIC, acks=log_pb2.ACKS_DURABLE, records=recs)
                if self.rng.random() < 0.5:
                    request.partition = self.rng.randrange(PARTITIONS)
                try:
                    resp = log.Produce(request, timeout=5)
                except grpc.RpcError as exc:
                    if not self.killing.is_set():
                        self.failure = exc  # the broker was still up: a real failure
                    return  # the broker is gone: the outcome of this request is unknown
                try:
                    self._record(request, resp)
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    self.failure = exc
                    return

    def _record(self, request: log_pb2.ProduceRequest, resp: log_pb2.ProduceResponse) -> None:
        bases = {p.partition: p.base_offset for p in resp.partitions}
        if request.HasField("partition"):
            assert not resp.record_partitions and list(bases) == [request.partition]
            targets = [request.partition] * len(request.records)
        elif resp.record_partitions:
            targets = list(resp.record_partitions)
        else:
            targets = [resp.partitions[0].partition] * len(request.records)
            if request.records[0].HasField("key"):
                assert targets[0] == partition_for_key(request.records[0].key, PARTITIONS)
        seen: dict[int, int] = {}
        for rec, p in zip(request.records, targets):
            self.acked.append((p, bases[p] + seen.get(p, 0), rec.value))
            seen[p] = seen.get(p, 0) + 1


def _read_all(address: str) -> dict[tuple[int, int], bytes]:
    with grpc.insecure_channel(address) as channel:
        log = log_pb2_grpc.LogStub(channel)
        return {(p, o): r.value for p in range(PARTITIONS) for o, r in fetch_range(log, TOPIC, p)}


def test_acknowledged_durable_records_survive_sigkill(tmp_path):
    """Records acknowledged with ACKS_DURABLE are all at their offsets with their values after each of several SIGKILLs."""
    data_dir = tmp_path / "data"
    rng = random.Random(2024)
    acked: dict[tuple[int, int], bytes] = {}
    port = free_port()
    proc = start_broker_process(data_dir, port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            admin_pb2_grpc.AdminStub(channel).CreateTopic(
                admin_pb2.CreateTopicRequest(topic=TOPIC, partition_count=PARTITIONS), timeout=10
            )
        for round_no in range(ROUNDS):
            address = f"127.0.0.1:{port}"
            killing = threading.Event()
            producers = [Producer(address, f"r{round_no}p{i}", rng.randrange(1 << 30), killing) for i in range(PRODUCERS)]
            for p in producers:
                p.start()
            # Kill at a random moment, once some records were acknowledged.
            deadline = time.monotonic() + 10
            while sum(len(p.acked) for p in producers) < 20 and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.05, 0.6))
            killing.set()
            kill_process(proc)
            for p in producers:
                p.join(10)
                assert not p.is_alive(), "a producer hung after the broker was killed"
                assert p.failure is None, f"producer failed unexpectedly: {p.failure!r}"
            round_acked = [a for p in producers for a in p.acked]
            assert len(round_acked) >= 20, f"round {round_no}: only {len(round_acked)} records acknowledged"
            for partition, offset, value in round_acked:
                assert (partition, offset) not in acked, f"offset {partition}/{offset} acknowledged twice"
                acked[(partition, offset)] = value

            port = free_port()
            proc = start_broker_process(data_dir, port)
            present = _read_all(f"127.0.0.1:{port}")
            lost = {k: v for k, v in acked.items() if present.get(k) != v}
            assert not lost, (
                f"round {round_no}: {len(lost)} of {len(acked)} acknowledged records missing or changed, "
                f"e.g. {sorted(lost.items())[:3]}"
            )
            # Offsets stay contiguous and each value appears once (no duplicated or torn batches).
            for partition in range(PARTITIONS):
                offsets = sorted(o for p, o in present if p == partition)
                assert offsets == list(range(len(offsets)))
            assert len(set(present.values())) == len(present)
    finally:
        kill_process(proc)
