"""A TCP proxy on loopback that delays and drops traffic between a client and a broker.

``FlakyProxy(target_port, seed=...)`` listens on an ephemeral port and
forwards every accepted connection to ``127.0.0.1:target_port``.  Traffic
from the client goes through untouched (so requests reach the broker); each
chunk of the broker's answers is first delayed by up to ``max_delay_s``, and
with probability ``drop_rate`` the connection is cut instead of forwarding
it: the broker has done the work, the client never hears of it.  That is
the case an idempotent producer must survive without duplicating records.

``hold_answers = True`` swallows every answer (connections stay open) until
it is set back, e.g. to kill the broker between a write and its answer.
``cuts`` counts the connections cut on purpose; ``stop()`` closes all.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time

__all__ = ["FlakyProxy"]


class FlakyProxy:
    def __init__(self, target_port: int, *, seed: int, drop_rate: float = 0.02, max_delay_s: float = 0.01) -> None:
        self._target = ("127.0.0.1", target_port)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.drop_rate = drop_rate
        self.max_delay_s = max_delay_s
        self.cuts = 0
        self.hold_answers = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="flaky-proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _chance(self) -> tuple[bool, float]:
        with self._rng_lock:
            return self._rng.random() < self.drop_rate, self._rng.random() * self.max_delay_s

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while not self._stopping.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    if sock is client:
                        upstream.sendall(data)
                        continue
                    if self.hold_answers:
                        continue
                    drop, delay = self._chance()
                    if drop:
                        self.cuts += 1
                        return
                    if delay:
                        time.sleep(delay)
                    client.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
                with self._lock:
                    self._sockets.discard(sock)

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
