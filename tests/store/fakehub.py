"""A Hub-like HTTP server on 127.0.0.1 that speaks the two calls the Hub store makes.

* ``GET /api/models/<repo>/revision/<rev>`` (model info): answers the scripted ``statuses`` first
  (then 200) with ``{"id", "sha", "siblings": [{"rfilename", "size"}]}``: the sizes it *declares*
  are ``declared[name]`` when given, else the true length of ``files[name]``. Another revision
  is a 404 ``RevisionNotFound``, unless ``answer_any_revision`` (a server answering for the
  wrong commit).
* ``GET /<repo>/resolve/<rev>/<name>`` (download): answers the scripted ``download_statuses``
  first, then the file's bytes plus ``extra_bytes`` more (a server lying about sizes), sent in
  1 MiB writes; with ``content_length=False`` no Content-Length is sent (the body ends when the
  connection closes), so only a client counting bytes can notice the lie; with ``gzip_bomb`` the
  file plus ``extra_bytes`` arrive gzip-compressed (``Content-Encoding: gzip``), a few hundred
  KiB on the wire that inflate past the declared size.

It records every path asked for, the file downloads started, and how many body bytes each
download managed to write before the client hung up.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

SHA = "abc1234def" * 4  # a commit sha; tests also ask for it by its short form "abc1234"
_WRITE = 1 << 20


class FakeHub:
    def __init__(
        self,
        statuses: list[int] | None = None,
        *,
        repo: str = "owner/model",
        sha: str = SHA,
        files: dict[str, bytes] | None = None,
        declared: dict[str, int] | None = None,
        extra_bytes: int = 0,
        content_length: bool = True,
        download_statuses: list[int] | None = None,
        answer_any_revision: bool = False,
        gzip_bomb: bool = False,
    ) -> None:
        self.statuses, self.download_statuses = list(statuses or []), list(download_statuses or [])
        self.repo, self.sha, self.files = repo, sha, dict(files or {})
        self.declared, self.extra_bytes = dict(declared or {}), extra_bytes
        self.content_length = content_length
        self.answer_any_revision = answer_any_revision
        self.gzip_bomb = gzip_bomb
        self.compressed: dict[str, bytes] = {}
        self.paths: list[str] = []
        self.downloads: list[str] = []
        self.sent: dict[str, int] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                hub.paths.append(self.path)
                path = unquote(urlsplit(self.path).path)
                resolve = f"/{hub.repo}/resolve/"
                if path.startswith(resolve):
                    self._download(path[len(resolve) :].split("/", 1))
                else:
                    self._info(path.rsplit("/revision/", 1)[-1])

            def _json(self, status: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                if status == 404:
                    self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _info(self, revision: str) -> None:
                status = hub.statuses.pop(0) if hub.statuses else 200
                if status != 200:
                    return self._json(status, {"error": "scripted"})
                if not hub.sha.startswith(revision) and not hub.answer_any_revision:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RevisionNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                siblings = [
                    {"rfilename": name, "size": hub.declared.get(name, len(data))}
                    for name, data in hub.files.items()
                ] + [
                    {"rfilename": name, "size": size}
                    for name, size in hub.declared.items()
                    if name not in hub.files
                ]
                self._json(200, {"id": hub.repo, "sha": hub.sha, "siblings": siblings})

            def _download(self, parts: list[str]) -> None:
                status = hub.download_statuses.pop(0) if hub.download_statuses else 200
                if status != 200:
                    return self._json(status, {"error": "scripted"})
                if len(parts) != 2 or parts[0] != hub.sha or parts[1] not in hub.files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                name = parts[1]
                hub.downloads.append(name)
                data = hub.files[name]
                total = len(data) + hub.extra_bytes
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if hub.gzip_bomb:  # a small body that inflates to the file plus extra_bytes
                    if name not in hub.compressed:
                        inflated = data + b"\0" * hub.extra_bytes
                        hub.compressed[name] = gzip.compress(inflated, compresslevel=1)
                    data = hub.compressed[name]
                    total = len(data)
                    self.send_header("Content-Encoding", "gzip")
                if hub.content_length:
                    self.send_header("Content-Length", str(total))
                else:
                    self.close_connection = True
                self.end_headers()
                hub.sent[name] = 0
                try:
                    for start in range(0, total, _WRITE):
                        end = min(start + _WRITE, total)
                        chunk = data[start:end]
                        chunk += b"\0" * (end - start - len(chunk))
                        self.wfile.write(chunk)
                        hub.sent[name] += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up: what it refused to read is never sent

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @classmethod
    def serving(cls, model_dir: Path, **kwargs: object) -> FakeHub:
        """A hub whose commit ``SHA`` holds the files of ``model_dir`` (relative posix names)."""
        files = {
            p.relative_to(model_dir).as_posix(): p.read_bytes()
            for p in sorted(Path(model_dir).rglob("*"))
            if p.is_file()
        }
        return cls(files=files | {".gitattributes": b"*.safetensors filter=lfs\n"}, **kwargs)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
