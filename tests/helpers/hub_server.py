"""A local, in-memory server speaking the part of the Hugging Face Hub API that `huggingface_hub`
uses to create repos, push files and download them (stdlib only).

    with HubServer() as hub:          # listens on 127.0.0.1, a free port
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token}   # for a process that imports huggingface_hub
        ...
        hub.repos["aim-user/model"].files   # path -> bytes, as committed
        hub.commits                         # every commit, with the pushing process's origin

Uploads are answered as "regular" (base64 inside the commit payload), so no LFS or Xet transfer is
needed. Writes need the server's token; a wrong one is answered 401 as the Hub does. The `origin`
of a request is the `origin/...` part of its user agent (set with `HF_HUB_USER_AGENT_ORIGIN`), which
lets a test tell processes apart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"


@dataclass
class Commit:
    repo_id: str
    oid: str
    summary: str
    files: list[str]
    deleted: list[str]
    origin: str | None


@dataclass
class Repo:
    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    head: str = "0" * 40


class HubServer:
    """The local Hub. `start()` / `stop()` (or use it as a context manager)."""

    def __init__(self, user: str = "aim-user", token: str = "hf_local_test_token") -> None:
        self.user = user
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.commits: list[Commit] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, origin)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "HubServer":
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- repo state
    def create_repo(self, repo_id: str, private: bool) -> bool:
        with self._lock:
            if repo_id in self.repos:
                return False
            self.repos[repo_id] = Repo(repo_id, private)
            return True

    def commit(
        self, repo_id: str, summary: str, files: dict[str, bytes], deleted: list[str], origin: str | None
    ) -> Commit:
        with self._lock:
            repo = self.repos[repo_id]
            for path in deleted:
                for name in [p for p in repo.files if p == path or p.startswith(path.rstrip("/") + "/")]:
                    del repo.files[name]
            repo.files.update(files)
            repo.head = hashlib.sha1(f"{repo.head}{summary}{sorted(files)}{len(self.commits)}".encode()).hexdigest()
            commit = Commit(repo_id, repo.head, summary, sorted(files), deleted, origin)
            self.commits.append(commit)
            return commit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: HubServer

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    # ------------------------------------------------------------------------------- helpers
    def _origin(self) -> str | None:
        match = re.search(r"origin/([^;\s]+)", self.headers.get("User-Agent", ""))
        return match.group(1) if match else None

    def _token_state(self) -> str:
        """"valid", "none" or "bad"."""
        auth = self.headers.get("Authorization", "")
        if not auth:
            return "none"
        return "valid" if auth == f"Bearer {self.server_hub.token}" else "bad"

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: Any = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        content_type = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None, head: bool = False) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers, head=head)

    def _repo(self, repo_id: str, write: bool, head: bool = False) -> Repo | None:
        """The repo if this request may use it, else answer the error and return None."""
        token = self._token_state()
        if token == "bad" or (write and token != "valid"):
            self._error(401, "Invalid credentials in Authorization header", head=head)
            return None
        repo = self.server_hub.repos.get(repo_id)
        if repo is None or (repo.private and token != "valid"):
            self._error(404, "Repository not found", "RepoNotFound", head=head)
            return None
        return repo

    # ------------------------------------------------------------------------------- routing
    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        self.server_hub.requests.append((method, path, self._origin()))
        routes = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("POST", rf"/api/models/{_REPO}/preupload/{_REV}", self._preupload),
            ("POST", rf"/api/models/{_REPO}/commit/{_REV}", self._commit),
            ("GET", rf"/api/models/{_REPO}(?:/revision/{_REV})?", self._repo_info),
            ("GET", rf"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.*))?", self._tree),
            ("GET", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", self._resolve),
            ("HEAD", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", self._resolve),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                return handler(query=query, head=method == "HEAD", **{k: v for k, v in match.groupdict().items() if v})
        self._body()
        self._error(404, f"No route for {method} {path}")

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    # ------------------------------------------------------------------------------ endpoints
    def _whoami(self, **_: Any) -> None:
        if self._token_state() != "valid":
            return self._error(401, "Invalid credentials in Authorization header")
        user = self.server_hub.user
        self._send(200, {"type": "user", "name": user, "fullname": user, "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def _create_repo(self, **_: Any) -> None:
        payload = json.loads(self._body() or b"{}")
        if self._token_state() != "valid":
            return self._error(401, "Invalid credentials in Authorization header")
        repo_id = f"{payload.get('organization') or self.server_hub.user}/{payload['name']}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = f"{self.server_hub.url}/{repo_id}"
        if not self.server_hub.create_repo(repo_id, private):
            return self._send(409, {"error": "You already created this model repo", "url": url})
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, **_: Any) -> None:
        content = json.loads(self._body())["content"]
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as err:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []})
        if metadata is not None and not isinstance(metadata, dict):
            return self._send(400, {"errors": [{"message": "the metadata is not a mapping"}], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    def _preupload(self, repo: str, **_: Any) -> None:
        payload = json.loads(self._body())
        if self._repo(repo, write=True) is None:
            return
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
        self._send(200, {"files": files, "commitOid": self.server_hub.repos[repo].head})

    def _commit(self, repo: str, **_: Any) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if self._repo(repo, write=True) is None:
            return
        summary, files, deleted = "", {}, []
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                return self._error(400, f"this local Hub does not support {key!r} operations")
        commit = self.server_hub.commit(repo, summary, files, deleted, self._origin())
        self._send(200, {"commitUrl": f"{self.server_hub.url}/{repo}/commit/{commit.oid}",
                         "commitOid": commit.oid, "pullRequestUrl": None})

    def _repo_info(self, repo: str, **_: Any) -> None:
        info = self._repo(repo, write=False)
        if info is None:
            return
        self._send(200, {"id": repo, "modelId": repo, "sha": info.head, "private": info.private,
                         "siblings": [{"rfilename": p} for p in sorted(info.files)], "tags": [],
                         "downloads": 0, "likes": 0})

    def _tree(self, repo: str, query: dict[str, list[str]], path: str = "", **_: Any) -> None:
        info = self._repo(repo, write=False)
        if info is None:
            return
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries: dict[str, dict[str, Any]] = {}
        for name, data in sorted(info.files.items()):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "path": folder, "oid": "0" * 40, "size": 0})
            if recursive or len(parts) == 1:
                entries[name] = {"type": "file", "path": name, "size": len(data),
                                 "oid": hashlib.sha1(data).hexdigest()}
        self._send(200, list(entries.values()))

    def _resolve(self, repo: str, path: str, head: bool = False, **_: Any) -> None:
        info = self._repo(repo, write=False, head=head)
        if info is None:
            return
        if path not in info.files:
            return self._error(404, f"{path} does not exist", "EntryNotFound", head=head)
        data = info.files[path]
        self._send(200, data, {"X-Repo-Commit": info.head, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, head=head)
