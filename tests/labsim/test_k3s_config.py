"""The pure parts of k3s on the nodes: flags and config file merged as k3s merges them, join
tokens, versions and the skew policy, snapshot naming and retention."""

from __future__ import annotations

import pytest

from labsim.k3s import config, snapshots, tokens
from labsim.k3s.curl import CurlError, parse
from labsim.k3s.versions import K3sVersion, VersionError, skew_error
from labsim.kube.tables import human_duration

CONFIG_YAML = """
token: from-file
tls-san: [k3s-master, 10.0.0.1]
disable: servicelb
write-kubeconfig-mode: 644
cluster-init: true
node-label: [tier=control]
node-taint: ["dedicated=infra:NoSchedule"]
"""


def effective(role: str, args: list[str], *, files=(), env=None) -> config.K3sConfig:
    items, warnings = config.parse_config_files(list(files), role)
    return config.merge(role, env=env or {}, file_items=items,
                        cli_items=config.parse_args(args, role), warnings=warnings)


def test_flags_win_over_the_file_and_lists_collect_both():
    cfg = effective("server", ["--token=from-flag", "--tls-san", "extra.example.com",
                               "--disable=traefik,metrics-server", "--node-label", "zone=a"],
                    files=[("config.yaml", CONFIG_YAML)])
    assert cfg.token == "from-flag"
    assert cfg.tls_san == ["k3s-master", "10.0.0.1", "extra.example.com"]
    assert cfg.disable == ["servicelb", "traefik", "metrics-server"]
    assert cfg.node_labels == {"tier": "control", "zone": "a"}
    assert cfg.node_taints == [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]
    assert cfg.kubeconfig_mode == 0o644 and cfg.cluster_init and cfg.embedded_etcd


def test_env_fills_only_what_flags_and_file_leave_unset():
    env = {"K3S_TOKEN": "from-env", "K3S_KUBECONFIG_MODE": "0640", "K3S_URL": "https://10.0.0.1:6443"}
    assert effective("server", [], env=env).token == "from-env"
    assert effective("server", [], env=env, files=[("c", CONFIG_YAML)]).token == "from-file"
    assert effective("server", [], env=env).kubeconfig_mode == 0o640
    agent = effective("agent", [], env=env)
    assert agent.server == "https://10.0.0.1:6443" and not agent.embedded_etcd


def test_defaults_are_k3s_defaults():
    cfg = effective("server", [])
    assert cfg.kubeconfig_mode == 0o600 and not cfg.embedded_etcd and cfg.disable == []


def test_drop_in_files_replace_or_append_with_plus():
    cfg = effective("server", [], files=[("config.yaml", CONFIG_YAML),
                                         ("config.yaml.d/10.yaml", "token: later\ntls-san+: [added]\n")])
    assert cfg.token == "later"
    assert cfg.tls_san == ["k3s-master", "10.0.0.1", "added"]


def test_unknown_keys_warn_from_the_file_but_fail_on_the_command_line():
    cfg = effective("agent", [], files=[("config.yaml", CONFIG_YAML)])
    assert "Unknown flag --tls-san found in config.yaml, skipping" in cfg.warnings
    assert cfg.token == "from-file"
    with pytest.raises(config.ConfigError, match="flag provided but not defined: -tls-san"):
        config.parse_args(["--tls-san", "x"], "agent")
    with pytest.raises(config.ConfigError, match="flag needs an argument"):
        config.parse_args(["--token"], "server")


def test_bad_taint_and_mode_are_refused():
    with pytest.raises(config.ConfigError, match="invalid taint"):
        _ = effective("server", ["--node-taint", "dedicated=infra:Sometimes"]).node_taints
    with pytest.raises(config.ConfigError, match="write-kubeconfig-mode"):
        _ = effective("server", ["--write-kubeconfig-mode", "rw"]).kubeconfig_mode


def test_node_token_format_and_join_checks():
    ca = b"-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"
    full = tokens.node_token(ca, "s3cret")
    assert full.startswith("K10") and full.endswith("::server:s3cret") and len(tokens.ca_hash(ca)) == 64
    url = "https://10.0.0.1:6443"
    assert tokens.join_error(full, server_url=url, cluster_password="s3cret", ca_pem=ca) is None
    assert tokens.join_error("s3cret", server_url=url, cluster_password="s3cret", ca_pem=ca) is None
    level, line = tokens.join_error("wrong", server_url=url, cluster_password="s3cret", ca_pem=ca)
    assert level == "error" and line.endswith("/apis: 401 Unauthorized")
    other_ca = tokens.node_token(b"other", "s3cret")
    level, line = tokens.join_error(other_ca, server_url=url, cluster_password="s3cret", ca_pem=ca)
    assert level == "fatal" and "token CA hash does not match" in line
    level, line = tokens.join_error("K10abc::server:", server_url=url, cluster_password="s3cret", ca_pem=ca)
    assert level == "fatal" and "failed to normalize server token" in line


def test_versions_print_as_k3s_and_follow_the_skew_policy():
    v = K3sVersion.parse("v1.34.3+k3s1")
    assert v.version_lines() == "k3s version v1.34.3+k3s1 (48ffa7b6)\ngo version go1.24.11\n"
    assert K3sVersion.parse("v1.33.3+k3s1") < v < K3sVersion.parse("v1.34.3+k3s2")
    with pytest.raises(VersionError):
        K3sVersion.parse("1.34.3")
    assert skew_error(K3sVersion.parse("v1.33.3+k3s1"), v) is None
    assert skew_error(K3sVersion.parse("v1.34.3+k3s2"), v) is None  # same Kubernetes version
    assert "newer than the API server" in skew_error(K3sVersion.parse("v1.35.0+k3s1"), v)
    assert "more than 3 minor versions older" in skew_error(K3sVersion.parse("v1.30.1+k3s1"), v)


def test_snapshot_names_listing_and_retention():
    assert snapshots.snapshot_name("on-demand", "k3s-master", 1764194462.7) == "on-demand-k3s-master-1764194462"
    files = [snapshots.SnapshotFile(n, f"{snapshots.SNAPSHOT_DIR}/{n}", 10, snapshots.created_from_name(n))
             for n in ("on-demand-m-100", "on-demand-m-300", "on-demand-m-200", "etcd-snapshot-m-50", "nightly-m-10")]
    pruned = snapshots.to_prune(files, "on-demand", "m", 2)
    assert [f.name for f in pruned] == ["on-demand-m-100"]
    assert snapshots.to_prune(files, "etcd-snapshot", "m", 1) == []
    table = snapshots.format_table(files).splitlines()
    assert table[0].split() == ["Name", "Location", "Size", "Created"]
    assert table[1].split() == ["nightly-m-10", f"file://{snapshots.SNAPSHOT_DIR}/nightly-m-10", "10",
                                "1970-01-01T00:00:10Z"]


def test_kubectl_ages_read_as_kubectl_prints_them():
    cases = {5: "5s", 119: "119s", 125: "2m5s", 600: "10m", 3 * 3600 + 60: "3h1m", 9 * 3600: "9h",
             3 * 86400 + 3600: "3d1h", 30 * 86400: "30d", 800 * 86400: "2y70d"}
    assert {s: human_duration(s) for s in cases} == cases


def test_curl_options_combine_as_curl_reads_them():
    req = parse(["-fsSL", "-o", "out.sh", "-H", "Accept: text/plain", "--cacert", "ca.pem", "https://get.k3s.io"])
    assert req.flags == {"fail", "silent", "show_error", "location"}
    assert (req.output, req.headers, req.cacert, req.url) == ("out.sh", ["Accept: text/plain"], "ca.pem",
                                                              "https://get.k3s.io")
    with pytest.raises(CurlError, match="no URL specified"):
        parse(["-s"])
