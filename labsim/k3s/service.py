"""What the `k3s` (server) and `k3s-agent` systemd units of a node do when they start and stop.

The node's files are the truth, as on a real machine (units.py): the configuration and the
binary's version are read again at every start. Starting a server brings up its cluster's API,
writes k3s.yaml and the tokens, deploys the packaged components, registers the Node and runs
k3s' own controllers while it serves; starting an agent checks the server URL, the token, the
version skew and the node password first, and fails with k3s' own log line when one is wrong.
Stopping either marks the Node NotReady. Every step writes k3s-style lines to the unit's journal.
The units have KillMode=process: stopping k3s (restarting, upgrading it) leaves the containers
running; k3s-killall.sh (``kill_containers``) or the machine going down stops them.
"""

from __future__ import annotations

import asyncio
import posixpath
from urllib.parse import urlsplit

from labsim.k3s import addons, nodepassword, snapshots, tokens
from labsim.k3s.config import ConfigError, K3sConfig
from labsim.k3s.logs import Logger
from labsim.k3s.manifests import ManifestWatcher
from labsim.k3s.nodepassword import NodePasswordCleaner
from labsim.k3s.servicelb import ServiceLB
from labsim.k3s.units import (
    AGENT_UNIT,
    BINARY,
    KUBECONFIG,
    NODE_TOKEN_FILE,
    SERVER_CA,
    SERVER_DIR,
    SERVER_UNIT,
    TOKEN_FILE,
    UNITS,
    installed_version,
    node_name,
    unit_config,
    unit_path,
)
from labsim.k3s.versions import K3sVersion, skew_error
from labsim.kube.controllers.schedule import Schedule, ScheduleError
from labsim.kube.controllers.workqueue import Controller
from labsim.kube.store import StoreError
from labsim.net import cidrs
from labsim.net.coredns import CoreDNS
from labsim.net.kubeletapi import KubeletApi
from labsim.net.kubeproxy import KubeProxy
from labsim.node import network
from labsim.node.registry import on_boot

API_PORT = 6443

# Modelled seconds: a server from process start to "up and running", an agent to a Ready node.
SERVER_START_SECONDS = 15.0
AGENT_JOIN_SECONDS = 12.0
# An agent tries its server this many times, this far apart (modelled seconds, and at least the
# floor in real seconds so that time_scale 0 does not spin), before its unit fails.
CONNECT_ATTEMPTS = 60
CONNECT_RETRY_SECONDS = 2.0
CONNECT_RETRY_FLOOR = 0.02


class UnitError(Exception):
    """The unit's process gives up; the message is the line k3s logs, at ``level`` ("fatal" for
    what k3s exits on, "error" for what it would retry for ever: the unit never gets ready)."""

    def __init__(self, message: str, level: str = "fatal") -> None:
        super().__init__(message)
        self.level = level


class UnitStartFailed(Exception):
    """`systemctl start|restart` of a k3s unit failed; the message is systemd's."""


# --- hooks --------------------------------------------------------------------------------------

@on_boot
async def reattach(node) -> None:
    """At boot, before systemd starts the enabled units: give them their hooks again."""
    attach(node)


def attach(node) -> None:
    """Give the node's systemd what starting and stopping k3s does, for the units installed."""
    for unit in UNITS:
        if node.exists(unit_path(unit)):
            node.register_service(unit, on_start=_starter(unit), on_stop=_stopper(unit))


async def restart(node, unit: str) -> None:
    """`systemctl restart UNIT` as the installer runs it."""
    attach(node)
    await node.stop_service(unit)
    if not await node.start_service(unit):
        raise UnitStartFailed(
            f"Job for {unit}.service failed because the control process exited with error code.\n"
            f'See "systemctl status {unit}.service" and "journalctl -xeu {unit}.service" for details.\n')


def _starter(unit: str):
    async def on_start(node) -> bool:
        log = Logger(node.lab.clock, node, unit)
        try:
            await (start_server if unit == SERVER_UNIT else start_agent)(node, log)
        except ConfigError as e:
            log.fatal(str(e))
            return False
        except UnitError as e:
            log.log(e.level, str(e))
            return False
        return True

    return on_start


def _stopper(unit: str):
    async def on_stop(node) -> None:
        await (stop_server if unit == SERVER_UNIT else stop_agent)(node, Logger(node.lab.clock, node, unit))
        if node.lab.nodes.get(node.spec.vmid) is not node:  # the machine itself goes down (power-off, reboot)
            kill_containers(node)

    return on_stop


def kill_containers(node) -> None:
    """What k3s-killall.sh does beyond stopping the units: the node's containers stop (the
    shims killed), in whichever cluster they run; other nodes' run on."""
    names = {node_name(node, unit_config(node, unit)) for unit in UNITS if node.exists(unit_path(unit))}
    for cluster in node.lab.clusters.clusters.values():
        for name in names:
            cluster.runtime.stop_node(name)
        if cluster.server_ip == node.spec.ip:  # the twin's one kube-proxy runs with the server
            cluster.close_outliving()


# --- server -------------------------------------------------------------------------------------

async def start_server(node, log: Logger) -> None:
    version = _version(node)
    log.info(f"Starting k3s {version} ({version.commit})")
    cfg = unit_config(node, SERVER_UNIT)
    for warning in cfg.warnings:
        log.warn(warning)
    if cfg.server:
        raise UnitError("Error: joining a server to another server's cluster (--server) is not modelled by the "
                        "embedded lab: it runs one k3s server per cluster")
    snapshot_plan = _snapshot_plan(cfg)
    name, password = node_name(node, cfg), _server_password(node, cfg)
    cluster = await node.lab.clusters.create_server(
        node_name=name, ip=node.spec.ip, version=str(version), token=password,
        tls_san=cfg.tls_san, disable=cfg.disable, cluster_init=cfg.embedded_etcd, **_cidrs(node, cfg))
    try:
        if cluster.token != password:
            raise UnitError("starting kubernetes: preparing server: bootstrap data already found and encrypted "
                            "with different token")
        await _serve(node, cluster, cfg, version, log)
    except BaseException:
        await cluster.stop_api()  # the process exits: nothing listens on 6443
        raise
    _start_controllers(node, cluster, cfg, name, snapshot_plan)
    log.info("k3s is up and running")


async def _serve(node, cluster, cfg: K3sConfig, version: K3sVersion, log: Logger) -> None:
    """From a created cluster to a Ready server node: API, files, packaged components, Node."""
    cluster.version = str(version)  # /version reports the binary that serves it (after an upgrade too)
    log.info("Managed etcd cluster initializing" if cfg.embedded_etcd else
             "Configuring sqlite3 database connection pooling: maxIdleConns=2, maxOpenConns=0, connMaxLifetime=0s")
    await node.lab.clock.sleep(SERVER_START_SECONDS, f"{node.hostname} k3s server start")
    await cluster.start_api()
    log.info(f"Running kube-apiserver --advertise-address={node.spec.ip} --secure-port={API_PORT} "
             f"--tls-san={','.join(cfg.tls_san)}")
    _write_server_files(node, cluster, cfg, log)
    await addons.deploy(node, cluster, cfg.disable, log)
    if cfg.embedded_etcd:
        folder = cfg.get("etcd-snapshot-dir") or snapshots.SNAPSHOT_DIR
        await snapshots.reconcile_records(node, cluster, folder, node_name(node, cfg), log)
    _check_password(node, cluster, node_name(node, cfg))
    await register_node(node, cluster, cfg, "server", version)


async def stop_server(node, log: Logger) -> None:
    cluster = node.lab.clusters.find(node.spec.ip)
    if cluster is None:
        return
    await _mark_not_ready(cluster, node_name(node, unit_config(node, SERVER_UNIT)))
    await cluster.stop_api()
    log.info("Shutting down k3s server: received SIGTERM")


def _snapshot_plan(cfg: K3sConfig) -> tuple[Schedule, int] | None:
    """The cron schedule and retention of automatic etcd snapshots (none without etcd or when
    disabled); a bad value stops k3s at start, as its flag parsing does."""
    if not cfg.embedded_etcd or cfg.get("etcd-disable-snapshots"):
        return None
    cron = cfg.get("etcd-snapshot-schedule-cron") or snapshots.DEFAULT_SCHEDULE
    retention = cfg.get("etcd-snapshot-retention") or str(snapshots.DEFAULT_RETENTION)
    try:
        return Schedule.parse(cron), int(retention)
    except ScheduleError as e:
        raise UnitError(f"Error: invalid etcd-snapshot-schedule-cron {cron!r}: {e}") from e
    except ValueError as e:
        raise UnitError(f'invalid value "{retention}" for flag -etcd-snapshot-retention: parse error') from e


def _start_controllers(node, cluster, cfg: K3sConfig, name: str, snapshot_plan: tuple[Schedule, int] | None) -> None:
    """k3s' own controllers (node passwords, the manifests folder, ServiceLB, the kube-proxy,
    scheduled snapshots) and the CoreDNS pods' server run while this server serves."""
    controllers: list[Controller | ManifestWatcher] = [NodePasswordCleaner(cluster), ManifestWatcher(node, cluster)]
    if "servicelb" not in cfg.disable:
        controllers.append(ServiceLB(cluster))
    if not cfg.get("disable-kube-proxy"):
        controllers.append(KubeProxy(cluster))
    controllers.append(CoreDNS(cluster))  # serves the CoreDNS pods' IPs (none when coredns is disabled)
    controllers.append(KubeletApi(cluster))  # the kubelets' :10250 (metrics)
    if snapshot_plan is not None:
        schedule, retention = snapshot_plan
        controllers.append(snapshots.SnapshotSchedule(
            cluster, node, schedule=schedule, retention=retention, node_name=name,
            folder=cfg.get("etcd-snapshot-dir") or snapshots.SNAPSHOT_DIR))
    # They live exactly as long as the API: Cluster.stop_api (k3s stopping, the lab closing)
    # cancels and awaits the tasks it serves with. (Asked of the kube side: a public hook for this.)
    cluster._tasks.extend(asyncio.create_task(c.run(), name=f"k3s-{c.name}") for c in controllers)


def _cidrs(node, cfg: K3sConfig) -> dict[str, str]:
    """cluster-cidr and service-cidr from config.yaml, else the lab's (k3s' defaults moved into
    loopback); anything the twin cannot bind stops k3s at start, as a bad flag value does."""
    chosen = {}
    for flag, default in (("cluster-cidr", node.lab.config.cluster_cidr), ("service-cidr", node.lab.config.service_cidr)):
        values = cfg.get(flag) or [str(default)]
        if len(values) > 1:
            raise UnitError(f"Error: {flag} {','.join(values)}: dual-stack is not modelled by the embedded lab")
        error = cidrs.loopback_error(flag, values[0])
        if error:
            raise UnitError(f"Error: {error}")
        chosen[flag.replace("-", "_")] = values[0]
    if cidrs.network(chosen["cluster_cidr"]).overlaps(cidrs.network(chosen["service_cidr"])):
        raise UnitError(f"Error: cluster-cidr {chosen['cluster_cidr']} overlaps service-cidr {chosen['service_cidr']}")
    return chosen


def _server_password(node, cfg: K3sConfig) -> str:
    """The cluster's token: configured, or the one this server made before, or a new one."""
    given = cfg.token or (_read_text(node, cfg.get("token-file")) if cfg.get("token-file") else None)
    try:
        if given:
            return tokens.parse(given).password
        if node.is_file(TOKEN_FILE):
            return tokens.parse(node.read(TOKEN_FILE).decode()).password
    except tokens.TokenError as e:
        raise UnitError(f"Error: {e}") from e
    return tokens.generate()


async def bootstrap_cluster(node, cfg: K3sConfig):
    """The embedded-etcd cluster of a server that never ran (`--cluster-reset` restoring a
    snapshot onto a fresh node): created with this node's configuration, left stopped."""
    name, password = node_name(node, cfg), _server_password(node, cfg)
    cluster = await node.lab.clusters.create_server(
        node_name=name, ip=node.spec.ip, version=str(_version(node)), token=password,
        tls_san=cfg.tls_san, disable=cfg.disable, cluster_init=True, **_cidrs(node, cfg))
    await cluster.stop_api()
    _write_tokens(node, cluster, password)
    return cluster


def _write_tokens(node, cluster, password: str) -> None:
    """The join tokens, and the cluster CA where k3s keeps it (for `curl --cacert`, say)."""
    ca_pem = tokens.ca_pem_from_kubeconfig(cluster.kubeconfig_yaml())
    full_token = tokens.node_token(ca_pem, password)
    node.mkdir(f"{SERVER_DIR}/tls", mode=0o700)
    node.write(SERVER_CA, ca_pem, mode=0o644)
    node.write(TOKEN_FILE, (full_token + "\n").encode(), mode=0o600)
    node.write(NODE_TOKEN_FILE, (full_token + "\n").encode(), mode=0o600)


def _write_server_files(node, cluster, cfg: K3sConfig, log: Logger) -> None:
    _write_tokens(node, cluster, cluster.token)
    kubeconfig = cluster.kubeconfig_yaml(f"https://127.0.0.1:{API_PORT}")
    path = cfg.get("write-kubeconfig") or KUBECONFIG
    node.mkdir(posixpath.dirname(path))
    node.write(path, kubeconfig.encode(), mode=cfg.kubeconfig_mode)
    log.info(f"Wrote kubeconfig {path}")
    log.info("Run: k3s kubectl")


# --- agent --------------------------------------------------------------------------------------

async def start_agent(node, log: Logger) -> None:
    version = _version(node)
    log.info(f"Starting k3s agent {version} ({version.commit})")
    cfg = unit_config(node, AGENT_UNIT)
    for warning in cfg.warnings:
        log.warn(warning)
    url = cfg.server
    given = cfg.token or (_read_text(node, cfg.get("token-file")) if cfg.get("token-file") else None)
    if not url:
        raise UnitError("Error: --server is required")
    if not given:
        raise UnitError("Error: --token is required")
    cluster = await _reachable_cluster(node, url, log)
    ca_pem = tokens.ca_pem_from_kubeconfig(cluster.kubeconfig_yaml())
    problem = tokens.join_error(given, server_url=url, cluster_password=cluster.token, ca_pem=ca_pem)
    if problem:
        raise UnitError(*problem)
    skew = skew_error(version, K3sVersion.parse(cluster.version))
    if skew:
        raise UnitError(f"Error: {skew}")
    _check_password(node, cluster, node_name(node, cfg))
    await node.lab.clock.sleep(AGENT_JOIN_SECONDS, f"{node.hostname} k3s agent join")
    if node.lab.nodes.faults.stalls(node.spec.vmid, str(version)):  # injected: the node never comes back
        log.log("error", '"Failed to start ContainerManager" err="failed to initialise top level QOS containers"')
        return
    await register_node(node, cluster, cfg, "agent", version)
    log.info(f"Connecting to proxy url=\"wss://{urlsplit(url).hostname}:{API_PORT}/v1-k3s/connect\"")
    log.info("k3s agent is up and running")


async def stop_agent(node, log: Logger) -> None:
    cfg = unit_config(node, AGENT_UNIT)
    host = urlsplit(cfg.server or "").hostname
    cluster = node.lab.clusters.find(host) if host else None
    if cluster is not None:
        await _mark_not_ready(cluster, node_name(node, cfg))
    log.info("Shutting down k3s agent: received SIGTERM")


async def _reachable_cluster(node, url: str, log: Logger):
    """The cluster answering at ``url``. Like k3s, an agent whose server does not answer yet
    keeps trying (a server still starting, after a lab restart say) before it gives up."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise UnitError(f"Error: invalid server url {url!r}: only https:// URLs are supported")
    port = parts.port or 443
    failure = f"Failed to validate connection to cluster at {url}: failed to get CA certs: " \
              f'Get "{url.rstrip("/")}/cacerts"'
    address = _route(node, parts.hostname, port, failure)
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 5)
        except (OSError, TimeoutError) as e:
            reason = "connect: connection refused" if isinstance(e, ConnectionRefusedError) else "i/o timeout"
            error = f"{failure}: dial tcp {parts.hostname}:{port}: {reason}"
            if attempt == CONNECT_ATTEMPTS - 1:
                raise UnitError(error, "error") from e
            log.log("error", error)
            await node.lab.clock.sleep(CONNECT_RETRY_SECONDS, f"{node.hostname} k3s agent retry to reach the server")
            await asyncio.sleep(CONNECT_RETRY_FLOOR)
            continue
        writer.close()
        break
    cluster = node.lab.clusters.find(address)
    if cluster is None or port != API_PORT:
        raise UnitError(f"{failure}: 404 Not Found", "error")
    return cluster


def _route(node, host: str, port: int, failure: str) -> str:
    """The address the agent dials for ``host``: within the node's lab only (labsim.node.network)."""
    try:
        return network.resolve(node, host)
    except network.NoSuchHost:
        raise UnitError(f"{failure}: dial tcp: lookup {host}: no such host", "error") from None
    except network.NetworkUnreachable:
        raise UnitError(f"{failure}: dial tcp {host}:{port}: connect: network is unreachable", "error") from None


# --- the Node -----------------------------------------------------------------------------------

async def register_node(node, cluster, cfg: K3sConfig, role: str, version: K3sVersion) -> None:
    """Create or refresh the Node (the cluster adds the labels k3s gives its roles); a changed
    version restarts its pods, as a restarted kubelet of another version does."""
    name = node_name(node, cfg)
    existing = cluster.store.get(cluster.store.resource("v1", "Node"), None, name)
    before = (existing or {}).get("status", {}).get("nodeInfo", {}).get("kubeletVersion")
    if before and before != str(version):
        await cluster.set_node_version(name, str(version))
    await cluster.join_node(name=name, ip=node.spec.ip, role=role, version=str(version),
                            labels=cfg.node_labels, taints=cfg.node_taints,
                            cores=node.spec.cores, memory_mib=node.spec.memory_mib,
                            disk_bytes=node.spec.disk_bytes, boot_id=_boot_id(node))
    await cluster.set_node_ready(name, True)
    await addons.add_node_host(cluster, node.spec.ip, name)


async def _mark_not_ready(cluster, name: str) -> None:
    """The kubelet stops posting status; a Node deleted meanwhile has nothing to mark."""
    try:
        await cluster.set_node_ready(name, False)
    except StoreError as e:
        if e.code != 404:
            raise


def _check_password(node, cluster, name: str) -> None:
    if not nodepassword.verify(cluster, name, nodepassword.local_password(node)):
        raise UnitError(f"Failed to retrieve agent config: {nodepassword.REJECTED}", "error")


def _boot_id(node) -> str:
    """What the kubelet reports as the Node's bootID: the same across k3s restarts, new after a reboot."""
    return node.read("/proc/sys/kernel/random/boot_id").decode().strip()


def _version(node) -> K3sVersion:
    version = installed_version(node)
    if version is None:
        raise UnitError(f"Failed to execute command: {BINARY}: no such file or directory")
    return version


def _read_text(node, path: str) -> str:
    try:
        return node.read(path).decode().strip()
    except (FileNotFoundError, IsADirectoryError) as e:
        raise UnitError(f"Error: failed to read token file {path}: {e.strerror or e}") from e
