"""HTTP endpoints of version history: ``/api/docs/<name>/versions...``.

Reading needs read access to the document, naming and restoring a writable
token (403 ``read-only token``); an unknown document or version is 404, and
with history off every endpoint but the list answers 404 ``history is off``.
Names are percent-encoded as everywhere (``a%2Fb``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import tornado.web

from ..core.errors import DocumentUnavailable, NotFound
from ..core.history import VersionMeta, check_label
from ..core.textdiff import diff_ops, unified
from ..server.history import History
from .api import _ApiHandler
from .clients import client_ip

__all__ = [
    "VersionDataHandler",
    "VersionDiffHandler",
    "VersionHandler",
    "VersionRestoreHandler",
    "VersionsHandler",
    "history_routes",
]

MAX_BODY = 64 << 10  # a JSON body of a history request
DEFAULT_PAGE, MAX_PAGE = 100, 1000


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def version_json(meta: VersionMeta) -> dict[str, Any]:
    """A version as the API shows it: times in ISO 8601 (UTC)."""
    data = {"kind": meta.kind, **meta.to_json()}
    for key in ("created", "first_change", "last_change"):
        data[key] = _iso(data[key])
    return data


class _HistoryHandler(_ApiHandler):
    """Authorizes like the document API; ``POST``/``PATCH`` need a writable token."""

    async def prepare(self) -> None:
        self.hub.quotas.api.charge(client_ip(self))
        await self._authorize()
        limit = MAX_BODY if self.request.method in ("POST", "PATCH") else 0
        self.request.connection.set_max_body_size(limit)  # type: ignore[union-attr]

    async def _authorize(self) -> None:
        write = self.request.method in ("POST", "PATCH")
        self.doc_name = await self._permit(self.path_args[0], write=write)

    async def _document(self) -> History:
        """The hub's history, once the document is known to exist (else 404)."""
        history = self.hub.history
        if history is None:
            raise NotFound("history is off")
        if not await self.hub.exists(self.doc_name):
            raise NotFound("no such document")
        return history

    async def _meta(self, history: History, raw: str) -> VersionMeta:
        meta = await history.get(self.doc_name, _version_id(raw))
        if meta is None:
            raise NotFound("no such version")
        return meta

    async def _text(self, history: History, id: int) -> str:
        found = await history.read(self.doc_name, id)
        if found is None:
            raise NotFound("no such version")
        return found[1]

    def _json_body(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise tornado.web.HTTPError(400, "body is not JSON") from None
        if not isinstance(value, dict):
            raise tornado.web.HTTPError(400, "body must be a JSON object")
        return value

    def _label(self, body: dict[str, Any]) -> str | None:
        try:
            return check_label(body.get("label"))
        except ValueError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None

    def _send_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(value, ensure_ascii=False))


def _version_id(raw: str) -> int:
    if not raw.isdigit() or not 0 < len(raw) < 16 or int(raw) < 1:
        raise tornado.web.HTTPError(400, "version id must be a positive integer")
    return int(raw)


class VersionsHandler(_HistoryHandler):
    """``GET /versions[?limit=N&before=ID&named=1]`` (newest first), ``POST`` names now."""

    async def get(self, name: str) -> None:
        if self.hub.history is None:
            return self._send_json({"enabled": False, "versions": [], "next": None})
        history = await self._document()
        raw_limit = self.get_query_argument("limit", str(DEFAULT_PAGE))
        raw_before = self.get_query_argument("before", None)
        named = self.get_query_argument("named", "") in ("1", "true")
        if not raw_limit.isdigit() or int(raw_limit) < 1:
            raise tornado.web.HTTPError(400, "limit must be a positive integer")
        limit = min(int(raw_limit), MAX_PAGE)
        before = _version_id(raw_before) if raw_before is not None else None
        found = [
            m
            for m in await history.versions(self.doc_name)
            if (before is None or m.id < before) and (not named or m.label is not None)
        ]
        page, more = found[:limit], len(found) > limit
        after = page[-1].id if more and page else None
        if after is not None:
            link = f"{self.request.path}?limit={limit}&before={after}" + (
                "&named=1" if named else ""
            )
            self.set_header("Link", f'<{link}>; rel="next"')
        pending = history.pending(self.doc_name)
        if pending is not None:
            pending = {**pending, "since": _iso(pending["since"])}
        self._send_json(
            {
                "enabled": True,
                "versions": [version_json(m) for m in page],
                "next": after,
                "pending": pending,
            }
        )

    async def post(self, name: str) -> None:
        await self._document()
        label = self._label(self._json_body())
        if label is None:
            raise tornado.web.HTTPError(400, "a named version needs a label")
        try:
            meta = await self.hub.name_version(self.doc_name, label, self.permission.user)
        except OSError:
            raise DocumentUnavailable("the version could not be stored") from None
        self._send_json(version_json(meta), 201)


class VersionHandler(_HistoryHandler):
    """``GET /versions/<id>`` (metadata), ``PATCH`` ``{"label": "..." | null}``."""

    async def get(self, name: str, raw: str) -> None:
        meta = await self._meta(await self._document(), raw)
        self._send_json(version_json(meta))

    async def patch(self, name: str, raw: str) -> None:
        history = await self._document()
        body = self._json_body()
        if "label" not in body:
            raise tornado.web.HTTPError(400, 'body must be {"label": "..."} or {"label": null}')
        label = self._label(body)
        meta = await history.label(self.doc_name, _version_id(raw), label)
        if meta is None:
            raise NotFound("no such version")
        self._send_json(version_json(meta))


class VersionDataHandler(_HistoryHandler):
    """``GET /versions/<id>/text`` (plain text) and ``/update`` (the Yjs state, binary)."""

    async def get(self, name: str, raw: str, what: str) -> None:
        history = await self._document()
        found = await history.read(self.doc_name, _version_id(raw))
        if found is None:
            raise NotFound("no such version")
        state, text = found
        data = text.encode() if what == "text" else state
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        self.set_header("ETag", etag)
        self.set_header("Cache-Control", "private, no-cache")
        if what == "text":
            self.set_header("Content-Type", "text/plain; charset=utf-8")
        else:
            self.set_header("Content-Type", "application/octet-stream")
        if etag in self.request.headers.get("If-None-Match", ""):
            self.set_status(304)
            self.finish()
            return
        self.finish(data)

    def compute_etag(self) -> str | None:
        return None  # set above, from the content


class VersionDiffHandler(_HistoryHandler):
    """``GET /versions/<a>/diff?to=<b>|current&format=json|unified``."""

    async def get(self, name: str, raw: str) -> None:
        history = await self._document()
        a = _version_id(raw)
        to = self.get_query_argument("to", "current")
        form = self.get_query_argument("format", "json")
        if form not in ("json", "unified"):
            raise tornado.web.HTTPError(400, "format must be json or unified")
        old = await self._text(history, a)
        if to == "current":
            current = await self.hub.get_text(self.doc_name)
            new = current if current is not None else ""
            target: int | str = "current"
        else:
            target = _version_id(to)
            new = await self._text(history, target)
        if form == "unified":
            label = self.doc_name
            out = await self.hub.offload(unified, old, new, f"a/{label}@{a}", f"b/{label}@{target}")
            self.set_header("Content-Type", "text/x-diff; charset=utf-8")
            self.finish(out.encode())
            return
        ops = await self.hub.offload(diff_ops, old, new)
        added, removed = _op_counts(ops)
        self._send_json(
            {
                "from": a,
                "to": target,
                "added": added,
                "removed": removed,
                "ops": [[op, text] for op, text in ops],
            }
        )


def _op_counts(ops: list[tuple[int, str]]) -> tuple[int, int]:
    added = sum(len(t) for op, t in ops if op == 1)
    removed = sum(len(t) for op, t in ops if op == -1)
    return added, removed


class VersionRestoreHandler(_HistoryHandler):
    """``POST /versions/<id>/restore``: the version's text becomes the current text, live."""

    async def post(self, name: str, raw: str) -> None:
        await self._document()
        user = self.permission.user
        try:
            done = await self.hub.restore(
                self.doc_name, _version_id(raw), user or "api", user, client_ip(self)
            )
        except OSError:
            raise DocumentUnavailable("the current text could not be kept as a version") from None
        self._send_json(
            {
                "restored_from": done.restored_from,
                "before": version_json(done.before) if done.before else None,
                "version": version_json(done.version) if done.version else None,
                "changed": done.changed,
            }
        )


def history_routes(prefix: str, api: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """The history endpoints; mount them before ``/api/docs/(.+)/text`` and ``(.+)``."""
    docs = rf"{prefix}/api/docs/(.+)/versions"
    return [
        (docs, VersionsHandler, api),
        (rf"{docs}/([^/]+)", VersionHandler, api),
        (rf"{docs}/([^/]+)/(text|update)", VersionDataHandler, api),
        (rf"{docs}/([^/]+)/diff", VersionDiffHandler, api),
        (rf"{docs}/([^/]+)/restore", VersionRestoreHandler, api),
    ]
