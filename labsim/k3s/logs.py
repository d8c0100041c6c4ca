"""Log lines as k3s writes them: logrus text format without a terminal
(`time="2026-11-26T22:01:02Z" level=info msg="..."`), timestamped by the lab clock."""

from __future__ import annotations

import datetime as dt


def rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def line(epoch: float, level: str, msg: str) -> str:
    escaped = msg.replace("\\", "\\\\").replace('"', '\\"')
    return f'time="{rfc3339(epoch)}" level={level} msg="{escaped}"'


class Logger:
    """Writes k3s log lines to a node's journal unit, to a CLI's stderr, or both."""

    def __init__(self, clock, node=None, unit: str | None = None) -> None:
        self.clock, self.node, self.unit = clock, node, unit
        self.lines: list[str] = []

    def log(self, level: str, msg: str) -> None:
        text = line(self.clock.now(), level, msg)
        self.lines.append(text)
        if self.node is not None and self.unit:
            self.node.log(self.unit, text)

    def info(self, msg: str) -> None:
        self.log("info", msg)

    def warn(self, msg: str) -> None:
        self.log("warning", msg)

    def fatal(self, msg: str) -> None:
        self.log("fatal", msg)

    def text(self) -> str:
        return "".join(f"{entry}\n" for entry in self.lines)
