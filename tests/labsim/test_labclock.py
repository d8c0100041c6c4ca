"""The real Prometheus' and Alertmanager's configuration on the lab's clock (labsim.runtime.programs.labclock):
at time scale 1 exactly the user's; below, every wait scaled with its floor, PromQL untouched. The
programs running it are tested in test_kube_prometheus_stack (the rendered config the programs loaded)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from labsim.runtime.programs import labclock

RULES = {"groups": [{"name": "nodes", "interval": "30s", "rules": [
    {"alert": "NodeDiskAlmostFull", "expr": "rate(node_x[5m]) > 0 and node_y offset 1h < 0.1", "for": "5m"},
    {"alert": "Watchdog", "expr": "vector(1)"},
    {"alert": "Flapping", "expr": "up == 0", "for": "0s", "keep_firing_for": "10m"},
    {"record": "job:up:sum", "expr": "sum by (job) (up)"}]}]}
ALERTMANAGER = {"global": {"resolve_timeout": "5m"},
                "route": {"receiver": "null", "group_wait": "10s", "group_interval": "5m", "repeat_interval": "4h",
                          "routes": [{"receiver": "ntfy", "group_interval": "10s", "routes": [{"receiver": "deep",
                                                                                              "group_wait": "500ms"}]}]},
                "receivers": [{"name": "null"}, {"name": "ntfy"}, {"name": "deep"}]}


def _prometheus_yml(tmp_path: Path) -> dict:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "nodes.yaml").write_text(yaml.safe_dump(RULES))
    return {"global": {"scrape_interval": "30s", "evaluation_interval": "30s", "scrape_timeout": "20s"},
            "rule_files": [str(tmp_path / "rules" / "*.yaml")],
            "scrape_configs": [{"job_name": "fast", "scrape_interval": "500ms", "scrape_timeout": "400ms"},
                               {"job_name": "slow", "scrape_interval": "2m", "scrape_timeout": "30s"},
                               {"job_name": "inherits"}]}


def test_at_time_scale_1_and_above_the_programs_get_the_users_configuration(tmp_path: Path) -> None:
    config = _prometheus_yml(tmp_path)
    for scale in (1.0, 3.0):
        assert labclock.prometheus(copy.deepcopy(config), scale, tmp_path / "out") == config
        assert labclock.alertmanager(copy.deepcopy(ALERTMANAGER), scale, tmp_path / "out") == ALERTMANAGER
    assert not (tmp_path / "out").exists()  # the rule files are read where they are


def test_at_time_scale_0_every_wait_is_at_its_floor_and_promql_stays(tmp_path: Path) -> None:
    scaled = labclock.prometheus(_prometheus_yml(tmp_path), 0.0, tmp_path / "out")
    assert scaled["global"] == {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
    jobs = {j["job_name"]: j for j in scaled["scrape_configs"]}
    assert (jobs["fast"]["scrape_interval"], jobs["fast"]["scrape_timeout"]) == ("500ms", "400ms")  # below the floor: kept
    assert (jobs["slow"]["scrape_interval"], jobs["slow"]["scrape_timeout"]) == ("1s", "1s")  # timeout <= interval
    assert "scrape_interval" not in jobs["inherits"]  # the global one, scaled
    copies = [Path(p) for p in scaled["rule_files"]]
    assert [p.name for p in copies] == ["nodes.yaml"] and copies[0].parent == tmp_path / "out" / labclock.RULES_DIR
    group = yaml.safe_load(copies[0].read_text())["groups"][0]
    rules = {r.get("alert") or r["record"]: r for r in group["rules"]}
    assert group["interval"] == "1s"
    assert rules["NodeDiskAlmostFull"] == {**RULES["groups"][0]["rules"][0], "for": "1s"}  # the expression as written
    assert "for" not in rules["Watchdog"] and rules["Flapping"]["for"] == "0s"
    assert rules["Flapping"]["keep_firing_for"] == "1s" and rules["job:up:sum"] == RULES["groups"][0]["rules"][3]
    route = labclock.alertmanager(copy.deepcopy(ALERTMANAGER), 0.0, tmp_path)
    assert route["global"] == {"resolve_timeout": "5m"}  # a posted alert's life, not a wait
    root = route["route"]
    assert (root["group_wait"], root["group_interval"], root["repeat_interval"]) == ("1s", "1s", "60s")
    assert root["routes"][0]["group_interval"] == "1s" and root["routes"][0]["routes"][0]["group_wait"] == "500ms"


def test_a_scale_between_keeps_the_proportions_above_the_floors(tmp_path: Path) -> None:
    scaled = labclock.prometheus(_prometheus_yml(tmp_path), 0.05, tmp_path / "out")
    assert scaled["global"]["evaluation_interval"] == "1500ms" and scaled["global"]["scrape_interval"] == "1500ms"
    assert {j["job_name"]: j.get("scrape_interval") for j in scaled["scrape_configs"]} == {
        "fast": "500ms", "slow": "6s", "inherits": None}
    rule = yaml.safe_load(Path(scaled["rule_files"][0]).read_text())["groups"][0]["rules"][0]
    assert rule["for"] == "15s"
    root = labclock.alertmanager(copy.deepcopy(ALERTMANAGER), 0.05, tmp_path)["route"]
    assert (root["group_wait"], root["group_interval"], root["repeat_interval"]) == ("1s", "15s", "720s")
    defaults = labclock.alertmanager({"route": {"receiver": "null"}}, 0.05, tmp_path)["route"]  # the program's defaults
    assert (defaults["group_wait"], defaults["group_interval"], defaults["repeat_interval"]) == ("1500ms", "15s", "720s")


def test_a_wait_set_by_a_flag_is_passed_scaled_unless_the_pods_arguments_set_it() -> None:
    resend = {"--rules.alert.resend-delay": "1m"}  # Prometheus' default
    assert labclock.flags(resend, ["--web.enable-lifecycle"], 0.0) == ["--rules.alert.resend-delay=1s"]
    assert labclock.flags(resend, [], 0.05) == ["--rules.alert.resend-delay=3s"]
    assert labclock.flags(resend, ["--rules.alert.resend-delay=10s"], 0.0) == []  # the pod's own value stands
    assert labclock.flags(resend, [], 1.0) == []


def test_prometheus_gets_its_resend_delay_on_the_lab_clock_once_whichever_way_the_pod_spells_it() -> None:
    from labsim.runtime.programs.prometheus import PROGRAM

    lifecycle = PROGRAM.translate(["--web.enable-lifecycle"], None, "127.0.0.1", 0.0)
    assert [a for a in lifecycle if a.startswith("--rules.alert.resend-delay")] == ["--rules.alert.resend-delay=1s"]
    spelled = PROGRAM.translate(["--rules.alert.resend-delay", "10s"], None, "127.0.0.1", 0.0)
    assert [a for a in spelled if a.startswith("--rules.alert.resend-delay")] == ["--rules.alert.resend-delay=10s"]
