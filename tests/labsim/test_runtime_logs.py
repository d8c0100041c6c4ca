"""A plain container's log over the wire: `kubectl logs -f` follows a shell loop as it writes,
`--since-time` shows the lines from then on,
`--previous` shows the run before a restart, and a crashing container of a multi-container pod
restarts on its own (back-off on the lab clock) while its sibling runs on."""

from __future__ import annotations

import json
import os
import subprocess

from tests.labsim.kube_fixtures import TOOLS, RunningCluster
from tests.polling import wait_until

POD = """
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  containers:
  - name: talker
    image: busybox:1.37
    command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 1; done']
  - name: crasher
    image: busybox:1.37
    command: [sh, -c, 'n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo "run $n"; exit 3']
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, emptyDir: {}}]
"""


def _status(kube: RunningCluster, name: str) -> dict:
    pod = json.loads(kube.kubectl("get", "pod", "talker", "-o", "json").stdout)
    return next(cs for cs in pod["status"].get("containerStatuses") or [] if cs["name"] == name)


def test_logs_follow_previous_and_one_container_restarting(shared_kube: RunningCluster) -> None:
    kube = shared_kube
    kube.kubectl("apply", "-f", "-", input=POD)
    wait_until(lambda: "running" in _status(kube, "talker")["state"], timeout=30)
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "HOME": str(kube.home)}
    follow = subprocess.Popen([str(TOOLS / "kubectl-1.34"), "logs", "-f", "talker", "-c", "talker"], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        first, second = follow.stdout.readline(), follow.stdout.readline()  # while the loop runs on
        assert (first, second) == ("tick 1\n", "tick 2\n") or second == f"tick {int(first.split()[1]) + 1}\n"
    finally:
        follow.terminate()
        follow.wait(10)

    # --since-time (sinceTime): the lines stamped at or after it, none before (what promtail reads from)
    def stamped() -> list[str]:
        return kube.kubectl("logs", "talker", "-c", "talker", "--timestamps").stdout.splitlines()
    def two_seconds() -> list[str] | None:
        found = stamped()
        return found if len({line.split()[0] for line in found}) >= 2 else None
    lines = wait_until(two_seconds, timeout=30)
    since = lines[-1].split()[0]
    later = kube.kubectl("logs", "talker", "-c", "talker", "--timestamps", f"--since-time={since}").stdout.splitlines()
    assert later[0] in lines and all(line.split()[0] >= since for line in later)
    assert lines[0] not in later and len(later) < len(stamped())

    crashed = wait_until(lambda: (s := _status(kube, "crasher"))["restartCount"] == 1 and s, timeout=30)
    assert crashed["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert crashed["lastState"]["terminated"]["exitCode"] == 3
    assert kube.kubectl("logs", "talker", "-c", "crasher").stdout == "run 1\n"  # the last run's, while it waits
    talker = _status(kube, "talker")
    assert "running" in talker["state"] and talker["restartCount"] == 0  # its sibling runs on

    kube.call(kube.cluster.clock.advance, 11)  # the back-off, on the lab clock
    wait_until(lambda: _status(kube, "crasher")["restartCount"] == 2, timeout=30)  # ran again, crashed again
    assert kube.kubectl("logs", "talker", "-c", "crasher").stdout == "run 2\n"
    assert kube.kubectl("logs", "talker", "-c", "crasher", "--previous").stdout == "run 2\n"
    kube.call(kube.cluster.clock.advance, 21)
    wait_until(lambda: _status(kube, "crasher")["restartCount"] == 3, timeout=30)
    assert kube.kubectl("logs", "talker", "-c", "crasher").stdout == "run 3\n"
    missing = kube.kubectl("logs", "talker", "-c", "talker", "--previous", check=False)
    assert missing.returncode == 1
    assert 'previous terminated container "talker" in pod "talker" not found' in missing.stderr
