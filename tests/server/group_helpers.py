"""A consumer-group member driven through the generated Groups stub alone, for the tests.

``RawMember`` is what a client in any language does with plain stubs: it
opens a Consume stream, sends a Join, and reads responses on a thread; the
test decides when to ack, nack or extend.  Nothing of logstore's client
library is used, so these tests check the wire contract itself.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import grpc

from logstore._proto.logstore.v1 import groups_pb2 as g
from logstore._proto.logstore.v1 import groups_pb2_grpc

_STOP = object()


@dataclass
class Got:
    """One delivered record as the member saw it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    delivery_id: int
    attempt: int


def ids(*delivery_ids: int) -> g.DeliveryIds:
    return g.DeliveryIds(ids=list(delivery_ids))


def id_range(first: int, end: int) -> g.DeliveryIds:
    return g.DeliveryIds(ranges=[g.DeliveryIdRange(first_id=first, end_id=end)])


def join_request(group: str, topics: Iterable[str], **options: object) -> g.ConsumeRequest:
    start = options.pop("start", "earliest")
    if start == "earliest":
        position = g.StartPosition(offset_position=g.OFFSET_POSITION_EARLIEST)
    elif start == "latest":
        position = g.StartPosition(offset_position=g.OFFSET_POSITION_LATEST)
    else:
        position = g.StartPosition(timestamp_ms=int(start))  # type: ignore[arg-type]
    return g.ConsumeRequest(join=g.Join(group=group, topics=list(topics), start_position=position, **options))


class RawMember:
    """One Consume stream: a request queue out, a reader thread in."""

    def __init__(
        self,
        channel: grpc.Channel,
        group: str,
        topics: Iterable[str],
        on_delivery: "Callable[[RawMember, list[Got]], None] | None" = None,
        **options: object,
    ) -> None:
        self.stub = groups_pb2_grpc.GroupsStub(channel)
        self._requests: queue.Queue = queue.Queue()
        self._requests.put(join_request(group, topics, **options))
        self.responses: list[g.ConsumeResponse] = []
        self.received: list[Got] = []
        self.pending: dict[int, Got] = {}
        """Delivered and not yet acked/nacked by this member, by delivery id."""
        self.stale: list[tuple[int, int]] = []
        self.errors: list[tuple[int, str]] = []
        self.committed: dict[tuple[str, int], int] = {}
        self.assignment: frozenset[tuple[str, int]] = frozenset()
        self.member_id = ""
        self.status: grpc.StatusCode | None = None
        self.details = ""
        self._cond = threading.Condition()
        self.on_delivery = on_delivery
        self._call = self.stub.Consume(self._iterate())
        self._thread = threading.Thread(target=self._read, daemon=True, name="raw-member")
        self._thread.start()

    def _iterate(self):  # noqa: ANN202
        while True:
            item = self._requests.get()
            if item is _STOP:
                return
            yield item

    def _read(self) -> None:
        try:
            for resp in self._call:
                batch: list[Got] = []
                for d in resp.deliveries:
                    for i, rec in enumerate(d.records):
                        offset = d.offsets[i] if d.offsets else d.base_offset + i
                        got = Got(
                            d.topic, d.partition, offset, rec.key if rec.HasField("key") else None,
                            rec.value, d.first_delivery_id + i, d.attempt,
                        )
                        batch.append(got)
                with self._cond:
                    self.responses.append(resp)
                    self.member_id = resp.member_id
                    self.assignment = frozenset((tp.topic, tp.partition) for tp in resp.assignment)
                    self.received.extend(batch)
                    for got in batch:
                        self.pending[got.delivery_id] = got
                    self.stale.extend((r.first_id, r.end_id) for r in resp.stale.ranges)
                    self.stale.extend((i, i + 1) for i in resp.stale.ids)
                    self.errors.extend((e.code, e.message) for e in resp.errors)
                    for c in resp.committed:
                        self.committed[(c.topic, c.partition)] = c.offset
                    self._cond.notify_all()
                if batch and self.on_delivery is not None:
                    self.on_delivery(self, batch)
            self.status = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self.status = exc.code()
            self.details = exc.details() or ""
        with self._cond:
            self._cond.notify_all()

    # -- sending ----------------------------------------------------------------------------

    def send(self, request: g.ConsumeRequest) -> None:
        self._requests.put(request)

    def ack(self, *delivery_ids: int) -> None:
        with self._cond:
            for i in delivery_ids:
                self.pending.pop(i, None)
        self.send(g.ConsumeRequest(ack=ids(*delivery_ids)))

    def ack_all(self) -> list[Got]:
        """Ack everything pending; return what was acked."""
        with self._cond:
            acked = list(self.pending.values())
            self.pending.clear()
        if acked:
            self.send(g.ConsumeRequest(ack=ids(*(x.delivery_id for x in acked))))
        return acked

    def nack(self, *delivery_ids: int, reason: str = "") -> None:
        with self._cond:
            for i in delivery_ids:
                self.pending.pop(i, None)
        self.send(g.ConsumeRequest(nack=g.Nack(ids=ids(*delivery_ids), reason=reason)))

    def extend(self, extension_ms: int, *delivery_ids: int) -> None:
        self.send(g.ConsumeRequest(extend_deadline=g.ExtendDeadline(ids=ids(*delivery_ids), extension_ms=extension_ms)))

    def heartbeat(self) -> None:
        self.send(g.ConsumeRequest())

    def leave(self) -> None:
        self.send(g.ConsumeRequest(leave=True))

    def half_close(self) -> None:
        self._requests.put(_STOP)

    def cancel(self) -> None:
        """Cut the stream without a goodbye, as a crashed client would."""
        self._call.cancel()

    # -- waiting ----------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[["RawMember"], bool], timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out waiting for {what or predicate}: received={len(self.received)} "
                        f"pending={len(self.pending)} status={self.status} {self.details!r} errors={self.errors}"
                    )
                self._cond.wait(min(remaining, 0.2))

    def wait_ended(self, timeout: float = 20.0) -> grpc.StatusCode:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the Consume stream did not end"
        assert self.status is not None
        return self.status

    def snapshot(self) -> list[Got]:
        with self._cond:
            return list(self.received)


def wait_all(members: list[RawMember], predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``predicate`` (over several members) until true or time out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}: "
                + "; ".join(f"{m.member_id}: got {len(m.received)} status {m.status} {m.details}" for m in members)
            )
        time.sleep(0.01)


@dataclass
class AutoAcker:
    """Acks every delivery as it arrives (from the reader thread)."""

    acked: list[Got] = field(default_factory=list)

    def __call__(self, member: RawMember, batch: list[Got]) -> None:
        self.acked.extend(batch)
        member.ack_all()
