"""Notebook 04 end to end with ``labkit run`` on the session's series lab (01-03 done): the stack
deployed on the twin (real Prometheus and Alertmanager, the Grafana, Loki, promtail and ntfy
models), every target up, the lab's rules loaded, Grafana over HTTPS, a LogQL line, the synthetic
drill delivered to ntfy and resolved, the disk drill (a node's disk filled: NodeDiskAlmostFull
fires, pages at ntfy, resolves once cleared); Loki and Grafana run their liveness probes without a
restart; a second run changes nothing; the secrets appear in no executed notebook. Then ntfy down:
Alertmanager's failed webhook notifications are counted, the drill names the failure, the disk
drill fires but pages nobody and still clears the disk and removes its rule copy, and ntfy back up
delivers again."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import nbformat
import pytest
import requests
from kubernetes import client as kube_client

from labkit import faultdrill, kube, manifests, monitoring, observe
from labsim.runtime.programs import alertmanager as am_program
from labsim.runtime.programs import prometheus as prom_program
from tests.labkit.series import Series

pytestmark = pytest.mark.skipif(prom_program.bin_dir() is None or am_program.bin_dir() is None,
                                reason="Debian's prometheus and prometheus-alertmanager are not unpacked (make programs)")


def _outputs(executed: nbformat.NotebookNode) -> str:
    return "\n".join(str(o) for cell in executed.cells for o in cell.get("outputs", []))


def test_04_deploys_the_stack_proves_it_by_use_and_changes_nothing_the_second_time(series: Series) -> None:
    first = series.run("04")
    notebook = first["notebooks"][0]
    assert (notebook["name"], notebook["status"], notebook["checks_failed"]) == ("04-observability", "passed", 0)
    assert notebook["changes"] >= 6  # namespace, 2 Secrets, 3 HelmCharts, the PrometheusRules
    executed = series.executed(series.folders[-1], "04-observability")
    shown = _outputs(executed)
    for seen in ("kube-state-metrics", "node-exporter", "NodeDiskAlmostFull", "Server is ready to receive web requests",
                 "firing: Alertmanager -> ntfy", "application/vnd.plotly.v1+json",
                 # the programs keep the lab's clock (time scale 0: the floors), and the figures say so
                 "Alertmanager runs group_wait 1 s for the lab file's 10 s", "for: 10s, 1 s on the lab's clock",
                 "after firing (group_wait 1 s on the lab's clock)"):
        assert seen in shown, seen
    lab = series.lab
    obs = monitoring.settings(lab)
    text = (series.folders[-1] / "04-observability.ipynb").read_text()
    for secret in (lab.secret(obs.grafana.admin_password), lab.secret(obs.ntfy.access_token)):
        assert secret not in text

    _the_disk_drill_paged_resolved_and_left_nothing(series, shown)
    _probed_and_never_restarted(lab, "app=loki", "loki")
    _probed_and_never_restarted(lab, "app.kubernetes.io/name=grafana", "grafana")

    second = series.run("04", drill=False)  # the drills ran above; a re-run plans and changes nothing
    assert [(n["status"], n["changes"], n["checks_failed"]) for n in second["notebooks"]] == [("passed", 0, 0)]


def _the_disk_drill_paged_resolved_and_left_nothing(series: Series, shown: str) -> None:
    """The fault drill of the run: the real Prometheus fired the drill copy of NodeDiskAlmostFull on
    the filled node's numbers, ntfy holds its page (ntfy's alertmanager template: title, the alert's
    labels and summary) and its resolution; the disk is cleared, the copy removed, the lab's rule as it was."""
    lab = series.lab
    for seen in ("disk filled -> pending", "firing -> page at ntfy", "resolved -> resolution at ntfy"):
        assert seen in shown, seen
    messages = observe.ntfy_poll(lab)
    page = next(m for m in messages if m.title == "🚨 Alert: NodeDiskAlmostFull")
    assert page.priority == 5
    for line in ("Alert: NodeDiskAlmostFull", "Severity: critical", "Receiver: ntfy-critical",
                 "Summary: Disk almost full on "):
        assert line in page.message, (line, page.message)
    instance = next(line for line in page.message.splitlines() if line.startswith("Instance: "))
    resolved = next(m for m in messages if m.title == "✅ Resolved: NodeDiskAlmostFull")
    assert instance in resolved.message and "Status: Resolved" in resolved.message
    assert _faults(lab)["disk_full"] == []  # the fault was cleared
    names = _rule_names(lab)
    assert "labkit-drill" not in names  # the drill's copy is gone
    lab_rule = next(r for g in names["homelab-nodes"]["spec"]["groups"] for r in g["rules"]
                    if r.get("alert") == "NodeDiskAlmostFull")
    assert lab_rule["for"] == "5m" and "drill" not in lab_rule["labels"]


def _faults(lab) -> dict:
    """The embedded lab's faults in force (its admin endpoint)."""
    pve = lab.proxmox
    return requests.get(f"https://{pve.host}:{pve.port}/labsim/faults", verify=str(pve.ca_file), timeout=30,
                        headers={"Authorization": f"PVEAPIToken={pve.token_id}={lab.secret(pve.token_secret)}"}).json()["data"]


def _rule_names(lab) -> dict[str, dict]:
    custom = kube_client.CustomObjectsApi(kube.connect(lab.kubeconfig))
    rules = custom.list_namespaced_custom_object("monitoring.coreos.com", "v1", monitoring.settings(lab).namespace,
                                                 "prometheusrules")["items"]
    return {r["metadata"]["name"]: r for r in rules}


def _probed_and_never_restarted(lab, selector: str, container: str) -> None:
    """The chart's livenessProbe is on the container (the twin's probe floor keeps a slow start
    from being killed) and the pod has not been restarted by it."""
    core = kube_client.CoreV1Api(kube.connect(lab.kubeconfig))
    pods = core.list_namespaced_pod(monitoring.settings(lab).namespace, label_selector=selector).items
    assert pods, selector
    for pod in pods:
        spec = next(c for c in pod.spec.containers if c.name == container)
        assert spec.liveness_probe is not None and spec.liveness_probe.http_get is not None
        status = next(s for s in pod.status.container_statuses if s.name == container)
        assert status.restart_count == 0 and status.ready, (pod.metadata.name, status)


def test_with_ntfy_down_alertmanagers_failed_notifications_are_counted_and_the_drill_says_so(series: Series) -> None:
    lab = series.lab
    series.ensure("04")  # run alone: the stack must be there
    stack = observe.connect(kube.connect(lab.kubeconfig), lab)
    try:
        failed_before = _failed(stack)
        series.fault("ntfy_down")
        try:
            missed = observe.drill(stack, lab, timeout=10)  # a miss waits out its bound: a short one
            assert missed.delivered is None and "does not answer" in missed.error
            assert not all(c.passed for c in missed.checks())
            assert _wait(lambda: _failed(stack) > failed_before)  # Alertmanager counted its failed webhook
            unpaged = faultdrill.run(kube.connect(lab.kubeconfig), stack, lab, page_margin=5)
            fired, paged, resolved = (c.passed for c in unpaged.checks())
            assert fired and not paged and not resolved  # Prometheus fired it; ntfy never had it
            assert "to reach ntfy after firing" in unpaged.error and "does not answer" in unpaged.error, unpaged.error
            assert _faults(lab)["disk_full"] == []  # cleared all the same
            assert "labkit-drill" not in _rule_names(lab)  # and the rule's copy removed
        finally:
            series.fault("ntfy_up")
        recovered = observe.drill(stack, lab)  # back up: Alertmanager retries, a new drill is delivered
        assert all(c.passed for c in recovered.checks()), recovered.checks()
    finally:
        stack.close()


def _failed(stack: observe.Stack) -> float:
    counts = observe.notifications(stack).set_index("integration")
    return float(counts.loc["webhook", "failed"]) if "webhook" in counts.index else 0.0


def _wait(condition, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True


def test_a_target_that_does_not_answer_is_named_in_the_table_with_its_error(series: Series) -> None:
    lab = series.lab
    series.ensure("04")
    api = kube.connect(lab.kubeconfig)
    ns = monitoring.settings(lab).namespace
    silent = [  # a pod whose image runs nothing here, a Service and a ServiceMonitor for its port
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "silent", "namespace": ns, "labels": {"app": "silent"}},
         "spec": {"containers": [{"name": "app", "image": "example.org/silent:1",
                                  "ports": [{"name": "metrics", "containerPort": 8080}]}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "silent", "namespace": ns, "labels": {"app": "silent"}},
         "spec": {"selector": {"app": "silent"}, "ports": [{"name": "metrics", "port": 8080, "targetPort": "metrics"}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "silent", "namespace": ns},
         "spec": {"selector": {"matchLabels": {"app": "silent"}}, "endpoints": [{"port": "metrics"}]}}]
    manifests.deploy(api, "test-silent", silent)
    stack = observe.connect(api, lab)
    try:
        found = _until(lambda: _down(observe.targets(stack)), timeout=120)
        assert found is not None
        check = next(c for c in found.checks(["silent"]) if "silent" in c.name)
        assert not check.passed and "1 down" in check.detail and "connection refused" in check.detail
        row = found.table().set_index("job").loc["silent"]
        assert (row["up"], row["down"]) == (0, 1) and "connection refused" in row["last error"]
    finally:
        stack.close()
        manifests.deploy(api, "test-silent", [], prune_kinds=[(o["apiVersion"], o["kind"]) for o in silent])  # pruned


def _down(found: observe.Targets) -> observe.Targets | None:
    table = found.table().set_index("job")
    return found if "silent" in table.index and table.loc["silent", "down"] == 1 else None


def _until(probe, timeout: float):
    deadline = time.monotonic() + timeout
    while (found := probe()) is None and time.monotonic() < deadline:
        time.sleep(3)
    return found


def test_on_a_real_labs_clock_the_figures_name_no_other_clock() -> None:
    """Where the programs run the lab file's group_wait and the drill's ``for`` (a real lab, time
    scale 1), the checks and steps say nothing of a lab clock; where they run others, they do."""
    t = [datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(8)]
    page = observe.NtfyMessage(t[3], "🚨 Alert: NodeDiskAlmostFull", "Severity: critical", 5, [])
    for running, clocked in ((10.0, False), (1.0, True)):
        drill = observe.Drill("LabkitDrill", 10.0, 20, t[0], t[1], t[2], t[3], 5, running_group_wait=running)
        disk = faultdrill.DiskDrill("n", "i", *t[:7], page, held_for=running, group_wait=10.0, held_group=running)
        shown = " ".join([*(c.detail for c in (*drill.checks(), *disk.checks())), *disk.timeline()["step"]])
        assert ("lab's clock" in shown) is clocked, shown
        assert all(c.passed for c in (*drill.checks(), *disk.checks())), shown
