"""The preflight of the core infrastructure (notebook 03), read-only: every node Ready, k3s'
ServiceLB off (with MetalLB on too, both answer for LoadBalancer Services: the seed's known
mistake, refused here), and the NAS's NFS port reachable from every node (the kubelet mounts
the export on the node a pod runs on)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pandas as pd
from kubernetes import client

from labkit import k3s, kube
from labkit.changes import Check
from labkit.errors import KubeError
from labkit.params import Lab
from labkit.ssh import Session

NFS_PORT = 2049
PROBE_NAMESPACE = "labkit-probes"  # where storage's and net's probes live
SERVICELB_LABEL = "svccontroller.k3s.cattle.io/svcname"  # on the DaemonSets k3s' ServiceLB makes


@dataclass(frozen=True)
class Preflight:
    checks: list[Check]
    nodes: pd.DataFrame  # node, ready, servicelb (servers), nfs (NAS port reachable), detail

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def problems(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]


def preflight(api: client.ApiClient, session: Session, lab: Lab, *, timeout: float = 30) -> Preflight:
    nodes = kube.node_table(api).set_index("name")
    ready = {n.name: bool(nodes.loc[n.name, "ready"]) if n.name in nodes.index else False for n in lab.nodes}
    configs = session.collect([n.name for n in lab.servers], {"config": f"sudo -n cat {k3s.CONFIG}"}, timeout=timeout)
    servicelb = {name: _servicelb_on(probe.stdout("config"), probe.error) for name, probe in configs.items()}
    svclb = servicelb_daemonsets(api)
    port = f"nc -z -w 5 {shlex.quote(lab.nfs.server)} {NFS_PORT}"
    reach = session.collect([n.name for n in lab.nodes], {"nfs": port}, timeout=timeout)
    nfs = {name: _reached(probe) for name, probe in reach.items()}

    rows = [{"node": n.name, "ready": ready[n.name], "servicelb": servicelb.get(n.name, ""),
             "nfs": nfs[n.name]} for n in lab.nodes]
    on = [name for name, state in servicelb.items() if state != "disabled"]
    unreachable = [f"{name} ({state})" for name, state in nfs.items() if state != "reachable"]
    checks = [
        Check("every node is Ready", all(ready.values()),
              ", ".join(f"{k}: {'Ready' if v else 'not Ready'}" for k, v in ready.items())),
        Check("k3s' ServiceLB is disabled (MetalLB alone hands out addresses)", not on and not svclb,
              "disabled on every server" if not on and not svclb else _servicelb_remedy(on, svclb)),
        Check(f"the NAS {lab.nfs.server}:{NFS_PORT} is reachable from every node", not unreachable,
              "; ".join(unreachable) or f"from {len(nfs)} nodes"),
    ]
    return Preflight(checks, pd.DataFrame(rows, columns=["node", "ready", "servicelb", "nfs"]))


def _servicelb_on(config_text: str, error: str | None) -> str:
    if error:
        return f"unknown: {error}"
    config = k3s._yaml_mapping(config_text)
    disabled = config.get("disable") or []
    disabled = disabled.split(",") if isinstance(disabled, str) else disabled
    return "disabled" if "servicelb" in disabled else "enabled"


def servicelb_daemonsets(api: client.ApiClient) -> list[str]:
    """ServiceLB's svclb-* DaemonSets: proof that it runs, whatever config.yaml says."""
    found = kube.request("list DaemonSets", lambda: client.AppsV1Api(api).list_namespaced_daemon_set(
        "kube-system", label_selector=SERVICELB_LABEL)).items
    return [d.metadata.name for d in found]


def _servicelb_remedy(on: list[str], svclb: list[str]) -> str:
    seen = [f"config.yaml of {', '.join(on)} does not disable it"] if on else []
    seen += [f"its DaemonSets run: {', '.join(svclb)}"] if svclb else []
    return ("; ".join(seen) + ". With MetalLB as well, both answer for every LoadBalancer Service. Add servicelb to "
            "k3s.disable in the lab file and run 02-bootstrap-k3s with reconcile=True, then this notebook again")


def _reached(probe) -> str:
    if probe.error:
        return f"unknown: {probe.error}"
    result = probe.results["nfs"]
    if result.ok:
        return "reachable"
    said = (result.stderr or result.stdout).strip().splitlines()
    return said[-1] if said else f"nc exited {result.exit_status}"


def remove_probes(api: client.ApiClient, *, keep: bool = False, dry_run: bool = False,
                  timeout: float = 180) -> list[str]:
    """Delete the probes' namespace, and with it every test object (claim, pods, Services,
    Certificate, Ingress), unless ``keep``; waits until it is gone, so a re-run can make it again."""
    if keep or dry_run:
        return []
    core = client.CoreV1Api(api)
    try:
        core.delete_namespace(PROBE_NAMESPACE)
    except client.ApiException as exc:
        if exc.status == 404:
            return []
        raise KubeError(f"delete namespace {PROBE_NAMESPACE}: API server answered {exc.status} {exc.reason}") from None
    kube.until(core.list_namespace, lambda found: True if not found.items else None,
               what=f"namespace {PROBE_NAMESPACE} to go", timeout=timeout,
               field_selector=f"metadata.name={PROBE_NAMESPACE}")
    return [f"Namespace/{PROBE_NAMESPACE}"]
