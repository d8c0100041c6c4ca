"""Lab file validation: every bad input stops with the YAML path and the fix, never a traceback."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest

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
    doc["k3s"]["service_cidr"] = "10.43.0.0/16"
    with pytest.raises(ParamsError) as err:
        load_lab(write_lab(tmp_path, doc))
    assert "k3s.cluster_cidr: unset (k3s' default 10.42.0.0/16) is not loopback; the embedded lab binds 127.0.0.0/8 " \
           "only: set e.g. cluster_cidr: 127.42.0.0/16" in err.value.errors
    assert any(e.startswith("k3s.service_cidr: 10.43.0.0/16 is not loopback") for e in err.value.errors)


def test_real_lab_files_must_exist(lab_doc, tmp_path):
    (tmp_path / "id.pub").unlink()
    with pytest.raises(ParamsError, match=r"ssh.public_key: file .*id.pub does not exist"):
        load_lab(write(tmp_path, lab_doc))
    assert load_lab(write(tmp_path, lab_doc), check_files=False).ssh.public_key == Path(tmp_path / "id.pub")
