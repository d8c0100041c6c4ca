"""Lab file validation: every bad input stops with the YAML path and the fix, never a traceback."""

from __future__ import annotations

import copy
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest
import yaml

from labkit.cli import main
from labkit.errors import LabError, ParamsError
from labkit.params import load_lab
from tests.labfiles import REPO
from tests.labkit.conftest import CLOUDFLARE_TOKEN, PVE_TOKEN, write


def test_the_committed_lab_files_are_valid(lab_doc, tmp_path):
    lab = load_lab(write(tmp_path, lab_doc))
    assert [n.name for n in lab.nodes] == ["k3s-master", "k3s-worker-01", "k3s-worker-02"]
    assert lab.master.name == "k3s-master" and len(lab.agents) == 2
    assert lab.kubeconfig == tmp_path / "kubeconfig"  # relative paths resolve against the file's folder
    sim = load_lab(REPO / "parameters" / "sim.yaml")
    assert sim.kind == "embedded" and str(sim.nodes[0].ip) == "127.0.2.20"
    assert sim.embedded.state_dir == REPO / ".labsim"
    assert (str(sim.k3s.cluster_cidr), str(sim.k3s.service_cidr)) == ("127.42.0.0/16", "127.43.0.0/16")
    assert lab.k3s.cluster_cidr is None and lab.k3s.service_cidr is None  # the real lab keeps k3s' defaults


def test_the_core_infra_sections_of_the_committed_lab_files(lab_doc, tmp_path):
    lab = load_lab(write(tmp_path, lab_doc))
    sim = load_lab(REPO / "parameters" / "sim.yaml")
    for each, net in ((lab, "192.168.2"), (sim, "127.0.2")):
        assert (str(each.nfs.server), each.nfs.path) == (f"{net}.2", "/volume1/k8s-data")
        assert (each.nfs.storage_class, each.nfs.default_class, each.nfs.archive_on_delete) == ("nfs-client", True, True)
        assert [(p, str(a), str(b)) for p, a, b in each.metallb.ranges()] == [
            ("metallb.addresses", f"{net}.100", f"{net}.149")]
        assert [i.name for i in each.tls.issuers] == ["letsencrypt-staging", "letsencrypt-prod"]
        assert each.tls.solver.dns01.provider == "cloudflare" and each.tls.solver.http01 is None
        assert (each.ingress.domain, each.ingress.redirect_https, each.ingress.dashboard) == ("home.example.com", True, False)
        assert sorted(each.charts) == ["cert-manager", "metallb", "nfs-subdir-external-provisioner"]
        assert each.charts["cert-manager"].namespace == "infra"
        assert each.charts["metallb"].values == REPO / "parameters" / "values" / "metallb.yaml"
        assert each.charts["metallb"].values.exists()
    assert lab.tls.issuers[1].server == "https://acme-v02.api.letsencrypt.org/directory"
    assert lab.secret_refs()["tls.solver.dns01.api_token"].env == "LABKIT_CLOUDFLARE_TOKEN"



def test_the_apps_section_of_the_committed_lab_files(lab_doc, tmp_path):
    lab = load_lab(write(tmp_path, lab_doc))
    sim = load_lab(REPO / "parameters" / "sim.yaml")
    for each in (lab, sim):
        assert list(each.apps.enabled()) == ["ollama", "n8n", "nginx"]
        assert all(":" in app.image and not app.image.endswith(":latest") for app in each.apps.enabled().values())
        assert each.apps.ollama.models and each.apps.ollama.benchmark.repetitions >= 1
        assert (each.apps.n8n.database.user, each.apps.n8n.database.password) == ("n8n", "generate")
        assert set(each.apps.nginx.upstreams) == {"ollama", "n8n"}
    lab_doc["apps"]["n8n"]["encryption_key"] = "env:LABKIT_N8N_KEY"
    lab_doc["apps"]["nginx"]["enabled"] = False
    with pytest.raises(ParamsError, match=r"apps.n8n.encryption_key: environment variable LABKIT_N8N_KEY is not set"):
        load_lab(write(tmp_path, lab_doc))
    lab = load_lab(write(tmp_path, lab_doc), check_files=False)
    assert str(lab.secret_refs()["apps.n8n.encryption_key"]) == "env:LABKIT_N8N_KEY"
    assert list(lab.apps.enabled()) == ["ollama", "n8n"]

def test_the_lab_file_sections_before_issue_11_still_load(lab_doc, tmp_path):
    """Lab files written before charts/tls existed (metallb/nfs/ingress in their short form) stay valid."""
    for key in ("charts", "tls"):
        del lab_doc[key]
    lab_doc["metallb"] = {"addresses": "192.168.2.100-192.168.2.149"}
    lab_doc["nfs"] = {"server": "192.168.2.2", "path": "/volume1/k8s-data"}
    lab_doc["ingress"] = {"domain": "home.example.com", "issuer": "letsencrypt-prod"}
    lab = load_lab(write(tmp_path, lab_doc))
    assert lab.charts == {} and lab.tls is None and lab.nfs.storage_class == "nfs-client"
    assert lab.nfs.mount_options == ["nfsvers=4.1"] and lab.metallb.l2_advertisement


def test_an_unknown_node_name_is_a_lab_error_naming_it(lab_doc, tmp_path):
    lab = load_lab(write(tmp_path, lab_doc))
    assert lab.node("k3s-worker-01") is lab.nodes[1]
    with pytest.raises(LabError, match=r"no node named 'k3s-worker-09'.*k3s-master, k3s-worker-01, k3s-worker-02"):
        lab.node("k3s-worker-09")


def _set(path: str, value) -> Callable[[dict], None]:
    """A mutation setting a dotted path (``nodes.1.ip``) in the lab document."""

    def apply(doc: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for part in parents:
            doc = doc[part]
        doc[last] = value

    return apply


def _delete(path: str) -> Callable[[dict], None]:
    def apply(doc: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for part in parents:
            doc = doc[part]
        del doc[last]

    return apply


def _both(*mutations):
    def apply(doc):
        for m in mutations:
            m(doc)

    return apply


def _add_node(**fields):
    def apply(doc):
        node = dict(doc["nodes"][-1]) | fields
        doc["nodes"].append(node)

    return apply


BAD = {
    "ip not IPv4": (_set("nodes.1.ip", "192.168.2.300"), "nodes[1].ip: '192.168.2.300' is not an IPv4 address"),
    "ip outside subnet": (_set("nodes.2.ip", "10.0.0.5"), "nodes[2].ip: 10.0.0.5 is not a usable address of network.subnet 192.168.2.0/24"),
    "ip is broadcast": (_set("nodes.2.ip", "192.168.2.255"), "nodes[2].ip: 192.168.2.255 is not a usable address"),
    "gateway outside": (_set("network.gateway", "192.168.3.1"), "network.gateway: 192.168.3.1 is not a usable address"),
    "subnet host bits": (_set("network.subnet", "192.168.2.1/24"), "network.subnet: '192.168.2.1/24' is not an IPv4 subnet"),
    "duplicate name": (_set("nodes.2.name", "k3s-worker-01"), "nodes[2].name: 'k3s-worker-01' is already used by nodes[1]"),
    "duplicate vmid": (_set("nodes.2.vmid", 121), "nodes[2].vmid: '121' is already used by nodes[1]"),
    "duplicate ip": (_set("nodes.2.ip", "192.168.2.21"), "nodes[2].ip: '192.168.2.21' is already used by nodes[1]"),
    "vmid is template": (_set("nodes.1.vmid", 9000), "nodes[1].vmid: 9000 is the template"),
    "vmid too small": (_set("nodes.0.vmid", 99), "nodes[0].vmid: 99 is out of range"),
    "node ip is gateway": (_set("nodes.1.ip", "192.168.2.1"), "nodes[1].ip: 192.168.2.1 is the gateway"),
    "pool outside subnet": (_set("metallb.addresses", "192.168.3.100-192.168.3.149"), "metallb.addresses: 192.168.3.100 is not a usable address"),
    "pool overlaps node": (_set("metallb.addresses", "192.168.2.10-192.168.2.30"), "metallb.addresses: 192.168.2.10-192.168.2.30 contains 192.168.2.20, used by nodes[0] (k3s-master)"),
    "pool overlaps gateway": (_set("metallb.addresses", "192.168.2.1-192.168.2.5"), "contains 192.168.2.1, used by the gateway"),
    "pool reversed": (_set("metallb.addresses", "192.168.2.149-192.168.2.100"), "192.168.2.149 comes after 192.168.2.100"),
    "pod network overlaps subnet": (_set("k3s.cluster_cidr", "192.168.0.0/16"), "k3s.cluster_cidr: 192.168.0.0/16 overlaps network.subnet 192.168.2.0/24"),
    "service network overlaps pods": (_set("k3s.service_cidr", "10.42.128.0/20"), "k3s.service_cidr: 10.42.128.0/20 overlaps k3s.cluster_cidr 10.42.0.0/16"),
    "service network overlaps pool": (_set("k3s.service_cidr", "192.168.2.128/25"), "k3s.service_cidr: 192.168.2.128/25 overlaps metallb.addresses 192.168.2.100-192.168.2.149"),
    "pod network too small": (_set("k3s.cluster_cidr", "10.42.0.0/23"), "k3s.cluster_cidr: 10.42.0.0/23 is too small: each of the 3 nodes takes a /24"),
    "pod network host bits": (_set("k3s.cluster_cidr", "10.42.0.1/16"), "k3s.cluster_cidr: '10.42.0.1/16' is not an IPv4 subnet"),
    "no server": (_set("nodes.0.role", "agent"), "nodes: no node has role: server"),
    "bad role": (_set("nodes.0.role", "master"), "nodes[0].role: 'master' is not allowed; input should be 'server' or 'agent'"),
    "even servers": (_both(_set("nodes.1.role", "server")), "nodes: 2 servers; embedded etcd HA needs an odd number"),
    "HA without etcd": (_both(_set("nodes.1.role", "server"), _set("nodes.2.role", "server"), _set("k3s.cluster_init", False)),
                        "k3s.cluster_init: 3 servers need embedded etcd"),
    "k3s version format": (_set("k3s.version", "1.34.3"), "k3s.version: '1.34.3' is not a k3s version like v1.34.3+k3s1"),
    "cores zero": (_set("nodes.0.cores", 0), "nodes[0].cores: 0 is out of range: input should be greater than or equal to 1"),
    "memory too small": (_set("nodes.1.memory_mib", 128), "nodes[1].memory_mib: 128 is out of range"),
    "disk absurd": (_set("nodes.1.disk_gib", 10**6), "nodes[1].disk_gib: 1000000 is out of range"),
    "unknown top key": (_set("kubeconfg", "x"), "kubeconfg: unknown key (did you mean 'kubeconfig'?)"),
    "unknown nested key": (_set("proxmox.tokn_id", "x"), "proxmox.tokn_id: unknown key (did you mean 'token_id'?)"),
    "unknown node key": (_set("nodes.0.memory", 4096), "nodes[0].memory: unknown key (did you mean 'memory_mib'?)"),
    "missing section": (_delete("ssh"), "ssh: required key is missing"),
    "missing field": (_delete("nodes.0.ip"), "nodes[0].ip: required key is missing"),
    "empty nodes": (_set("nodes", []), "nodes: must not be empty"),
    "bad token id": (_set("proxmox.token_id", "root-labkit"), "proxmox.token_id: 'root-labkit' is not an API token id"),
    "bad hostname": (_set("nodes.0.name", "K3s_Master"), "nodes[0].name: 'K3s_Master' is not a valid host name"),
    "bad tag": (_set("nodes.0.tags", ["K3S!"]), "nodes[0].tags[0]: 'K3S!' is not a Proxmox tag"),
    "unknown k3s component": (_set("k3s.disable", ["servicelb", "trafik"]), "k3s.disable[1]: 'trafik' is not allowed"),
    "both trust anchors": (_set("proxmox.fingerprint", ":".join(["AB"] * 32)), "proxmox: give exactly one of ca_file"),
    "bad fingerprint": (_both(_delete("proxmox.ca_file"), _set("proxmox.fingerprint", "AB:CD")), "proxmox.fingerprint: 'AB:CD' is not a SHA-256 fingerprint"),
    "port out of range": (_set("ssh.port", 70000), "ssh.port: 70000 is out of range"),
    "bad kind": (_set("kind", "cloud"), "kind: 'cloud' is not allowed"),
    "embedded on real": (_set("embedded", {"time_scale": 0}), "embedded: only for kind: embedded"),
    "embedded off loopback": (_set("kind", "embedded"), "network.subnet: 192.168.2.0/24 is not loopback"),
    "nfs path relative": (_set("nfs.path", "volume1"), "nfs.path: 'volume1' is not an absolute export path"),
    "dns empty": (_set("network.dns", []), "network.dns: must not be empty"),
    "missing CA file": (_set("proxmox.ca_file", "nope.pem"), "proxmox.ca_file: file"),
    "bool for int": (_set("nodes.0.cores", True), "nodes[0].cores: True: input should be a valid integer"),
    "string for port": (_set("ssh.port", "22"), "ssh.port: '22': input should be a valid integer"),
    "string for bool": (_set("k3s.cluster_init", "yes"), "k3s.cluster_init: 'yes': input should be a valid boolean"),
    "pool holds NFS": (_set("metallb.addresses", "192.168.2.2-192.168.2.9"),
                       "contains 192.168.2.2, used by the NFS server (nfs.server)"),
    "storage with options": (_set("proxmox.storage", "local-lvm,size=1"),
                             "proxmox.storage: 'local-lvm,size=1' is not a PVE storage id like local-lvm"),
    "bridge with options": (_set("proxmox.bridge", "vmbr0,firewall=0"),
                            "proxmox.bridge: 'vmbr0,firewall=0' is not a Linux bridge name like vmbr0"),
    "nfs server not a host": (_set("nfs.server", "nas server"), "nfs.server: 'nas server' is not an IPv4 address or a DNS name"),
    "nfs server bad IP": (_set("nfs.server", "192.168.2.300"), "nfs.server: '192.168.2.300' is not an IPv4 address or a DNS"),
    "tls_san not a host": (_set("k3s.tls_san", ["k3s-master", "https://k3s"]),
                           "k3s.tls_san[1]: 'https://k3s' is not an IPv4 address or a DNS name"),
    "proxmox host URL": (_set("proxmox.host", "https://pve:8006"), "proxmox.host: 'https://pve:8006' is not an IPv4"),
    "chart version unpinned": (_set("charts.metallb.version", "^0.15"), "charts.metallb.version: '^0.15' is not a pinned chart version"),
    "chart version latest": (_set("charts.cert-manager.version", "latest"), "charts.cert-manager.version: 'latest' is not a pinned chart version"),
    "chart version missing": (_delete("charts.metallb.version"), "charts.metallb.version: required key is missing"),
    "chart unknown key": (_set("charts.metallb.valuess", "x.yaml"), "charts.metallb.valuess: unknown key (did you mean 'values'?)"),
    "chart values file missing": (_set("charts.metallb.values", "values/nope.yaml"), "charts.metallb.values: file"),
    "chart repo not a URL": (_set("charts.metallb.repo", "metallb/metallb"), "charts.metallb.repo: 'metallb/metallb' is not a chart repository URL"),
    "pool range reversed": (_set("metallb.pools", [{"name": "extra", "addresses": ["192.168.2.160-192.168.2.150"]}]), "metallb.pools[0].addresses[0]: 192.168.2.160 comes after 192.168.2.150"),
    "pools overlap": (_set("metallb.pools", [{"name": "extra", "addresses": ["192.168.2.144/28"]}]), "metallb.pools[0].addresses[0]: 192.168.2.144-192.168.2.159 overlaps metallb.addresses"),
    "pool name taken": (_set("metallb.pools", [{"name": "default", "addresses": ["192.168.2.200/30"]}]), "metallb.pools[0].name: 'default' is already a pool's name"),
    "nfs reclaim policy": (_set("nfs.reclaim_policy", "Recycle"), "nfs.reclaim_policy: 'Recycle' is not allowed"),
    "storage class name": (_set("nfs.storage_class", "NFS_Client"), "nfs.storage_class: 'NFS_Client' is not a Kubernetes name"),
    "nfs unknown key": (_set("nfs.archiveOnDelete", True), "nfs.archiveOnDelete: unknown key (did you mean 'archive_on_delete'?)"),
    "two solvers": (_set("tls.solver.http01", {}), "tls.solver: give exactly one of dns01"),
    "no solver": (_set("tls.solver", {}), "tls.solver: give exactly one of dns01"),
    "acme over http": (_set("tls.issuers.0.server", "http://acme.example"), "tls.issuers[0].server: 'http://acme.example' is not an ACME directory URL"),
    "bad email": (_set("tls.email", "admin"), "tls.email: 'admin' is not an e-mail address"),
    "ingress issuer unknown": (_set("ingress.issuer", "letsencrypt"), "ingress.issuer: 'letsencrypt' is not one of tls.issuers (letsencrypt-staging, letsencrypt-prod)"),
    "ingress unknown key": (_set("ingress.redirect", True), "ingress.redirect: unknown key (did you mean 'redirect_https'?)"),
    "app image latest": (_set("apps.ollama.image", "ollama/ollama:latest"),
                         "apps.ollama.image: 'ollama/ollama:latest' is not pinned: give the image's release tag"),
    "app image untagged": (_set("apps.nginx.image", "nginx"), "apps.nginx.image: 'nginx' is not pinned"),
    "app chart unpinned": (_set("apps.n8n.chart.version", "~1.15"), "apps.n8n.chart.version: '~1.15' is not a pinned chart version"),
    "app chart latest": (_set("apps.ollama.chart.version", "latest"), "apps.ollama.chart.version: 'latest' is not a pinned"),
    "app host outside domain": (_set("apps.n8n.host", "n8n.example.org"),
                                "apps.n8n.host: 'n8n.example.org' is not under ingress.domain 'home.example.com'; use e.g. n8n.home.example.com"),
    "app limits below requests": (_set("apps.ollama.limits.memory", "512Mi"),
                                  "apps.ollama.limits.memory: 512Mi is below apps.ollama.requests.memory 1Gi"),
    "model without tag": (_set("apps.ollama.models", ["llama3.2"]), "apps.ollama.models[0]: 'llama3.2' is not an Ollama model name:tag"),
    "no models": (_set("apps.ollama.models", []), "apps.ollama.models: must not be empty"),
    "zero repetitions": (_set("apps.ollama.benchmark.repetitions", 0), "apps.ollama.benchmark.repetitions: 0 is out of range"),
    "upstream not a URL": (_set("apps.nginx.upstreams.n8n", "n8n:5678"), "apps.nginx.upstreams.n8n: 'n8n:5678' is not an upstream URL"),
    "upstream bad name": (_set("apps.nginx.upstreams", {"Bad_Name": "http://x:1"}), "apps.nginx.upstreams.Bad_Name"),
    "bad timezone": (_set("apps.n8n.timezone", "Mars/Olympus"), "apps.n8n.timezone: 'Mars/Olympus' is not an IANA time zone"),
    "n8n key pasted": (_set("apps.n8n.encryption_key", "s3cr3t-value"), "apps.n8n.encryption_key: must be a secret reference"),
    "n8n as postgres user": (_set("apps.n8n.database.user", "homelab"), "apps.n8n.database.user: 'homelab' is already"),
    "n8n without postgres": (_delete("postgres"), "apps.n8n: stores its workflows in the postgres section's PostgreSQL"),
    "app unknown key": (_set("apps.ollama.model", ["x:1"]), "apps.ollama.model: unknown key (did you mean 'models'?)"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=sorted(BAD))
def test_bad_parameters_name_the_path_and_the_fix(case, lab_doc, tmp_path):
    mutate, expected = BAD[case]
    doc = copy.deepcopy(lab_doc)
    mutate(doc)
    with pytest.raises(ParamsError) as err:
        load_lab(write(tmp_path, doc))
    assert any(expected in line for line in err.value.errors), err.value.errors


def test_enough_distinct_bad_cases():
    assert len({msg for _, msg in BAD.values()}) >= 25


def test_a_pasted_secret_is_refused_without_being_echoed(lab_doc, tmp_path):
    lab_doc["proxmox"]["token_secret"] = PVE_TOKEN
    lab_doc["tls"]["solver"]["dns01"]["api_token"] = CLOUDFLARE_TOKEN
    lab_doc["k3s"]["token"] = "K10abcdef::server:hunter2hunter2"
    with pytest.raises(ParamsError) as err:
        load_lab(write(tmp_path, lab_doc))
    text = str(err.value)
    assert "proxmox.token_secret: must be a secret reference (env:NAME or file:PATH#key), not a value" in text
    assert "k3s.token: must be a secret reference" in text
    assert "tls.solver.dns01.api_token: must be a secret reference" in text
    assert PVE_TOKEN not in text and "hunter2" not in text and CLOUDFLARE_TOKEN not in text


def test_a_token_id_with_its_secret_pasted_is_refused_without_echo(lab_doc, tmp_path):
    lab_doc["proxmox"]["token_id"] = f"root@pam!labkit={PVE_TOKEN}"
    with pytest.raises(ParamsError) as err:
        load_lab(write(tmp_path, lab_doc))
    assert err.value.errors == ["proxmox.token_id: holds '=' and what follows it, as PVE's `user@realm!name=SECRET` "
                                "does: give the id only (like root@pam!labkit) and the secret as a reference in "
                                "proxmox.token_secret"]
    assert PVE_TOKEN not in str(err.value) and PVE_TOKEN[:8] not in str(err.value)


def test_all_errors_are_reported_at_once(lab_doc, tmp_path):
    lab_doc["nodes"][1]["ip"] = "192.168.2.300"
    lab_doc["k3s"]["version"] = "latest"
    with pytest.raises(ParamsError) as err:
        load_lab(write(tmp_path, lab_doc))
    assert len(err.value.errors) == 2


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text("name: x\nnodes: [\n  - a: b\n")
    with pytest.raises(ParamsError) as err:
        load_lab(path)
    assert "line " in err.value.errors[0] and "not valid YAML" in err.value.errors[0]


def test_not_a_mapping(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ParamsError, match="must be a YAML mapping"):
        load_lab(path)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_lab(tmp_path / "nope.yaml")


def test_embedded_state_files_need_not_exist_yet(tmp_path):
    """The embedded lab creates its CA, keys and secrets on first start."""
    from tests.labfiles import write_lab

    lab = load_lab(write_lab(tmp_path))
    assert not lab.proxmox.ca_file.exists()


def test_pod_and_service_networks_go_into_the_k3s_config_only_when_set(lab_doc, tmp_path):
    from labkit import k3s

    real = load_lab(write(tmp_path, lab_doc))
    assert not {"cluster-cidr", "service-cidr"} & k3s.server_config(real, real.master).keys()
    lab_doc["k3s"].update(cluster_cidr="10.52.0.0/16", service_cidr="10.53.0.0/16")
    custom = load_lab(write(tmp_path, lab_doc))
    config = k3s.server_config(custom, custom.master)
    assert (config["cluster-cidr"], config["service-cidr"]) == ("10.52.0.0/16", "10.53.0.0/16")
    assert "cluster-cidr" not in k3s.agent_config(custom, custom.agents[0], token="t")  # a server flag only


def test_the_embedded_lab_needs_loopback_pod_and_service_networks(tmp_path):
    from tests.labfiles import sim_lab, write_lab

    doc = sim_lab(tmp_path)
    del doc["k3s"]["cluster_cidr"]
    lab = load_lab(write_lab(tmp_path, doc), check_files=False)
    assert str(lab.k3s.cluster_cidr) == "127.42.0.0/16"  # unset: k3s' 10.42/16, moved into loopback
    doc["k3s"]["service_cidr"] = "10.43.0.0/16"
    with pytest.raises(ParamsError) as err:
        load_lab(write_lab(tmp_path, doc))
    assert "k3s.service_cidr: 10.43.0.0/16 is not loopback; the embedded lab binds 127.0.0.0/8 only: " \
           "set e.g. service_cidr: 127.43.0.0/16" in err.value.errors


def test_real_lab_files_must_exist(lab_doc, tmp_path):
    (tmp_path / "id.pub").unlink()
    with pytest.raises(ParamsError, match=r"ssh.public_key: file .*id.pub does not exist"):
        load_lab(write(tmp_path, lab_doc))
    assert load_lab(write(tmp_path, lab_doc), check_files=False).ssh.public_key == Path(tmp_path / "id.pub")


def test_a_private_key_as_public_key_is_refused_without_being_printed(lab_doc, tmp_path, capsys):
    """The common slip: ssh.public_key pointing at the private key, which a run would otherwise
    write into the VMs' PVE config and authorized_keys."""
    lab_doc["ssh"]["public_key"] = "id"
    path = write(tmp_path, lab_doc)
    assert main(["check", "--params", str(path), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "ssh.public_key: " in err and "is a PRIVATE key, which must never leave this machine" in err
    body = [line for line in (tmp_path / "id").read_text().splitlines() if "-----" not in line]
    assert body and not any(line in err for line in body)


@pytest.mark.parametrize("content, expected", [
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample operator\n", "is not an OpenSSH public key line"),
    ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIBHklVyrsYDYPkINZQCPZpE6PgRElmVgOfMRfFyvPhfc me\n", "is not an OpenSSH public"),
    ('command="sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBHklVyrsYDYPkINZQCPZpE6PgRElmVgOfMRfFyvPhfc\n', "not an OpenSSH"),
    ("", "holds 0 key lines"),
])
def test_public_key_must_be_one_openssh_public_key_line(content, expected, lab_doc, tmp_path):
    (tmp_path / "id.pub").write_text(content)
    with pytest.raises(ParamsError) as err:
        load_lab(write(tmp_path, lab_doc))
    assert any(line.startswith("ssh.public_key: ") and expected in line for line in err.value.errors), err.value.errors


def test_a_public_key_line_without_comment_passes_and_two_keys_do_not(lab_doc, tmp_path):
    line = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    (tmp_path / "id.pub").write_text(" ".join(line.split()[:2]))
    assert load_lab(write(tmp_path, lab_doc)).ssh.public_key == tmp_path / "id.pub"
    (tmp_path / "id.pub").write_text(line * 2)
    with pytest.raises(ParamsError, match="holds 2 key lines"):
        load_lab(write(tmp_path, lab_doc))


BOMB = "lol: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)) + "name: *i\n"


def _check_limited(path: Path, *extra: str) -> subprocess.CompletedProcess:
    """`labkit check` in a process of its own held to 1 GiB of memory and a minute: what a bomb
    or /dev/zero would exhaust fails there, not in the test run."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run([sys.executable, "-m", "labkit.cli", "check", "--params", str(path), *extra],
                          capture_output=True, text=True, timeout=60, preexec_fn=limit)


def test_a_yaml_bomb_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 1024
    done = _check_limited(path)
    assert done.returncode == 2, done.stderr[-500:]
    assert "aliases (*name) expand to more than 100000 values, as a YAML bomb does" in done.stderr
    path.write_text("a: &x [1, *x]\n")
    with pytest.raises(ParamsError, match="line 1: a recursive alias"):
        load_lab(path)


def test_duplicate_keys_are_refused_with_both_lines(lab_doc, tmp_path):
    text = write(tmp_path, lab_doc).read_text()
    path = tmp_path / "twice.yaml"
    path.write_text(text + "nodes:\n- {name: other, role: server, vmid: 130, ip: 192.168.2.30}\n")
    with pytest.raises(ParamsError) as err:
        load_lab(path)
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("nodes:"))
    assert err.value.errors == [f"line {len(text.splitlines()) + 1}: key 'nodes' appears twice in one mapping "
                                f"(first on line {first}); the second would silently replace the first: keep one"]
    path.write_text("base: &b {cores: 2}\nnode: {<<: *b, memory: 1}\n")  # a merge key is no duplicate
    with pytest.raises(ParamsError, match="base: unknown key"):
        load_lab(path)


def test_messages_quote_a_short_excerpt_never_a_whole_value(lab_doc, tmp_path):
    lab_doc["nodes"][0]["name"] = "x" * 100_000
    lab_doc["nodes"][1]["ip"] = {"nested": ["deep"] * 1000}
    lab_doc["proxmox"]["node"] = ["pve"] * 1000
    with pytest.raises(ParamsError) as err:
        load_lab(write(tmp_path, lab_doc))
    assert max(len(line) for line in err.value.errors) < 200, err.value.errors
    assert any(line.startswith("nodes[0].name: 'xxxx") and "...' is not a valid host name" in line
               for line in err.value.errors)
    assert "nodes[1].ip: a mapping is not an IPv4 address" in err.value.errors
    assert "proxmox.node: a list of 1000 items: input should be a valid string" in err.value.errors


def test_huge_or_special_files_are_refused_not_read(lab_doc, tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    with pytest.raises(ParamsError, match=r"big.yaml is \d+ bytes; at most 1048576 bytes are read"):
        load_lab(big)
    lab_doc["k3s"]["token"] = "file:/dev/zero"
    done = _check_limited(write(tmp_path, lab_doc), "--strict")
    assert done.returncode == 2, done.stderr[-500:]
    assert "k3s.token: secret file:/dev/zero: /dev/zero is not a regular file" in done.stderr


def test_check_strict_reads_the_referenced_files(lab_doc, tmp_path):
    (tmp_path / "secrets.yaml").write_text("pve: x-secret-value\n")
    (tmp_path / "latin1").write_bytes("contraseña\n".encode("latin-1"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "pve-ca.pem").write_text("not a certificate\n")
    lab_doc["proxmox"]["token_secret"] = "file:secrets.yaml#token"
    lab_doc["k3s"]["token"] = "file:folder"
    lab_doc["ssh"]["private_key"] = "file:latin1"
    with pytest.raises(ParamsError) as err:
        load_lab(write(tmp_path, lab_doc))
    assert err.value.errors == [
        f"proxmox.ca_file: {tmp_path}/pve-ca.pem is not a PEM certificate (-----BEGIN CERTIFICATE-----...); "
        "give the PVE CA, /etc/pve/pve-root-ca.pem on the host",
        f"proxmox.token_secret: secret file:secrets.yaml#token: key 'token' not found in {tmp_path}/secrets.yaml",
        f"ssh.private_key: secret file:latin1: {tmp_path}/latin1 is not UTF-8 text",
        f"k3s.token: secret file:folder: {tmp_path}/folder is a directory; give a file"]
    assert "x-secret-value" not in str(err.value) and "contrase" not in str(err.value)


def test_an_embedded_state_dir_that_is_a_file_is_refused(tmp_path):
    from tests.labfiles import sim_lab, write_lab

    doc = sim_lab(tmp_path)
    Path(doc["embedded"]["state_dir"]).write_text("a file\n")
    with pytest.raises(ParamsError, match=r"embedded.state_dir: .*labsim is a file; give a folder"):
        load_lab(write_lab(tmp_path, doc))


def test_unreadable_lab_files_and_bad_command_lines_exit_2_with_a_message(tmp_path, capsys):
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text("name: lab\n", encoding="utf-16")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    for path, expected in ((utf16, "utf16.yaml is not UTF-8 text"), (latin1, "latin1.yaml is not UTF-8 text"),
                           (tmp_path, f"{tmp_path} is a directory; give a file")):
        assert main(["check", "--params", str(path)]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
    assert main(["run", "--params", str(REPO / "parameters" / "sim.yaml"), "-p", "reconcile", "[true"]) == 2
    err = capsys.readouterr().err
    assert "-p reconcile: line 1, column 6: not valid YAML" in err and "Traceback" not in err


# -- observability (04) ------------------------------------------------------------------------------

def test_the_observability_sections_of_the_committed_lab_files(lab_doc, tmp_path):
    lab = load_lab(write(tmp_path, lab_doc))
    sim = load_lab(REPO / "parameters" / "sim.yaml")
    for each in (lab, sim):
        obs = each.observability
        assert sorted(obs.charts) == ["kube-prometheus-stack", "loki-stack", "promtail"]
        assert (obs.prometheus.retention, obs.prometheus.retention_size, obs.loki.retention) == ("7d", "15GB", "168h")
        assert (obs.routing.group_wait, obs.routing.repeat_interval, obs.routing.page_severities) == ("10s", "4h", ["critical"])
        assert obs.grafana.host == "grafana.home.example.com" and obs.ntfy.topic == "homelab-alerts"
        assert obs.rules == REPO / "parameters" / "alerts" and obs.rules.is_dir()
    assert lab.secret_refs()["observability.grafana.admin_password"].env == "LABKIT_GRAFANA_PASSWORD"
    assert lab.secret_refs()["observability.ntfy.access_token"].env == "LABKIT_NTFY_TOKEN"
    assert sim.observability.ntfy.access_token.key == "ntfy_access_token" and sim.observability.ntfy.server == "https://127.0.2.9"
    assert sim.observability.ntfy.ca_file == REPO / ".labsim" / "pebble" / "tls" / "ca.pem"  # the embedded lab's web PKI
    assert sim.secret_refs()["observability.ntfy.access_token"].key == "ntfy_access_token"  # the ntfy model's token


OBS = "observability"
OBS_BAD = {
    "retention larger than the volume": (_set(f"{OBS}.prometheus.retention_size", "25GB"),
                                         f"{OBS}.prometheus: retention_size 25GB is larger than volume_size 20Gi"),
    "retention size unit": (_set(f"{OBS}.prometheus.retention_size", "15Gi"), f"{OBS}.prometheus.retention_size: '15Gi' is not a size like 15GB"),
    "retention not a duration": (_set(f"{OBS}.prometheus.retention", "7 days"), f"{OBS}.prometheus.retention: '7 days' is not a duration"),
    "volume size not a quantity": (_set(f"{OBS}.loki.volume_size", "10GB"), f"{OBS}.loki.volume_size: '10GB' is not a volume size like 20Gi"),
    "loki retention in part days": (_set(f"{OBS}.loki.retention", "36h"), f"{OBS}.loki: retention 36h is not a multiple of 24h"),
    "storage class name": (_set(f"{OBS}.prometheus.storage_class", "NFS"), f"{OBS}.prometheus.storage_class: 'NFS' is not a Kubernetes name"),
    "chart unpinned": (_set(f"{OBS}.charts.kube-prometheus-stack.version", "72.x"),
                       f"{OBS}.charts.kube-prometheus-stack.version: '72.x' is not a pinned chart version"),
    "chart missing": (_delete(f"{OBS}.charts.promtail"), f"{OBS}.charts: give promtail (the stack 04 installs)"),
    "two lokis": (_set(f"{OBS}.charts.loki", {"repo": "https://grafana.github.io/helm-charts", "version": "6.30.1",
                                              "namespace": "monitoring"}), f"{OBS}.charts: give exactly one of loki or loki-stack"),
    "grafana outside the domain": (_set(f"{OBS}.grafana.host", "grafana.example.org"),
                                   f"{OBS}.grafana.host: 'grafana.example.org' is not under ingress.domain 'home.example.com'"),
    "grafana password pasted": (_set(f"{OBS}.grafana.admin_password", "hunter2-hunter2"), f"{OBS}.grafana.admin_password: must be a secret reference"),
    "grafana password env unset": (_set(f"{OBS}.grafana.admin_password", "env:LABKIT_NO_SUCH_PASSWORD"),
                                   f"{OBS}.grafana.admin_password: environment variable LABKIT_NO_SUCH_PASSWORD is not set"),
    "ntfy over http": (_set(f"{OBS}.ntfy.server", "http://ntfy.sh"), f"{OBS}.ntfy.server: 'http://ntfy.sh' is not an ntfy server URL"),
    "ntfy topic with a slash": (_set(f"{OBS}.ntfy.topic", "home/alerts"), f"{OBS}.ntfy.topic: 'home/alerts' is not an ntfy topic"),
    "group_wait not a duration": (_set(f"{OBS}.routing.group_wait", "10"), f"{OBS}.routing.group_wait: '10' is not a duration"),
    "repeat shorter than group": (_set(f"{OBS}.routing.repeat_interval", "1m"),
                                  f"{OBS}.routing: repeat_interval 1m is shorter than group_interval 5m"),
    "paging severity unknown": (_set(f"{OBS}.routing.page_severities", ["page"]), f"{OBS}.routing.page_severities[0]: 'page' is not allowed"),
    "no paging severity": (_set(f"{OBS}.routing.page_severities", []), f"{OBS}.routing.page_severities: must not be empty"),
    "rules folder missing": (_set(f"{OBS}.rules", "no-such-alerts"), f"{OBS}.rules: file {{tmp}}/no-such-alerts does not exist"),
    "unknown key": (_set(f"{OBS}.routing.groupWait", "10s"), f"{OBS}.routing.groupWait: unknown key (did you mean 'group_wait'?)"),
}


@pytest.mark.parametrize("case", sorted(OBS_BAD), ids=sorted(OBS_BAD))
def test_bad_observability_parameters_name_the_path_and_the_fix(case, lab_doc, tmp_path):
    mutate, expected = OBS_BAD[case]
    doc = copy.deepcopy(lab_doc)
    mutate(doc)
    with pytest.raises(ParamsError) as err:
        load_lab(write(tmp_path, doc))
    assert any(expected.format(tmp=tmp_path) in line for line in err.value.errors), err.value.errors
    assert "hunter2" not in str(err.value)


def test_the_observability_section_is_optional_and_its_defaults_are_the_original_labs(lab_doc, tmp_path):
    del lab_doc["observability"]
    assert load_lab(write(tmp_path, lab_doc)).observability is None
    charts = yaml.safe_load((REPO / "parameters" / "homelab.yaml").read_text())[OBS]["charts"]
    for chart in charts.values():
        chart.pop("values")  # optional
    lab_doc["observability"] = {"charts": charts,
                                "rule_tests": str(REPO / "tests" / "alerts"),
                                "grafana": {"host": "grafana.home.example.com", "admin_password": "env:LABKIT_GRAFANA_PASSWORD"},
                                "ntfy": {"server": "https://ntfy.sh", "topic": "homelab-alerts"},
                                "rules": str(REPO / "parameters" / "alerts")}
    obs = load_lab(write(tmp_path, lab_doc)).observability
    assert (obs.prometheus.retention, obs.prometheus.retention_size, obs.prometheus.volume_size) == ("7d", "15GB", "20Gi")
    assert (obs.routing.group_wait, obs.routing.group_interval, obs.routing.repeat_interval) == ("10s", "5m", "4h")
    assert obs.loki.retention == "168h" and obs.namespace == "monitoring"
