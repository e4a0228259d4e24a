"""A read-only client of the Docker Engine API, standard library only.

`python -m infra adopt` reads the engine that runs the docker-compose deployment: its
containers, volumes and networks. The engine answers HTTP on a unix socket
(`/var/run/docker.sock`, or `unix://` in DOCKER_HOST), or on `tcp://host:port` without
TLS. Only GET requests are made: nothing on the engine changes. Paths are unversioned,
so the engine answers in its own (newest) API version; the fields read here have had
the same shape since API 1.25.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

DEFAULT_HOST = "unix:///var/run/docker.sock"


class DockerUnavailable(Exception):
    """No engine answers where we looked (the message says where, and what to do)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def resolve_host(flag: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """Where the engine is: `--docker-host`, else DOCKER_HOST, else the default socket."""
    env = os.environ if env is None else env
    return flag or env.get("DOCKER_HOST") or DEFAULT_HOST


class Engine:
    """GET requests to one Docker engine, each answer decoded from JSON."""

    def __init__(self, host: str, timeout: float = 10.0) -> None:
        self.host = host
        self.timeout = timeout
        url = urllib.parse.urlsplit(host)
        if url.scheme == "unix":
            self.socket_path: str | None = url.path
            self.address: tuple[str, int] | None = None
        elif url.scheme in ("tcp", "http"):
            self.socket_path, self.address = None, (url.hostname or "127.0.0.1", url.port or 2375)
        else:
            raise DockerUnavailable(f"Docker host {host!r} is not unix:///path or tcp://host:port (TLS is not "
                                    "supported here: use the engine's unix socket)")

    def _connection(self) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            if not os.path.exists(self.socket_path):
                raise DockerUnavailable(f"there is no Docker engine socket at {self.socket_path} (no Docker "
                                        "daemon runs on this machine, or it listens elsewhere: set DOCKER_HOST "
                                        "or --docker-host unix:///path/to/docker.sock)")
            return _UnixConnection(self.socket_path, self.timeout)
        assert self.address is not None
        return http.client.HTTPConnection(*self.address, timeout=self.timeout)

    def get(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON answer of `GET path?query`. Raises DockerUnavailable."""
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        conn = self._connection()
        try:
            conn.request("GET", target, headers={"Accept": "application/json"})
            response = conn.getresponse()
            body = response.read()
        except OSError as err:
            raise DockerUnavailable(f"the Docker engine at {self.host} does not answer ({err})") from None
        finally:
            conn.close()
        if response.status != 200:
            try:
                message = json.loads(body).get("message", "")
            except (ValueError, AttributeError):
                message = body[:200].decode(errors="replace")
            raise DockerUnavailable(f"the Docker engine at {self.host} answered GET {path} with "
                                    f"{response.status}: {message}")
        return json.loads(body)

    # ---- the four answers adopt reads -------------------------------------------------------------

    def containers(self) -> list[dict[str, Any]]:
        """`GET /containers/json?all=1`: every container, stopped ones too."""
        return list(self.get("/containers/json", {"all": "1"}))

    def inspect(self, container_id: str) -> dict[str, Any]:
        """`GET /containers/{id}/json`: one container's config (environment) and mounts."""
        return dict(self.get(f"/containers/{urllib.parse.quote(container_id, safe='')}/json"))

    def volumes(self) -> list[dict[str, Any]]:
        """`GET /volumes`: every volume (`{"Volumes": [...], "Warnings": [...]}`)."""
        return list(self.get("/volumes").get("Volumes") or [])

    def networks(self) -> list[dict[str, Any]]:
        """`GET /networks`: every network."""
        return list(self.get("/networks"))
