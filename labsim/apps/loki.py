"""Grafana Loki (image ``grafana/loki``) as an app model: Loki is not installable here (no Debian
or PyPI package), so this model serves on port 3100 the part of its HTTP API that promtail,
Grafana and the lab's checks use:

- ``POST /loki/api/v1/push`` (JSON: ``{"streams": [{"stream": {labels}, "values": [[ns, line]]}]}``);
- ``GET /loki/api/v1/query_range`` and ``/loki/api/v1/query`` for LogQL: a stream selector
  (``=``, ``!=``, ``=~``, ``!~``) with line filters (``|=``, ``!=``, ``|~``, ``!~``), and the metric
  queries ``count_over_time(…[range])`` / ``rate(…)``, optionally under ``sum|count|max|min|avg
  [by (labels)]``: streams, matrix or vector results as Loki shapes them;
- ``GET /loki/api/v1/labels``, ``/loki/api/v1/label/<name>/values``, ``/loki/api/v1/series``;
- ``GET /ready``.

Entries are kept in ``/data/loki/entries.jsonl`` (the chart's storage volume), so they outlive a
restart; entries older than ``limits_config.retention_period`` of ``/etc/loki/loki.yaml`` (the
chart's config Secret) are dropped, as the compactor's retention does.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiohttp import web

from labsim.apps import serve

STORE = Path("data/loki/entries.jsonl")
CONFIG = Path("etc/loki/loki.yaml")
DEFAULT_LIMIT = 100  # Loki's default query limit
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class LogQLError(ValueError):
    pass


def seconds(text: str) -> float:
    parts = re.findall(r"(\d+)(ms|[smhdwy])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise LogQLError(f"not a duration: {text!r}")
    return sum(int(n) * UNITS[u] for n, u in parts)


# -- LogQL ------------------------------------------------------------------------------------------

@dataclass
class LogQuery:
    matchers: list[tuple[str, str, str]]  # (label, op, value)
    filters: list[tuple[str, str]]  # (op, text)

    def selects(self, labels: dict[str, str]) -> bool:
        for name, op, value in self.matchers:
            have = labels.get(name, "")
            ok = {"=": have == value, "!=": have != value, "=~": re.fullmatch(value, have) is not None,
                  "!~": re.fullmatch(value, have) is None}[op]
            if not ok:
                return False
        return True

    def keeps(self, line: str) -> bool:
        for op, text in self.filters:
            ok = {"|=": text in line, "!=": text not in line, "|~": re.search(text, line) is not None,
                  "!~": re.search(text, line) is None}[op]
            if not ok:
                return False
        return True


@dataclass
class MetricQuery:
    function: str  # count_over_time or rate
    logs: LogQuery
    window: float  # seconds
    aggregation: str | None = None  # sum, count, max, min, avg
    by: list[str] = field(default_factory=list)


_STRING = r'"((?:[^"\\]|\\.)*)"|`([^`]*)`'
_MATCHER = re.compile(rf"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:{_STRING})\s*")
_FILTER = re.compile(rf"\s*(\|=|!=|\|~|!~)\s*(?:{_STRING})")


def _text(match: re.Match, first: int) -> str:
    quoted, raw = match.group(first), match.group(first + 1)
    return raw if raw is not None else json.loads(f'"{quoted}"')


def parse_logs(text: str) -> LogQuery:
    text = text.strip()
    if not text.startswith("{") or "}" not in text:
        raise LogQLError("queries require at least one stream selector: {label=\"value\"}")
    inner, rest = text[1:text.index("}")], text[text.index("}") + 1:]
    matchers = []
    for part in filter(str.strip, _split_commas(inner)):
        found = _MATCHER.fullmatch(part)
        if found is None:
            raise LogQLError(f"not a label matcher: {part.strip()!r}")
        matchers.append((found[1], found[2], _text(found, 3)))
    if not any(op in ("=", "=~") and value not in ("", ".*") for _, op, value in matchers):
        raise LogQLError("queries require at least one regexp or equality matcher that does not have an "
                         "empty-compatible value")
    filters, position = [], 0
    while rest[position:].strip():
        found = _FILTER.match(rest, position)
        if found is None:
            raise LogQLError(f"unexpected {rest[position:].strip()!r} (this model knows line filters only)")
        filters.append((found[1], _text(found, 2)))
        position = found.end()
    return LogQuery(matchers, filters)


def _split_commas(text: str) -> list[str]:
    parts, current, quote = [], "", None
    for char in text:
        if quote:
            quote = None if char == quote and not current.endswith("\\") else quote
        elif char in "\"`":
            quote = char
        elif char == ",":
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


_METRIC = re.compile(r"\s*(count_over_time|rate)\s*\((.*)\[(\w+)\]\s*\)\s*", re.S)
_AGGREGATION = re.compile(r"\s*(sum|count|max|min|avg)\s*(?:by\s*\(([^)]*)\))?\s*\((.*)\)\s*"
                          r"(?:by\s*\(([^)]*)\))?\s*", re.S)


def parse(text: str) -> LogQuery | MetricQuery:
    aggregation = _AGGREGATION.fullmatch(text)
    if aggregation:
        inner = parse(aggregation[3])
        if not isinstance(inner, MetricQuery):
            raise LogQLError(f"{aggregation[1]} needs a range aggregation such as count_over_time(...)")
        by = aggregation[2] or aggregation[4] or ""
        inner.aggregation, inner.by = aggregation[1], [b.strip() for b in by.split(",") if b.strip()]
        return inner
    metric = _METRIC.fullmatch(text)
    if metric:
        return MetricQuery(metric[1], parse_logs(metric[2]), seconds(metric[3]))
    return parse_logs(text)


# -- the store ----------------------------------------------------------------------------------------

class Store:
    def __init__(self, path: Path, retention: float | None) -> None:
        self.path, self.retention = path, retention
        self.streams: dict[str, list[tuple[int, str]]] = defaultdict(list)  # labels JSON -> (ns, line)
        if path.exists():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                self.streams[entry["s"]].append((entry["t"], entry["l"]))
        self.expire()

    def push(self, streams: list[dict]) -> int:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        with path.open("a") as out:
            for stream in streams:
                key = json.dumps(stream.get("stream") or {}, sort_keys=True)
                for ts, line, *_ in stream.get("values") or []:
                    self.streams[key].append((int(ts), str(line)))
                    out.write(json.dumps({"s": key, "t": int(ts), "l": str(line)}) + "\n")
                    count += 1
        return count

    def expire(self) -> None:
        if self.retention is None:
            return
        oldest = int((time.time() - self.retention) * 1e9)
        for key in list(self.streams):
            self.streams[key] = [e for e in self.streams[key] if e[0] >= oldest]

    def select(self, query: LogQuery, start: int, end: int) -> dict[str, list[tuple[int, str]]]:
        found = {}
        for key, entries in self.streams.items():
            if query.selects(json.loads(key)):
                kept = [e for e in entries if start <= e[0] <= end and query.keeps(e[1])]
                if kept:
                    found[key] = sorted(kept)
        return found


def _retention() -> float | None:
    try:
        config = yaml.safe_load(CONFIG.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    period = str((config.get("limits_config") or {}).get("retention_period") or
                 (config.get("table_manager") or {}).get("retention_period") or "0s")
    return seconds(period) or None


# -- the API ------------------------------------------------------------------------------------------

def _ns(text: str | None, default: float) -> int:
    """A Loki time parameter: nanoseconds, seconds (with a fraction) or RFC 3339."""
    if not text:
        return int(default * 1e9)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        number = float(text)
        return int(number) if number > 1e15 else int(number * 1e9)
    from datetime import datetime
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)


def _step(text: str | None, start: int, end: int) -> int:
    """Nanoseconds of a step given as a duration (15s) or seconds; Loki's default aims at 250 points."""
    if not text:
        return max(int(1e9), (end - start) // 250)
    return int((float(text) if re.fullmatch(r"\d+(\.\d+)?", text) else seconds(text)) * 1e9)


def _success(result_type: str, result: list) -> web.Response:
    return web.json_response({"status": "success", "data": {"resultType": result_type, "result": result,
                                                            "stats": {}}})


def _streams(store: Store, query: LogQuery, start: int, end: int, limit: int, forward: bool) -> list[dict]:
    entries = [(ts, key, line) for key, kept in store.select(query, start, end).items() for ts, line in kept]
    entries.sort(reverse=not forward)
    grouped: dict[str, list] = defaultdict(list)
    for ts, key, line in entries[:limit]:
        grouped[key].append([str(ts), line])
    return [{"stream": json.loads(key), "values": values} for key, values in grouped.items()]


def _evaluate(store: Store, query: MetricQuery, at: int) -> dict[str, float]:
    """Series labels JSON -> value of the metric query at ``at`` (ns)."""
    window = int(query.window * 1e9)
    series: dict[str, float] = defaultdict(float)
    for key, kept in store.select(query.logs, at - window + 1, at).items():
        labels = json.loads(key)
        if query.aggregation:
            labels = {k: v for k, v in labels.items() if k in query.by}
        value = len(kept) / (query.window if query.function == "rate" else 1)
        group = json.dumps(labels, sort_keys=True)
        if query.aggregation in (None, "sum"):
            series[group] += value
        elif query.aggregation == "count":
            series[group] += 1
        elif query.aggregation == "max":
            series[group] = max(series.get(group, value), value)
        elif query.aggregation == "min":
            series[group] = min(series.get(group, value), value)
        else:  # avg: kept as a running mean below
            series[group + "\0n"] += 1
            series[group] += value
    if query.aggregation == "avg":
        return {k: v / series[k + "\0n"] for k, v in series.items() if not k.endswith("\0n")}
    return dict(series)


def _bad(error: Exception) -> web.Response:
    return web.Response(status=400, text=f"parse error : {error}\n")


class LokiAPI:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    async def push(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="loki: push: the body is not JSON (this model takes JSON pushes)\n")
        self.store.push(body.get("streams") or [])
        return web.Response(status=204)

    async def query_range(self, request: web.Request) -> web.Response:
        q, now = request.query, time.time()
        try:
            query = parse(q.get("query", ""))
            end, start = _ns(q.get("end"), now), _ns(q.get("start"), now - 3600)
            step = _step(q.get("step"), start, end)
        except (LogQLError, ValueError) as error:
            return _bad(error)
        self.store.expire()
        if isinstance(query, LogQuery):
            return _success("streams", _streams(self.store, query, start, end, int(q.get("limit", DEFAULT_LIMIT)),
                                                q.get("direction", "backward") == "forward"))
        matrix: dict[str, list] = defaultdict(list)
        for at in range(start, end + 1, max(step, 1)):
            for key, value in _evaluate(self.store, query, at).items():
                matrix[key].append([at / 1e9, f"{value:g}"])
        return _success("matrix", [{"metric": json.loads(k), "values": v} for k, v in matrix.items()])

    async def instant(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            query = parse(q.get("query", ""))
            at = _ns(q.get("time"), time.time())
        except (LogQLError, ValueError) as error:
            return _bad(error)
        if isinstance(query, LogQuery):
            return _success("streams", _streams(self.store, query, at - int(3600 * 1e9), at,
                                                int(q.get("limit", DEFAULT_LIMIT)),
                                                q.get("direction", "backward") == "forward"))
        return _success("vector", [{"metric": json.loads(k), "value": [at / 1e9, f"{v:g}"]}
                                   for k, v in _evaluate(self.store, query, at).items()])

    async def labels(self, request: web.Request) -> web.Response:
        names = sorted({name for key in self.store.streams for name in json.loads(key)})
        return web.json_response({"status": "success", "data": names})

    async def label_values(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = sorted({json.loads(key).get(name) for key in self.store.streams} - {None})
        return web.json_response({"status": "success", "data": found})

    async def series(self, request: web.Request) -> web.Response:
        matches = request.query.getall("match[]", []) or request.query.getall("match", [])
        try:
            selectors = [parse_logs(m) for m in matches]
        except LogQLError as error:
            return _bad(error)
        found = [json.loads(key) for key in self.store.streams if any(s.selects(json.loads(key)) for s in selectors)]
        return web.json_response({"status": "success", "data": found})


def make_app(options) -> web.Application:
    api = LokiAPI(Store(STORE, _retention()))
    app = web.Application(client_max_size=16 * 2**20)
    app.router.add_get("/ready", api.ready)
    app.router.add_post("/loki/api/v1/push", api.push)
    app.router.add_get("/loki/api/v1/query_range", api.query_range)
    app.router.add_get("/loki/api/v1/query", api.instant)
    app.router.add_get("/loki/api/v1/labels", api.labels)
    app.router.add_get("/loki/api/v1/label/{name}/values", api.label_values)
    app.router.add_get("/loki/api/v1/series", api.series)
    app.router.add_post("/loki/api/v1/series", api.series)
    return app


if __name__ == "__main__":
    serve.main(make_app)
