"""A loopback stand-in for the Hugging Face hub's HTTP API, enough for ``huggingface_hub.HfFileSystem``:
repo info, tree listing (recursive), paths-info, and resolve with byte ranges. It counts the bytes it
sends for file contents and can fail requests on purpose (429, 503, a connection dropped mid-body)."""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repo: str, folder: Path):
        self.repo, self.folder = repo, folder
        self.sent = 0                 # file-content bytes sent (resolve), partial bodies included
        self.requests: list[tuple[str, str]] = []
        self.auth: set = set()          # Authorization headers seen on file reads
        self.failures: dict[int, str] = {}   # resolve request number (from 1) -> "429", "503" or "drop"
        self.resolves = 0
        self.on_read = None   # called with (path, start, end) before a ranged read is served; True: send nothing
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _json(self, obj, status=200):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET(head=True)

            def do_GET(self, head=False):
                url = urlparse(self.path)
                path = unquote(url.path)
                hub.requests.append((self.command, path))
                api = f"/api/datasets/{hub.repo}"
                res = f"/datasets/{hub.repo}/resolve/"
                if path in (api, f"{api}/revision/main") or path.startswith(f"{api}/revision/"):
                    return self._json({"id": hub.repo, "sha": SHA, "private": False, "gated": False,
                                       "siblings": [{"rfilename": p} for p in hub.files()]})
                if path.startswith(f"{api}/tree/"):
                    sub = path[len(f"{api}/tree/"):].split("/", 1)
                    prefix = sub[1].strip("/") if len(sub) > 1 else ""
                    recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
                    return self._json(hub.tree(prefix, recursive))
                if path.startswith(res):
                    return self._resolve(path[len(res):].split("/", 1)[1], head)
                self._json({"error": "not found"}, 404)

            def do_POST(self):
                url = urlparse(self.path)
                path = unquote(url.path)
                hub.requests.append(("POST", path))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if path.startswith(f"/api/datasets/{hub.repo}/paths-info/"):
                    q = parse_qs(body) if "=" in body and not body.startswith("{") else json.loads(body or "{}")
                    paths = q.get("paths", [])
                    return self._json([hub.entry(p) for p in paths if hub.entry(p)])
                self._json({"error": "not found"}, 404)

            def _resolve(self, rel, head):
                hub.auth.add(self.headers.get("Authorization"))
                f = hub.folder / rel
                if not f.is_file():
                    return self._json({"error": "entry not found"}, 404)
                size = f.stat().st_size
                start, end = 0, size - 1
                rng = self.headers.get("Range")
                if rng:
                    a, _, b = rng.split("=", 1)[1].partition("-")
                    start, end = int(a), min(size - 1, int(b) if b else size - 1)
                if not head and hub.on_read is not None and hub.on_read(rel, start, end + 1):
                    self.close_connection = True
                    return
                with hub.lock:
                    if not head:
                        hub.resolves += 1
                    fail = hub.failures.pop(hub.resolves, None) if not head else None
                if fail in ("429", "503"):
                    return self._json({"error": "try later"}, int(fail))
                with open(f, "rb") as fh:
                    fh.seek(start)
                    body = fh.read(end - start + 1)
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{hashlib.sha1(rel.encode()).hexdigest()}"')
                self.send_header("X-Repo-Commit", SHA)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if head:
                    return
                if fail == "drop":   # half the body, then the connection goes away
                    body = body[:len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)
                with hub.lock:
                    hub.sent += len(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def files(self) -> list[str]:
        return sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file())

    def entry(self, rel: str):
        p = self.folder / rel
        if p.is_file():
            data_id = hashlib.sha1(rel.encode()).hexdigest()
            return {"type": "file", "oid": data_id, "size": p.stat().st_size, "path": rel,
                    "lfs": {"oid": hashlib.sha256(rel.encode()).hexdigest(), "size": p.stat().st_size, "pointerSize": 130}}
        if p.is_dir():
            return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "size": 0, "path": rel}
        return None

    def tree(self, prefix: str, recursive: bool) -> list:
        base = self.folder / prefix if prefix else self.folder
        items = base.rglob("*") if recursive else base.iterdir()
        return [self.entry(p.relative_to(self.folder).as_posix()) for p in sorted(items)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
