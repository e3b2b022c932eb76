"""A small Hub-compatible HTTP server for tests (stdlib only), bound to 127.0.0.1 on a free port.

It implements exactly the endpoints that the real ``huggingface_hub`` 2.4 client calls to create a model repo,
push a folder (``Trainer.push_to_hub`` -> ``HfApi.upload_folder``) and download it back (``snapshot_download``,
``hf_hub_download``, ``from_pretrained``). Each route names the client function that calls it (read in
``huggingface_hub/{hf_api,_commit_api,_upload_pipeline,lfs,file_download,_snapshot_download}.py``):

==========================================================  ============================================================
``POST /api/repos/create``                                   ``HfApi.create_repo`` (409 when it exists)
``GET  /api/whoami-v2``                                      ``HfApi.whoami``
``POST /api/validate-yaml``                                  ``HfApi._validate_yaml`` (README front matter, before commit)
``POST /api/models/{repo}/preupload/{rev}``                  ``_commit_api._fetch_upload_modes`` (``uploadMode`` per file)
``POST /{repo}.git/info/lfs/objects/batch``                  ``lfs.post_lfs_batch_info`` (upload + verify hrefs)
``PUT  /__lfs/upload/{oid}?sig=..`` (pre-signed, no auth)    ``lfs._upload_single_part``
``POST /__lfs/verify/{oid}``                                 ``lfs.lfs_upload`` (verify step)
``POST /api/models/{repo}/commit/{rev}`` (ndjson)            ``_commit_api._send_commit`` (header/file/lfsFile/deleted*)
``GET  /api/models/{repo}[/revision/{rev}]``                 ``HfApi.model_info`` / ``repo_info`` (``sha``, ``siblings``)
``GET  /api/models/{repo}/tree/{rev}[/{path}]``              ``HfApi.list_repo_tree`` (``snapshot_download``)
``GET  /api/models/{repo}/commits/{rev}``                    ``HfApi.list_repo_commits``
``HEAD|GET /{repo}/resolve/{rev}/{path}``                    ``file_download.get_hf_file_metadata`` / ``http_get``
==========================================================  ============================================================

Every route but the pre-signed LFS PUT answers 401 without ``Authorization: Bearer <known token>``. Errors carry
``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) like the Hub, so the client raises its
typed errors. Unknown routes answer 404 and are recorded in :attr:`HubServer.unhandled` (tests assert it is empty:
the server covers every request the client really made).

Xet: ``huggingface_hub`` routes every file that the server marks ``uploadMode: "lfs"`` through Xet storage when
``hf_xet`` is usable (``HF_HUB_DISABLE_XET`` unset). This server has no Xet CAS, so start it with
``lfs=False`` for Xet-enabled clients: every file is then answered ``"regular"`` and travels base64-encoded inside
the commit. With ``lfs=True`` (default, for ``HF_HUB_DISABLE_XET=1`` clients) binary or large files go through the
git-LFS batch API like on the Hub.

Storage is a temp folder: blobs are content-addressed (sha256), commits are JSON objects whose id is the sha1 of
their content (parent, tree, message), so the history of each branch is kept.

Example:
    >>> server = HubServer(token="hf_test").start()  # doctest: +SKIP
    >>> server.url  # doctest: +SKIP
    'http://127.0.0.1:40123'
    >>> server.kill()  # abrupt: drops open connections, refuses new ones  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".png", ".jpg", ".gguf", ".h5", ".msgpack", ".model")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores text files above 10 MB in LFS
DEFAULT_USER = "user"
_REPO = r"(?P<repo>[\w.\-]+/[\w.\-]+)"
_REV = r"(?P<rev>[^/]+)"


def git_blob_oid(data: bytes) -> str:
    """The git object id (sha1 of ``blob <len>\\0<data>``) of a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    tree: dict[str, dict]  # path -> {"sha256", "size", "lfs"}


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    created_at: str = field(default_factory=_now)


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})
        self.extra = dict(extra or {})


class HubServer:
    """Hub-compatible server on ``127.0.0.1``: see the module docstring for the routes.

    Args:
        token: bearer token(s) accepted; ``tokens`` can be changed at run time (e.g. revoked to simulate an expired
            token).
        lfs: answer ``uploadMode: "lfs"`` for binary/large files (git-LFS path, for ``HF_HUB_DISABLE_XET=1``
            clients); ``False`` answers ``"regular"`` for every file (Xet-enabled clients).
        root: storage folder (a fresh temp folder by default, removed by :meth:`stop`).
    """

    def __init__(self, token: str | tuple[str, ...] = "hf_test_token", *, lfs: bool = True, root: str | None = None):
        self.tokens: set[str] = {token} if isinstance(token, str) else set(token)
        self.lfs = lfs
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="hub-server-"))
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "commits").mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every answered request
        self.unhandled: list[tuple[str, str]] = []
        self._hooks: list[tuple[str, re.Pattern, Callable[[], None] | None]] = []
        self._lock = threading.RLock()
        self._sign_key = secrets.token_bytes(16)
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.killed = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def kill(self) -> None:
        """Stop abruptly: refuse new connections and reset every open one (no answer is sent)."""
        with self._lock:
            if self.killed or self._httpd is None:
                return
            self.killed = True
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd = self._httpd
        httpd.socket.close()  # new connections are refused from now on
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    def stop(self) -> None:
        """Stop (gracefully if still alive) and remove the storage folder when it was created here."""
        if self._httpd is not None and not self.killed:
            self._httpd.shutdown()
            self._httpd.server_close()
            self.killed = True
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def kill_on(self, method: str, path_regex: str) -> None:
        """Kill the server when the next request matching ``method`` and ``path_regex`` arrives (it gets no answer)."""
        self._hooks.append((method.upper(), re.compile(path_regex), None))

    # ------------------------------------------------------------------ storage
    def _blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def _store_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self._blob_path(sha)
        if not path.exists():
            tmp = path.with_suffix(".tmp" + secrets.token_hex(4))
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha

    def _commit(self, oid: str) -> Commit:
        return Commit(**json.loads((self.root / "commits" / f"{oid}.json").read_text()))

    def _write_commit(self, parent: str | None, title: str, message: str, tree: dict[str, dict]) -> Commit:
        body = {"parent": parent, "title": title, "message": message, "date": _now(), "tree": tree}
        oid = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
        commit = Commit(oid=oid, **body)
        (self.root / "commits" / f"{oid}.json").write_text(json.dumps(commit.__dict__))
        return commit

    def _resolve(self, repo_id: str, rev: str) -> Commit:
        repo = self._repo(repo_id)
        rev = unquote(rev)
        if rev in repo.refs:
            return self._commit(repo.refs[rev])
        if re.fullmatch(r"[0-9a-f]{40}", rev) and (self.root / "commits" / f"{rev}.json").exists():
            commit = self._commit(rev)
            if rev in self._ancestry(repo):
                return commit
        raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _ancestry(self, repo: Repo) -> set[str]:
        seen: set[str] = set()
        for head in repo.refs.values():
            oid: str | None = head
            while oid and oid not in seen:
                seen.add(oid)
                oid = self._commit(oid).parent
        return seen

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return self.repos[repo_id]

    # --------------------------------------------- read API for tests (no HTTP)
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """``{path: content}`` of a repo at a revision."""
        with self._lock:
            tree = self._resolve(repo_id, revision).tree
            return {p: self._blob_path(e["sha256"]).read_bytes() for p, e in sorted(tree.items())}

    def file_info(self, repo_id: str, revision: str = "main") -> dict[str, dict]:
        """``{path: {"sha256", "size", "lfs"}}`` of a repo at a revision (``lfs``: stored via the LFS API)."""
        with self._lock:
            return dict(self._resolve(repo_id, revision).tree)

    def history(self, repo_id: str, branch: str = "main") -> list[Commit]:
        """Commits of a branch, newest first."""
        with self._lock:
            repo = self._repo(repo_id)
            out, oid = [], repo.refs.get(branch)
            while oid:
                commit = self._commit(oid)
                out.append(commit)
                oid = commit.parent
            return out

    # ------------------------------------------------------------------ routes
    def _routes(self) -> list[tuple[str, re.Pattern, Callable]]:
        return [
            ("POST", re.compile(r"/api/repos/create"), self._create_repo),
            ("GET", re.compile(r"/api/whoami-v2"), self._whoami),
            ("POST", re.compile(r"/api/validate-yaml"), self._validate_yaml),
            ("POST", re.compile(rf"/api/models/{_REPO}/preupload/{_REV}"), self._preupload),
            ("POST", re.compile(rf"/{_REPO}\.git/info/lfs/objects/batch"), self._lfs_batch),
            ("PUT", re.compile(r"/__lfs/upload/(?P<oid>[0-9a-f]{64})"), self._lfs_put),
            ("POST", re.compile(r"/__lfs/verify/(?P<oid>[0-9a-f]{64})"), self._lfs_verify),
            ("POST", re.compile(rf"/api/models/{_REPO}/commit/{_REV}"), self._commit_route),
            ("GET", re.compile(rf"/api/models/{_REPO}(?:/revision/{_REV})?"), self._model_info),
            ("GET", re.compile(rf"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.+))?"), self._tree),
            ("GET", re.compile(rf"/api/models/{_REPO}/commits/{_REV}"), self._commits),
            ("HEAD", re.compile(rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)"), self._resolve_file),
            ("GET", re.compile(rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)"), self._resolve_file),
        ]

    def _sign(self, oid: str) -> str:
        return hmac.new(self._sign_key, oid.encode(), hashlib.sha256).hexdigest()[:32]

    def _create_repo(self, req: "_Request"):
        body = req.json()
        if body.get("type") not in (None, "model"):
            raise _HubError(400, "This test server only hosts model repos")
        repo_id = f"{body.get('organization') or DEFAULT_USER}/{body['name']}"
        with self._lock:
            if repo_id in self.repos:
                # the Hub answers the repo url with the 409: `create_repo(exist_ok=True)` reads it
                raise _HubError(409, "You already created this model repo", extra={"url": f"{self.url}/{repo_id}"})
            repo = Repo(repo_id, private=body.get("visibility") == "private")
            initial = self._write_commit(None, "initial commit", "", {})
            repo.refs["main"] = initial.oid
            self.repos[repo_id] = repo
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": secrets.token_hex(12)}

    def _whoami(self, req: "_Request"):
        return 200, {"type": "user", "name": DEFAULT_USER, "fullname": "Test User", "orgs": [],
                     "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}}

    def _validate_yaml(self, req: "_Request"):
        import yaml

        content = req.json().get("content", "")
        errors: list[dict] = []
        if content.startswith("---"):
            match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
            if match is None:
                errors.append({"message": "YAML front matter is not closed by '---'"})
            else:
                try:
                    meta = yaml.safe_load(match.group(1)) or {}
                except yaml.YAMLError as exc:
                    errors.append({"message": f"Invalid YAML: {exc}"})
                else:
                    if not isinstance(meta, dict):
                        errors.append({"message": "YAML metadata must be a mapping"})
                    else:
                        for key in ("tags", "datasets"):
                            if key in meta and not (isinstance(meta[key], list) and all(isinstance(t, str) for t in meta[key])):
                                errors.append({"message": f"'{key}' must be a list of strings"})
                        for key in ("library_name", "pipeline_tag", "license"):
                            if key in meta and not isinstance(meta[key], str):
                                errors.append({"message": f"'{key}' must be a string"})
                        base = meta.get("base_model")
                        if base is not None and not (isinstance(base, str) or (isinstance(base, list) and all(isinstance(b, str) for b in base))):
                            errors.append({"message": "'base_model' must be a string or a list of strings"})
        if errors:
            return 400, {"errors": errors, "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def _upload_mode(self, path: str, size: int, sample: bytes) -> str:
        if not self.lfs or size == 0:
            return "regular"
        if path.endswith(LFS_SUFFIXES) or size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
            return "lfs"
        return "regular"

    def _preupload(self, req: "_Request", repo: str, rev: str):
        with self._lock:
            commit = self._resolve(repo, rev)
        files = []
        for f in req.json()["files"]:
            mode = self._upload_mode(f["path"], int(f["size"]), base64.b64decode(f.get("sample", "")))
            entry = commit.tree.get(f["path"])
            oid = None
            if entry is not None:
                oid = entry["sha256"] if mode == "lfs" else git_blob_oid(self._blob_path(entry["sha256"]).read_bytes())
            files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return 200, {"files": files, "commitOid": commit.oid}

    def _lfs_batch(self, req: "_Request", repo: str):
        self._repo(repo)
        body = req.json()
        if body.get("operation") != "upload":
            raise _HubError(400, "only 'upload' batches are supported")
        objects = []
        for obj in body["objects"]:
            oid, size = obj["oid"], int(obj["size"])
            item: dict = {"oid": oid, "size": size, "authenticated": True}
            if not self._blob_path(oid).exists():
                item["actions"] = {
                    "upload": {"href": f"{self.url}/__lfs/upload/{oid}?size={size}&sig={self._sign(oid)}"},
                    "verify": {"href": f"{self.url}/__lfs/verify/{oid}", "header": {}},
                }
            objects.append(item)
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _lfs_put(self, req: "_Request", oid: str):
        if not hmac.compare_digest(req.query.get("sig", [""])[0], self._sign(oid)):
            raise _HubError(403, "Invalid upload signature")
        data = req.body
        if hashlib.sha256(data).hexdigest() != oid or len(data) != int(req.query.get("size", ["-1"])[0]):
            raise _HubError(400, f"Uploaded content does not match oid {oid}")
        self._store_blob(data)
        return 200, b""

    def _lfs_verify(self, req: "_Request", oid: str):
        body = req.json()
        path = self._blob_path(oid)
        if not path.exists() or path.stat().st_size != int(body["size"]) or body["oid"] != oid:
            raise _HubError(404, f"LFS object {oid} not found", "EntryNotFound")
        return 200, {"success": True}

    def _commit_route(self, req: "_Request", repo: str, rev: str):
        branch = unquote(rev)
        lines = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "the first ndjson line must be the commit header")
        header = lines[0]["value"]
        with self._lock:
            repo_obj = self._repo(repo)
            if branch not in repo_obj.refs:
                raise _HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = self._commit(repo_obj.refs[branch])
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                raise _HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(head.tree)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                path = value["path"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _HubError(400, f"unsupported encoding for {path}")
                    data = base64.b64decode(value["content"])
                    tree[path] = {"sha256": self._store_blob(data), "size": len(data), "lfs": False}
                elif key == "lfsFile":
                    oid = value["oid"]
                    blob = self._blob_path(oid)
                    if value.get("algo", "sha256") != "sha256" or not blob.exists():
                        raise _HubError(422, f"LFS file {path} (oid {oid}) was not uploaded")
                    tree[path] = {"sha256": oid, "size": blob.stat().st_size, "lfs": True}
                elif key == "deletedFile":
                    if tree.pop(path, None) is None:
                        raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    for p in [p for p in tree if p.startswith(prefix)]:
                        del tree[p]
                else:
                    raise _HubError(400, f"unknown commit operation {key!r}")
            commit = self._write_commit(head.oid, header.get("summary", ""), header.get("description", ""), tree)
            repo_obj.refs[branch] = commit.oid
        return 200, {"success": True, "commitOid": commit.oid, "commitUrl": f"{self.url}/{repo}/commit/{commit.oid}",
                     "commitMessage": commit.title, "pullRequestUrl": None}

    def _model_info(self, req: "_Request", repo: str, rev: str | None = None):
        with self._lock:
            repo_obj = self._repo(repo)
            commit = self._resolve(repo, rev or "main")
        siblings = []
        for path, e in sorted(commit.tree.items()):
            sib: dict = {"rfilename": path}
            if "blobs" in req.query:
                sib.update(size=e["size"], blobId=self._entry_oid(e))
                if e["lfs"]:
                    sib["lfs"] = {"size": e["size"], "sha256": e["sha256"], "pointerSize": len(lfs_pointer(e["sha256"], e["size"]))}
            siblings.append(sib)
        return 200, {"_id": repo_obj.repo_id, "id": repo_obj.repo_id, "modelId": repo_obj.repo_id,
                     "author": repo_obj.repo_id.split("/")[0], "sha": commit.oid, "lastModified": commit.date,
                     "createdAt": repo_obj.created_at, "private": repo_obj.private, "gated": False, "disabled": False,
                     "tags": [], "siblings": siblings}

    def _entry_oid(self, entry: dict) -> str:
        if entry["lfs"]:
            return git_blob_oid(lfs_pointer(entry["sha256"], entry["size"]))
        return git_blob_oid(self._blob_path(entry["sha256"]).read_bytes())

    def _tree(self, req: "_Request", repo: str, rev: str, path: str | None = None):
        with self._lock:
            commit = self._resolve(repo, rev)
        prefix = (unquote(path).strip("/") + "/") if path else ""
        recursive = req.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        if path and not any(p.startswith(prefix) for p in commit.tree):
            raise _HubError(404, f"Path {path} not found", "EntryNotFound")
        entries, folders = [], set()
        for p, e in sorted(commit.tree.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):  # folders on the way
                folder = prefix + "/".join(parts[:i])
                if folder not in folders and (recursive or i == 1):
                    folders.add(folder)
                    entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0, "path": folder})
            if len(parts) > 1 and not recursive:
                continue
            item = {"type": "file", "oid": self._entry_oid(e), "size": e["size"], "path": p}
            if e["lfs"]:
                item["lfs"] = {"oid": e["sha256"], "size": e["size"], "pointerSize": len(lfs_pointer(e["sha256"], e["size"]))}
            entries.append(item)
        return 200, entries

    def _commits(self, req: "_Request", repo: str, rev: str):
        with self._lock:
            oid: str | None = self._resolve(repo, rev).oid
            out = []
            while oid:
                c = self._commit(oid)
                out.append({"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
                            "authors": [{"user": DEFAULT_USER}]})
                oid = c.parent
        return 200, out

    def _resolve_file(self, req: "_Request", repo: str, rev: str, path: str):
        path = unquote(path)
        with self._lock:
            commit = self._resolve(repo, rev)
        headers = {"X-Repo-Commit": commit.oid}
        entry = commit.tree.get(path)
        if entry is None:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound", headers=headers)
        data = self._blob_path(entry["sha256"]).read_bytes()
        if entry["lfs"]:
            headers.update({"ETag": f'"{entry["sha256"]}"', "X-Linked-Etag": f'"{entry["sha256"]}"',
                            "X-Linked-Size": str(entry["size"])})
        else:
            headers["ETag"] = f'"{git_blob_oid(data)}"'
        headers["Content-Type"] = "application/octet-stream"
        return 200, data, headers


class _Request:
    def __init__(self, handler: "_Handler", body: bytes):
        split = urlsplit(handler.path)
        self.path = split.path
        self.query = parse_qs(split.query, keep_blank_values=True)
        self.body = body
        self.headers = handler.headers

    def json(self):
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as exc:
            raise _HubError(400, f"Invalid JSON body: {exc}") from exc


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def setup(self):
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self):
        with self.hub._lock:
            self.hub._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str):
        hub = self.hub
        try:
            body = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        req = _Request(self, body)
        path = unquote(req.path) if "/resolve/" not in req.path else req.path
        for hook_method, pattern, _ in list(hub._hooks):
            if hook_method == method and pattern.fullmatch(req.path):
                hub._hooks.remove((hook_method, pattern, _))
                hub.kill()
                self.close_connection = True
                return
        status, payload, headers = 404, {"error": "Not Found"}, {}
        try:
            for route_method, pattern, fn in hub._routes():
                match = pattern.fullmatch(path)
                if route_method == method and match:
                    if not req.path.startswith("/__lfs/upload/"):
                        self._check_auth()
                    result = fn(req, **{k: v for k, v in match.groupdict().items()})
                    status, payload = result[0], result[1]
                    headers = result[2] if len(result) > 2 else {}
                    break
            else:
                hub.unhandled.append((method, self.path))
        except _HubError as err:
            status, payload = err.status, {"error": err.message, **err.extra}
            headers = dict(err.headers)
            if err.code:
                headers["X-Error-Code"] = err.code
            headers["X-Error-Message"] = err.message
        except Exception as err:  # a server bug must show as a 500 with its message, not a hang
            status, payload, headers = 500, {"error": f"{type(err).__name__}: {err}"}, {}
        if hub.killed:
            self.close_connection = True
            return
        with hub._lock:
            hub.requests.append((method, self.path, status))
        self._send(method, status, payload, headers)

    def _check_auth(self):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise _HubError(401, "Authorization header is missing: a Bearer token is required")
        if auth[len("Bearer "):] not in self.hub.tokens:
            raise _HubError(401, "Invalid credentials in Authorization header")

    def _send(self, method: str, status: int, payload, headers: dict):
        if isinstance(payload, bytes):
            data = payload
            headers.setdefault("Content-Type", "application/octet-stream")
        else:
            data = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)
        except OSError:
            self.close_connection = True


__all__ = ["HubServer", "git_blob_oid", "lfs_pointer"]
