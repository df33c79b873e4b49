"""A real HTTP JSON API on 127.0.0.1 for the ETL tests: paginates four ways, wants a bearer
token, answers 503 and 429 (with Retry-After) on chosen requests, and `/slow` only after a while."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOKEN = "Bearer s3cret-token-value"


def item(i: int) -> dict:
    return {"id": i, "name": f"item {i}", "price": round(i * 1.5, 2), "tags": {"even": i % 2 == 0}}


class ApiServer:
    def __init__(self, items: int = 25):
        self.items = [item(i) for i in range(1, items + 1)]
        self.hits: Counter = Counter()
        self.failures: dict[str, list[int]] = {}  # request key -> statuses to answer first
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail(self, key: str, *statuses: int) -> None:
        self.failures[key] = list(statuses)

    def _send(self, handler, status: int, body, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def handle(self, handler) -> None:
        parsed = urlparse(handler.path)
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        key = parsed.path + ("?" + parsed.query if parsed.query else "")
        with self.lock:
            self.hits[key] += 1
            pending = self.failures.get(key)
            status = pending.pop(0) if pending else None
        if handler.headers.get("Authorization") != TOKEN:
            return self._send(handler, 401, {"error": "unauthorized"})
        if status == 429:
            return self._send(handler, 429, {"error": "slow down"}, {"Retry-After": "1"})
        if status:
            return self._send(handler, status, {"error": "unavailable"})
        if parsed.path == "/slow":
            time.sleep(float(query.get("seconds", 3)))
            return self._send(handler, 200, self.items)
        if parsed.path == "/broken":
            return self._send(handler, 500, {"error": "always broken"})
        limit = int(query.get("limit", 10))
        if parsed.path == "/pages":
            start = (int(query["page"]) - 1) * limit
            return self._send(handler, 200, {"data": self.items[start:start + limit]})
        if parsed.path == "/offset":
            start = int(query["offset"])
            return self._send(handler, 200, self.items[start:start + limit])
        if parsed.path == "/cursor":
            start = int(query.get("cursor", 0))
            nxt = start + limit if start + limit < len(self.items) else None
            return self._send(handler, 200, {"results": self.items[start:start + limit],
                                             "meta": {"next": str(nxt) if nxt else None}})
        if parsed.path == "/link":
            page = int(query.get("page", 1))
            start = (page - 1) * limit
            headers = {}
            if start + limit < len(self.items):
                headers["Link"] = f'<{self.url}/link?page={page + 1}&limit={limit}>; rel="next"'
            return self._send(handler, 200, self.items[start:start + limit], headers)
        return self._send(handler, 404, {"error": "no such path"})
