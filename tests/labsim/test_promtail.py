"""The promtail model reads each container's log from where it stopped: a line is shipped once,
the lines before the last read's second are not asked for again (``sinceTime``), and the lines of
that second, which the API sends again, are skipped."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from labsim.apps import promtail
from labsim.apps.promtail import Position


def test_new_lines_are_shipped_once_and_old_ones_not_read_again() -> None:
    position = Position()
    assert position.since() == ""  # the first read: the whole log
    first = "2026-12-06T10:00:00Z a\n2026-12-06T10:00:01Z b\n2026-12-06T10:00:01Z c\n"
    assert [line for _, line in position.read(first)] == ["a", "b", "c"]
    assert position.since() == "&sinceTime=2026-12-06T10%3A00%3A01Z"  # not from the start again

    # What the API answers from that second on: b and c again (same second), then the new lines.
    again = "2026-12-06T10:00:01Z b\n2026-12-06T10:00:01Z c\n2026-12-06T10:00:01Z d\n2026-12-06T10:00:02Z e\n"
    shipped = position.read(again)
    assert [line for _, line in shipped] == ["d", "e"]
    assert position.since() == "&sinceTime=2026-12-06T10%3A00%3A02Z"
    assert position.read("2026-12-06T10:00:02Z e\n") == []  # nothing new: nothing shipped


def test_lines_of_one_second_keep_their_order_across_reads() -> None:
    position = Position()
    stamps = [int(ns) for ns, _ in position.read("2026-12-06T10:00:01Z b\n2026-12-06T10:00:01Z c\n")]
    stamps += [int(ns) for ns, _ in position.read("2026-12-06T10:00:01Z b\n2026-12-06T10:00:01Z c\n"
                                                  "2026-12-06T10:00:01Z d\nnot a log line\n")]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3  # Loki takes a stream's entries in order


def test_lines_a_failed_push_did_not_deliver_are_sent_again(tmp_path, monkeypatch) -> None:
    """As promtail's positions: a push Loki refused (not up yet) moves nothing, the next round sends it."""
    log = "2026-12-06T10:00:00Z Server is ready to receive web requests.\n"
    pushed, refused = [], [1]

    async def pods(request: web.Request) -> web.Response:
        return web.json_response({"items": [{"metadata": {"uid": "u1", "namespace": "monitoring", "name": "prom-0",
                                                          "labels": {}},
                                             "status": {"containerStatuses": [{"name": "prometheus"}]}}]})

    async def logs(request: web.Request) -> web.Response:
        return web.Response(text="" if request.query.get("sinceTime") else log)

    async def push(request: web.Request) -> web.Response:
        if refused:
            refused.pop()
            return web.Response(status=503, text="Ingester not ready")
        pushed.extend(v[1] for s in (await request.json())["streams"] for v in s["values"])
        return web.Response(status=204)

    async def rounds() -> None:
        app = web.Application()
        app.router.add_get("/api/v1/pods", pods)
        app.router.add_get("/api/v1/namespaces/monitoring/pods/prom-0/log", logs)
        app.router.add_post("/loki/api/v1/push", push)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        monkeypatch.setattr(promtail, "push_url", lambda: url + "/loki/api/v1/push")
        shipper = promtail.Shipper()
        shipper.api = url
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.ClientResponseError):
                    await shipper.round(session)  # Loki refuses: the line stays unsent
                await shipper.round(session)
                await shipper.round(session)  # nothing new: nothing sent twice
        finally:
            await runner.cleanup()

    token = tmp_path / promtail.incluster.SA_DIR / "token"
    token.parent.mkdir(parents=True)
    token.write_text("t")
    monkeypatch.chdir(tmp_path)
    asyncio.run(rounds())
    assert pushed == ["Server is ready to receive web requests."]
