"""Rules that span fields or look outside the file: addresses in the subnet, the pool, files and variables."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from labkit import localfiles, secrets
from labkit.errors import SecretError
from labkit.params.cluster import Node
from labkit.params.fields import EMBEDDED_K3S_CIDRS, IPv4, excerpt
from labkit.params.lab import Lab
from labkit.quantities import cpu_cores, memory_bytes


def cross_check(lab: Lab) -> list[str]:
    """Rules that span fields: addresses inside the subnet, uniqueness, pool, server count."""
    net, errors = lab.network.subnet, []
    usable = set(net.hosts()) if net.prefixlen < 31 else set(net)

    def inside(where: str, ip: IPv4) -> None:
        if ip not in usable:
            errors.append(f"{where}: {ip} is not a usable address of network.subnet {net}")

    inside("network.gateway", lab.network.gateway)
    for i, node in enumerate(lab.nodes):
        inside(f"nodes[{i}].ip", node.ip)
        if node.ip == lab.network.gateway:
            errors.append(f"nodes[{i}].ip: {node.ip} is the gateway; give the node its own address")
        if node.vmid == lab.proxmox.template_vmid:
            errors.append(f"nodes[{i}].vmid: {node.vmid} is the template (proxmox.template_vmid); pick another vmid")
    for field in ("name", "vmid", "ip"):
        errors += _duplicates(lab.nodes, field)

    errors += _pool_rules(lab, inside)
    errors += _ingress_rules(lab)
    errors += _observability_rules(lab)

    errors += _pod_network_rules(lab)
    errors += _postgres_rules(lab)
    errors += _apps_rules(lab)

    servers = len(lab.servers)
    if servers == 0:
        errors.append("nodes: no node has role: server; k3s needs at least one server")
    elif servers > 1 and not lab.k3s.cluster_init:
        errors.append(f"k3s.cluster_init: {servers} servers need embedded etcd; set cluster_init: true")
    elif servers > 1 and servers % 2 == 0:
        errors.append(f"nodes: {servers} servers; embedded etcd HA needs an odd number (1, 3, 5) to keep quorum")

    if lab.kind == "embedded":
        errors += _embedded_rules(lab)
    elif lab.embedded is not None:
        errors.append("embedded: only for kind: embedded; remove the section or set kind: embedded")
    return errors


def _pool_rules(lab: Lab, inside) -> list[str]:
    """Every pool range inside the subnet, clear of nodes, gateway, NFS server and each other; pool names unique."""
    errors: list[str] = []
    taken = {n.ip: f"nodes[{i}] ({n.name})" for i, n in enumerate(lab.nodes)} | {lab.network.gateway: "the gateway"}
    if _is_ipv4(lab.nfs.server):
        taken[IPv4(lab.nfs.server)] = "the NFS server (nfs.server)"
    ranges = lab.metallb.ranges()
    for k, (where, first, last) in enumerate(ranges):
        inside(where, first)
        inside(where, last)
        for ip, owner in taken.items():
            if first <= ip <= last:
                errors.append(f"{where}: {first}-{last} contains {ip}, used by {owner}; "
                              "the pool must be disjoint from node IPs, the gateway and the NFS server")
        for other, a, b in ranges[:k]:
            if first <= b and last >= a:
                errors.append(f"{where}: {first}-{last} overlaps {other} ({a}-{b}); MetalLB pools must not overlap")
    names = ["default", *(p.name for p in lab.metallb.pools)]
    for i, name in enumerate(names[1:]):
        if name in names[: i + 1]:
            errors.append(f"metallb.pools[{i}].name: {name!r} is already a pool's name ('default' is metallb.addresses)")
    return errors


def _ingress_rules(lab: Lab) -> list[str]:
    """The ingress issuer is one of tls.issuers."""
    if lab.tls is None:
        return []
    names = [i.name for i in lab.tls.issuers]
    if lab.ingress.issuer not in names:
        return [f"ingress.issuer: {lab.ingress.issuer!r} is not one of tls.issuers ({', '.join(names)})"]
    return []


def _observability_rules(lab: Lab) -> list[str]:
    """Grafana is served under the ingress domain (its certificate and DNS come from 03)."""
    if lab.observability is None:
        return []
    host, domain = lab.observability.grafana.host, lab.ingress.domain
    if not host.endswith("." + domain):
        return [f"observability.grafana.host: {host!r} is not under ingress.domain {domain!r}; "
                f"use e.g. grafana.{domain}"]
    return []


K3S_DEFAULT_CIDRS = {"cluster_cidr": ipaddress.IPv4Network("10.42.0.0/16"),
                     "service_cidr": ipaddress.IPv4Network("10.43.0.0/16")}


def _pod_network_rules(lab: Lab) -> list[str]:
    """The pod and service networks (as set, else k3s' defaults) must not overlap each other, the
    node subnet or the MetalLB pool; the embedded lab must set both inside 127.0.0.0/8."""
    errors = []
    nets = {f: getattr(lab.k3s, f) or K3S_DEFAULT_CIDRS[f] for f in K3S_DEFAULT_CIDRS}
    for field, net in nets.items():
        where = f"k3s.{field}: {net}" + ("" if getattr(lab.k3s, field) else " (k3s' default)")
        if net.overlaps(lab.network.subnet):
            errors.append(f"{where} overlaps network.subnet {lab.network.subnet}; pick a range outside it")
        for pool, first, last in lab.metallb.ranges():
            if first <= net.broadcast_address and last >= net.network_address:
                errors.append(f"{where} overlaps {pool} {first}-{last}; pick a range outside the pool")
    if nets["cluster_cidr"].overlaps(nets["service_cidr"]):
        errors.append(f"k3s.service_cidr: {nets['service_cidr']} overlaps k3s.cluster_cidr {nets['cluster_cidr']}; "
                      "pods and services need separate ranges")
    if nets["cluster_cidr"].prefixlen > 24 - (len(lab.nodes) - 1).bit_length():
        errors.append(f"k3s.cluster_cidr: {nets['cluster_cidr']} is too small: each of the {len(lab.nodes)} nodes "
                      "takes a /24 of it")
    if lab.kind == "embedded":  # unset, they default to loopback ranges (EMBEDDED_K3S_CIDRS)
        loopback = ipaddress.IPv4Network("127.0.0.0/8")
        for field, example in EMBEDDED_K3S_CIDRS.items():
            if not nets[field].subnet_of(loopback):
                errors.append(f"k3s.{field}: {nets[field]} is not loopback; the embedded lab binds 127.0.0.0/8 only: "
                              f"set e.g. {field}: {example}")
    return errors


def _postgres_rules(lab: Lab) -> list[str]:
    """Limits at or above requests; the backup section needs the database it backs up."""
    errors, pg = [], lab.postgres
    if pg is not None:
        if cpu_cores(pg.limits.cpu) < cpu_cores(pg.requests.cpu):
            errors.append(f"postgres.limits.cpu: {pg.limits.cpu} is below postgres.requests.cpu {pg.requests.cpu}")
        if memory_bytes(pg.limits.memory) < memory_bytes(pg.requests.memory):
            errors.append(f"postgres.limits.memory: {pg.limits.memory} is below postgres.requests.memory "
                          f"{pg.requests.memory}")
        if pg.user == "postgres":
            errors.append("postgres.user: 'postgres' is the superuser; give the application its own user")
    if lab.backup is not None and pg is None:
        errors.append("backup: backs up the postgres section's database; add a postgres section")
    return errors


def _apps_rules(lab: Lab) -> list[str]:
    """Each app under the ingress domain, its limits at or above its requests; n8n needs the
    postgres section's database."""
    errors: list[str] = []
    for name, app in (lab.apps.enabled() if lab.apps is not None else {}).items():
        where, domain = f"apps.{name}", lab.ingress.domain
        if not app.host.endswith("." + domain):
            errors.append(f"{where}.host: {app.host!r} is not under ingress.domain {domain!r}; use e.g. {name}.{domain}")
        if cpu_cores(app.limits.cpu) < cpu_cores(app.requests.cpu):
            errors.append(f"{where}.limits.cpu: {app.limits.cpu} is below {where}.requests.cpu {app.requests.cpu}")
        if memory_bytes(app.limits.memory) < memory_bytes(app.requests.memory):
            errors.append(f"{where}.limits.memory: {app.limits.memory} is below {where}.requests.memory "
                          f"{app.requests.memory}")
        if name == "n8n" and lab.postgres is None:
            errors.append("apps.n8n: stores its workflows in the postgres section's PostgreSQL; add a postgres section "
                          "(notebook 05) or set apps.n8n.enabled: false")
        if name == "n8n" and app.database.user in ("postgres", getattr(lab.postgres, "user", None)):
            errors.append(f"apps.n8n.database.user: {app.database.user!r} is already PostgreSQL's superuser or the "
                          "postgres section's user; give n8n a user of its own (e.g. n8n)")
    return errors


def _is_ipv4(text: str) -> bool:
    try:
        IPv4(text)
    except ValueError:
        return False
    return True


def _duplicates(nodes: list[Node], field: str) -> list[str]:
    seen: dict[Any, int] = {}
    errors = []
    for i, node in enumerate(nodes):
        value = getattr(node, field)
        if value in seen:
            errors.append(f"nodes[{i}].{field}: {str(value)!r} is already used by nodes[{seen[value]}]; "
                          f"each node needs its own {field}")
        seen.setdefault(value, i)
    return errors


def _embedded_rules(lab: Lab) -> list[str]:
    errors = []
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    if not lab.network.subnet.subnet_of(loopback):
        errors.append(f"network.subnet: {lab.network.subnet} is not loopback; the embedded lab binds 127.0.0.0/8 only")
    try:
        if not IPv4(lab.proxmox.host).is_loopback:
            raise ValueError
    except ValueError:
        errors.append(f"proxmox.host: {excerpt(lab.proxmox.host)} is not a loopback address; the embedded lab serves PVE on 127.0.0.1")
    return errors


def missing_files(lab: Lab) -> list[str]:
    """Local files the lab needs. For an embedded lab, files inside its state folder are made
    by labsim on first start, so they are not required yet."""
    wanted = {"proxmox.ca_file": lab.proxmox.ca_file, "ssh.public_key": lab.ssh.public_key}
    wanted |= {f"charts.{name}.values": c.values for name, c in lab.charts.items()}
    for i, issuer in enumerate(lab.tls.issuers if lab.tls else []):
        wanted |= {f"tls.issuers[{i}].{f}": getattr(issuer, f) for f in ("ca_file", "server_ca_file")}
    if lab.observability is not None:
        wanted["observability.rules"] = lab.observability.rules
        wanted["observability.rule_tests"] = lab.observability.rule_tests
        wanted["observability.ntfy.ca_file"] = lab.observability.ntfy.ca_file
        wanted |= {f"observability.charts.{n}.values": c.values for n, c in lab.observability.charts.items()}
    for where, ref in lab.secret_refs().items():
        if ref.path:
            wanted[where] = secrets.resolve_path(ref.path, lab.base_dir)
    state = lab.embedded.state_dir if lab.kind == "embedded" and lab.embedded else None
    errors = []
    for where, path in wanted.items():
        if path is None or path.exists() or (state is not None and path.is_relative_to(state)):
            continue
        errors.append(f"{where}: file {path} does not exist; create it or fix the path")
    return errors


def file_problems(lab: Lab) -> list[str]:
    """What is wrong inside the local files the lab needs (those present: ``missing_files``
    names the others): secrets that cannot be read (a folder, /dev/zero, not UTF-8, no such
    key), a public key that is not one, a CA that is not a certificate, a state folder that is
    a file. Messages never quote a file's content."""
    errors = []
    checks = {"ssh.public_key": (lab.ssh.public_key, localfiles.public_key_line),
              "proxmox.ca_file": (lab.proxmox.ca_file, localfiles.check_pem_certificate)}
    for where, (path, check) in checks.items():
        try:
            if path is not None and path.exists():
                check(path)
        except localfiles.FileProblem as exc:
            errors.append(f"{where}: {exc}")
    for where, ref in lab.secret_refs().items():
        if ref.path and secrets.resolve_path(ref.path, lab.base_dir).exists():
            try:
                lab.secret(ref)
            except SecretError as exc:
                errors.append(f"{where}: {exc}")
    state = lab.embedded.state_dir if lab.kind == "embedded" and lab.embedded else None
    if state is not None and state.exists() and not state.is_dir():
        errors.append(f"embedded.state_dir: {state} is a file; give a folder (the embedded lab keeps its state there)")
    return errors


def unset_variables(lab: Lab) -> list[str]:
    """Secret references to environment variables that are not set (checked, never read out)."""
    return [f"{where}: environment variable {ref.env} is not set; export it before running"
            for where, ref in lab.secret_refs().items() if ref.env and ref.env not in os.environ]
