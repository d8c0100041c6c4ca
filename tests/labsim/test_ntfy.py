"""The ntfy model, checked with a real ntfy client library (python-ntfy) over HTTPS that verifies
the server's certificate: publish with title/priority/tags, poll with since, tokens as Bearer or
Basic, ntfy's errors, and Alertmanager's webhook through ntfy's predefined alertmanager template."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
import requests
from python_ntfy import NtfyClient
from python_ntfy._exceptions import MessageSendError

from labsim import pki
from labsim.apps.ntfy import NtfyServer
from tests.labfiles import free_port

TOKEN = "tk_" + "a1" * 14 + "b"


@pytest.fixture(scope="module")
def ntfy(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """The model on 127.0.0.1:<port> over HTTPS; yields (url, ca_file)."""
    root = tmp_path_factory.mktemp("ntfy")
    ca = pki.make_ca("test web PKI")
    ca_file = root / "ca.pem"
    ca.save(ca_file, root / "ca-key.pem")
    url = f"https://127.0.0.1:{free_port()}"
    server = NtfyServer(root, url, TOKEN, ca)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    try:
        yield url, str(ca_file)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(autouse=True)
def _trust(ntfy, monkeypatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ntfy[1])  # the client verifies the model's certificate
    for name in ("NTFY_SERVER", "NTFY_USER", "NTFY_PASSWORD", "NTFY_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_a_message_published_by_the_client_is_polled_back_with_its_title_priority_and_tags(ntfy) -> None:
    client = NtfyClient("disk-alerts", server=ntfy[0], auth=TOKEN)  # Basic: empty user, token as password
    sent = client.send("sda1 is 95% full", title="Disk almost full", priority=NtfyClient.MessagePriority.URGENT,
                       tags=["warning", "floppy_disk"])
    assert sent["event"] == "message" and sent["topic"] == "disk-alerts"
    assert (sent["title"], sent["priority"], sent["tags"]) == ("Disk almost full", 5, ["warning", "floppy_disk"])
    client.send("second")
    polled = client.get_cached_messages(since="all")
    assert sorted(m["message"] for m in polled) == ["sda1 is 95% full", "second"]
    assert sent["id"] in [m["id"] for m in polled]
    assert [m["message"] for m in client.get_cached_messages(since=sent["id"])] == ["second"]
    assert client.get_cached_messages(since=str(sent["time"] + 3600)) == []
    assert NtfyClient("other-topic", server=ntfy[0], auth=TOKEN).get_cached_messages() == []


def test_priority_names_map_to_ntfys_numbers_and_a_wrong_one_is_refused(ntfy) -> None:
    url, bearer = ntfy[0] + "/prio", {"Authorization": f"Bearer {TOKEN}"}
    for name, number in (("min", 1), ("low", 2), ("high", 4), ("urgent", 5), ("max", 5), ("4", 4)):
        answer = requests.post(url, data="x", headers={**bearer, "X-Priority": name}, timeout=5).json()
        assert answer["priority"] == number
    assert requests.post(url + "?p=low", data="x", headers=bearer, timeout=5).json()["priority"] == 2
    assert "priority" not in requests.post(url, data="x", headers=bearer, timeout=5).json()  # default: omitted
    wrong = requests.post(url, data="x", headers={**bearer, "Priority": "panic"}, timeout=5)
    assert (wrong.status_code, wrong.json()["code"], wrong.json()["error"]) == (400, 40007, "invalid priority")


def test_without_the_token_publishing_and_polling_are_refused_as_ntfy_does(ntfy) -> None:
    with pytest.raises(MessageSendError, match="403"):
        NtfyClient("secret", server=ntfy[0], auth=None).send("anonymous")
    with pytest.raises(MessageSendError, match="401"):
        NtfyClient("secret", server=ntfy[0], auth="tk_wrong").send("guessed")
    answer = requests.get(ntfy[0] + "/secret/json?poll=1", headers={"Authorization": "Bearer tk_wrong"}, timeout=5)
    assert (answer.status_code, answer.json()["code"]) == (401, 40101)
    polled = requests.get(ntfy[0] + "/secret/json?poll=1&since=all", headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=5)
    assert polled.text == ""  # nothing was stored


def test_an_alertmanager_webhook_is_rendered_by_the_alertmanager_template(ntfy) -> None:
    payload = {"receiver": "ntfy", "status": "firing", "alerts": [{
        "status": "firing", "labels": {"alertname": "NodeDiskAlmostFull", "instance": "k3s-master", "severity": "critical"},
        "annotations": {"summary": "Disk almost full on k3s-master"}, "startsAt": "2026-12-06T07:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph"}]}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    firing = requests.post(ntfy[0] + "/pager?template=alertmanager&priority=5&tags=rotating_light",
                           data=json.dumps(payload), headers=bearer, timeout=5).json()
    assert firing["title"] == "🚨 Alert: NodeDiskAlmostFull" and firing["priority"] == 5
    assert "Severity: critical" in firing["message"] and "Summary: Disk almost full on k3s-master" in firing["message"]
    assert "Ends at" not in firing["message"]
    payload["status"] = "resolved"
    resolved = requests.post(ntfy[0] + "/pager", data=json.dumps(payload), timeout=5,
                             headers={**bearer, "X-Template": "alertmanager"}).json()
    assert resolved["title"] == "✅ Resolved: NodeDiskAlmostFull"
    bad = requests.post(ntfy[0] + "/pager?template=alertmanager", data="not json", headers=bearer, timeout=5)
    assert bad.status_code == 400


def test_the_stream_opens_then_delivers_a_message_published_meanwhile(ntfy) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with requests.get(ntfy[0] + "/live/json", headers=bearer, stream=True, timeout=10) as stream:
        lines = stream.iter_lines()
        assert json.loads(next(lines))["event"] == "open"
        requests.put(ntfy[0] + "/live", data="hello", headers={**bearer, "Title": "Hi"}, timeout=5)
        message = json.loads(next(lines))
    assert (message["event"], message["message"], message["title"]) == ("message", "hello", "Hi")
