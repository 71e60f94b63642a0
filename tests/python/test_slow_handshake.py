"""Clients must wait for a server whose HTTP/2 handshake is slow.

A loaded machine (CI running many tests on two cores) or a distant server
can take longer than a few hundred milliseconds to send its first HTTP/2
frame. Both clients once set gRPC's min_reconnect_backoff to 100/200 ms,
which gRPC also takes as the time a connection attempt may last: such a
server looked unreachable (Python: UNAVAILABLE "connection attempt timed out
before receiving SETTINGS frame"; reprodctl: exit 3). Here a loopback proxy
holds back the server's first bytes for HOLD_S seconds; the Python client
and reprodctl must both get through it.
"""
import socket
import threading
import time

import pytest

from conftest import Reprodd, run_reprodctl

HOLD_S = 0.8  # well above the old 100/200 ms, well below gRPC's 20 s default


class SlowStartProxy:
    """Forwards 127.0.0.1:port to `upstream`; on every connection the first
    bytes from the server are delivered only HOLD_S seconds after they
    arrive. Bounded: it serves until close()."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.held = 0  # connections whose first server bytes were held back
        self.stopping = threading.Event()
        self.sockets = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src, dst, hold_first):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if hold_first:
                    hold_first = False
                    self.held += 1
                    time.sleep(HOLD_S)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def close(self):
        self.stopping.set()
        self.listener.close()
        self.thread.join(timeout=5)
        for s in self.sockets:
            s.close()


@pytest.fixture
def slow_server(tmp_path):
    server = Reprodd(tmp_path)
    proxy = SlowStartProxy(server.port)
    try:
        yield proxy
    finally:
        proxy.close()
        server.stop()


def test_python_client_waits_for_a_slow_handshake(slow_server, run_ns):
    from reprod_client import Client
    import numpy as np

    start = time.monotonic()
    with Client(slow_server.address, timeout=20) as client:
        with client.open_run(f"{run_ns}/a", framework="torch") as run:
            run.log("forward", {"x": np.arange(4, dtype=np.float32)})
        names = [r.name for r in client.runs()]
    assert f"{run_ns}/a" in names
    assert slow_server.held >= 1, "the proxy never held back a handshake: the test checks nothing"
    assert time.monotonic() - start >= HOLD_S


def test_reprodctl_waits_for_a_slow_handshake(slow_server):
    start = time.monotonic()
    res = run_reprodctl("--server", slow_server.address, "health", timeout=60)
    assert res.code == 0, res
    assert slow_server.held >= 1, "the proxy never held back a handshake: the test checks nothing"
    assert time.monotonic() - start >= HOLD_S
