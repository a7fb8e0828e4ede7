"""The verifier's transport (`HttpFetcher` on libcurl, under `LogClient`): what it sends, kept-alive
connections per thread and per process, redirects, proxies, status codes, size caps and
HTTPS certificate checks. Hostile logs are tests/attacks/test_attacks.py's business."""

from __future__ import annotations

import http.client
import os
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.certs import make_pki
from tests.support import start_server, write_key
from verifier.client.fetch import NotFound
from verifier.client.http import USER_AGENT, HttpFetcher
from verifier.client.log import LogClient
from verifier.errors import TransportError
from verifier.protocol.note import Signer
from verifier.protocol.trust import KeyTrust

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                   "ALL_PROXY", "no_proxy", "NO_PROXY")


@dataclass(frozen=True)
class Seen:
    """One request as a server saw it."""

    port: int             # the client's port: one per connection
    target: str           # the request target (absolute-form through a proxy)
    headers: dict[str, str]


@dataclass(frozen=True)
class Route:
    status: int = 200
    body: bytes = b"hello"
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _Server

    def do_GET(self) -> None:
        self.server.seen.append(Seen(self.client_address[1], self.path, dict(self.headers)))
        route = self.server.route(self.path)
        self.send_response(route.status)
        for name, value in route.headers.items():
            self.send_header(name, value)
        if route.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(route.body), route.body))
            return
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        self.wfile.write(route.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def route(self, target: str) -> Route:
        return self.routes.get(target, Route(404, b"not found\n"))

    def ports(self) -> set[int]:
        return {s.port for s in self.seen}


class _Proxy(_Server):
    """A forward proxy for plain HTTP: records each request, then relays it."""

    def route(self, target: str) -> Route:
        url = urllib.parse.urlsplit(target)
        conn = http.client.HTTPConnection(url.netloc, timeout=5)
        try:
            conn.request("GET", url.path)
            resp = conn.getresponse()
            return Route(resp.status, resp.read())
        finally:
            conn.close()


def _serve(server: _Server) -> Iterator[_Server]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def origin() -> Iterator[_Server]:
    yield from _serve(_Server())


@pytest.fixture
def proxy() -> Iterator[_Server]:
    yield from _serve(_Proxy())


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_requests_carry_the_user_agent_and_refuse_compression(origin: _Server) -> None:
    origin.routes["/log/checkpoint"] = Route(body=b"note")
    assert LogClient(origin.url + "/log/").fetch("checkpoint", 100) == b"note"
    [seen] = origin.seen
    assert seen.target == "/log/checkpoint"
    assert seen.headers["User-Agent"] == USER_AGENT
    assert seen.headers["Accept-Encoding"] == "identity"


def test_each_thread_keeps_its_connection_alive(origin: _Server) -> None:
    paths = [f"tile/0/{n:03d}" for n in range(40)]
    for path in paths:
        origin.routes["/" + path] = Route(body=path.encode())
    client = LogClient(origin.url)
    assert [client.fetch(path, 100) for path in paths[:10]] == [p.encode() for p in paths[:10]]
    assert len(origin.ports()) == 1

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda path: client.fetch(path, 100), paths))

    assert got == [p.encode() for p in paths]
    assert len(origin.ports()) <= 4  # the first connection serves one of the threads


def test_copy_has_the_settings_and_class_but_connections_of_its_own(origin: _Server) -> None:
    class Special(LogClient):
        pass

    origin.routes["/checkpoint"] = Route()
    client = Special(origin.url, timeout=3.0, deadline=7.0, retries=1, backoff=0.5)
    client.fetch("checkpoint", 100)
    twin = client.copy()
    twin.fetch("checkpoint", 100)

    assert type(twin) is Special
    assert isinstance(twin.fetcher, HttpFetcher) and twin.fetcher is not client.fetcher
    settings = (twin.fetcher.base_url, twin.fetcher.timeout, twin.fetcher.deadline,
                twin.fetcher.retries, twin.fetcher.backoff)
    assert settings == (origin.url.rstrip("/") + "/", 3.0, 7.0, 1, 0.5)
    assert len(origin.ports()) == 2


def test_forked_child_never_uses_the_parents_connections(origin: _Server) -> None:
    origin.routes["/checkpoint"] = Route()
    client = LogClient(origin.url)
    client.fetch("checkpoint", 100)
    [parent_port] = origin.ports()

    pid = os.fork()
    if pid == 0:  # the child: its own client and the parent's, both on new connections
        try:
            client.copy().fetch("checkpoint", 100)
            client.fetch("checkpoint", 100)
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    child_ports = [s.port for s in origin.seen[1:]]
    assert len(child_ports) == 2 and parent_port not in child_ports
    client.fetch("checkpoint", 100)
    assert origin.seen[-1].port == parent_port  # still alive, still the parent's


def test_redirects_are_followed_to_http_only_and_not_forever(origin: _Server,
                                                             tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"a local file")
    origin.routes["/old"] = Route(302, b"", {"Location": "/new"})
    origin.routes["/new"] = Route(body=b"moved")
    origin.routes["/loop"] = Route(302, b"", {"Location": "/loop"})
    origin.routes["/file"] = Route(302, b"", {"Location": secret.as_uri()})
    client = LogClient(origin.url, retries=0)

    assert client.fetch("old", 100) == b"moved"
    with pytest.raises(TransportError, match="redirects"):
        client.fetch("loop", 100)
    assert sum(s.target == "/loop" for s in origin.seen) == 6  # the request and 5 redirects
    with pytest.raises(TransportError) as raised:
        client.fetch("file", 100)
    assert "a local file" not in str(raised.value)


def test_statuses(origin: _Server) -> None:
    origin.routes["/busy"] = Route(503, b"later")
    origin.routes["/secret"] = Route(403, b"no")
    client = LogClient(origin.url, retries=2, backoff=0.01)

    with pytest.raises(NotFound, match="404 not found"):
        client.fetch("missing", 100)
    with pytest.raises(TransportError, match="after 3 attempts: HTTP 503"):
        client.fetch("busy", 100)
    with pytest.raises(TransportError, match="HTTP 403 Forbidden"):
        client.fetch("secret", 100)
    assert [s.target for s in origin.seen] == ["/missing"] + ["/busy"] * 3 + ["/secret"]


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "streamed"])
def test_responses_are_capped_at_the_limit(origin: _Server, chunked: bool) -> None:
    origin.routes["/tile"] = Route(body=bytes(1000), chunked=chunked)
    client = LogClient(origin.url, retries=2)

    assert client.fetch("tile", 1000) == bytes(1000)
    with pytest.raises(TransportError, match="exceeds the limit of 999 bytes"):
        client.fetch("tile", 999)
    assert len(origin.seen) == 2  # not retried
    assert client.fetch("tile", 1000) == bytes(1000)  # the handle still works


def test_proxy_from_the_environment(origin: _Server, proxy: _Server,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    origin.routes["/checkpoint"] = Route(body=b"via proxy")
    monkeypatch.setenv("http_proxy", proxy.url)
    assert LogClient(origin.url).fetch("checkpoint", 100) == b"via proxy"
    assert [s.target for s in proxy.seen] == [origin.url + "/checkpoint"]

    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert LogClient(origin.url).fetch("checkpoint", 100) == b"via proxy"
    assert len(proxy.seen) == 1 and len(origin.seen) == 2


def test_https_log_is_verified_with_the_default_trust_store(
        database_url: str, log_signer: Signer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pki = make_pki(tmp_path / "pki")
    server = start_server(database_url, write_key(tmp_path / "log.key", log_signer), tmp_path,
                          scheme="https", extra=["--policy", "open", "--tls-cert",
                                                 str(pki.server.cert), "--tls-key",
                                                 str(pki.server.key)])
    try:
        # The system's CAs do not include the test CA.
        with pytest.raises(TransportError, match="certificate"):
            LogClient(server.url, retries=0).fetch("checkpoint", 1000)
        # Python's SSL_CERT_FILE says which CAs to trust, as it did with the ssl module.
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
        checkpoint, _ = LogClient(server.url, retries=0).checkpoint(KeyTrust(log_signer.verifier()))
        assert checkpoint.size == 0
        # The certificate is for 127.0.0.1, not for localhost.
        other_name = server.url.replace("127.0.0.1", "localhost")
        with pytest.raises(TransportError):
            LogClient(other_name, retries=0).fetch("checkpoint", 1000)
    finally:
        server.stop()
