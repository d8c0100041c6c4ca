"""How other modules extend a node (as k3s does): scripts piped into ``sh -s``, programs that
exist once installed, systemd units with start/stop hooks, boot hooks and the journal."""

from __future__ import annotations

import uuid

from labsim.node import registry
from labsim.node.registry import CommandContext, CommandResult
from tests.labsim.node_lab import node_lab

MARKER = f"# test-installer {uuid.uuid4().hex}"
SEEN: list[CommandContext] = []


@registry.script(MARKER)
async def _installer(ctx: CommandContext) -> CommandResult:
    SEEN.append(ctx)
    return CommandResult.ok(f"installing as {ctx.user}: {' '.join(ctx.argv)} "
                            f"version={ctx.env.get('INSTALL_VERSION', '-')}\n")


TOOL = f"/usr/local/bin/tool-{uuid.uuid4().hex[:8]}"


@registry.command(TOOL.rsplit("/", 1)[1], TOOL, installed_at=TOOL)
async def _tool(ctx: CommandContext) -> CommandResult:
    return CommandResult.ok(f"tool {' '.join(ctx.argv[1:])}\n")


async def test_sh_s_hands_a_registered_script_its_arguments_and_environment(tmp_path):
    async with node_lab(tmp_path) as lab:
        script = f"#!/bin/sh\n{MARKER}\nset -e\necho never run line by line\n"
        out, err, status = await lab.sh("INSTALL_VERSION=v1 sh -s - server --flag x", input=script)
        assert (out, err, status) == ("installing as ubuntu: server --flag x version=v1\n", "", 0)
        await lab.sh(f"cat > /tmp/install.sh <<'EOF'\n{script}EOF")
        out, _, _ = await lab.sh("cat /tmp/install.sh | sudo INSTALL_VERSION=v2 sh -s - agent")
        assert out == "installing as root: agent version=v2\n"
        assert SEEN[-1].stdin.decode() == script and SEEN[-1].node is lab.node


async def test_sh_s_runs_an_unknown_script_line_by_line_with_its_arguments(tmp_path):
    async with node_lab(tmp_path) as lab:
        script = "#!/bin/sh\necho \"args: $1 $2\"\nmkdir -p ~/made\nexit 3\necho unreachable\n"
        assert await lab.sh("sh -s - one two", input=script) == ("args: one two\n", "", 3)
        assert await lab.sh("test -d ~/made && bash -s < /dev/null && echo ok") == ("ok\n", "", 0)
        await lab.sh("printf 'echo from file $1\\n' > s.sh")
        assert await lab.sh("sh s.sh arg") == ("from file arg\n", "", 0)


async def test_an_installed_program_exists_only_once_its_file_does(tmp_path):
    async with node_lab(tmp_path) as lab:
        name = TOOL.rsplit("/", 1)[1]
        assert (await lab.sh(f"{name} --version"))[2] == 127
        assert await lab.sh(f"command -v {name} || echo absent") == ("absent\n", "", 0)
        await lab.sh(f"echo binary | sudo tee {TOOL} >/dev/null && sudo chmod 755 {TOOL}")
        assert await lab.sh(f"{name} --version && {TOOL} run && which {name}") == (
            f"tool --version\ntool run\n{TOOL}\n", "", 0)


async def test_systemctl_drives_registered_units_and_journalctl_shows_their_log(tmp_path):
    calls: list[str] = []

    async def on_start(node):
        calls.append("start")
        node.log("demo", "demo is up")
        return True

    async def on_stop(node):
        calls.append("stop")

    async with node_lab(tmp_path) as lab:
        lab.node.register_service("demo", on_start, on_stop)
        await lab.sh("printf '[Unit]\\nDescription=Demo daemon\\n' | sudo tee /etc/systemd/system/demo.service")
        assert await lab.sh("systemctl is-active demo") == ("inactive\n", "", 3)
        assert await lab.sh("systemctl is-enabled demo") == ("disabled\n", "", 1)
        assert (await lab.sh("systemctl daemon-reload"))[2] == 1
        assert await lab.sh("sudo systemctl daemon-reload") == ("", "", 0)
        out, err, status = await lab.sh("sudo systemctl enable --now demo.service")
        assert status == 0 and "Created symlink" in err
        assert await lab.sh("systemctl is-active demo && systemctl is-enabled demo") == ("active\nenabled\n", "", 0)
        assert await lab.sh("sudo systemctl restart demo && systemctl is-active --quiet demo") == ("", "", 0)
        assert calls == ["start", "stop", "start"]
        out, _, status = await lab.sh("systemctl status demo --no-pager")
        assert status == 0 and out.startswith("● demo.service - Demo daemon\n")
        assert "Active: active (running)" in out and "demo is up" in out
        out, _, _ = await lab.sh("journalctl -u demo -n 1 --no-pager")
        assert out.endswith(" k3s-master demo[" + out.split("demo[")[1].split("]")[0] + "]: demo is up\n")
        assert len(out.splitlines()) == 1
        await lab.sh("echo 'ExecStart=/usr/local/bin/demo server --flag' | sudo tee -a /etc/systemd/system/demo.service")
        out, _, status = await lab.sh("pgrep demo && pgrep -f 'demo server' && ps | grep -c 'demo server --flag'")
        assert status == 0 and out.splitlines()[0] == out.splitlines()[1] and out.splitlines()[2] == "1"
        assert await lab.sh("sudo systemctl stop demo; systemctl is-active demo") == ("inactive\n", "", 3)
        assert (await lab.sh("pgrep demo"))[2] == 1
        assert calls[-1] == "stop"


async def test_journalctl_unit_names_are_names_not_paths(tmp_path):
    async with node_lab(tmp_path) as lab:
        twin_log = lab.node.folder.parent.parent / "labsim.log"  # the twin's own log, beside the nodes
        twin_log.write_text("the twin's log\n")
        await lab.sh("echo root only | sudo tee /root/secret.log && sudo chmod 600 /root/secret.log")
        for unit in ("../../../labsim", "../../../../labsim", "../root/root/secret", "/../../labsim"):
            assert await lab.sh(f"journalctl -u {unit} --no-pager") == ("-- No entries --\n", "", 0), unit
        assert await lab.sh("journalctl -u ssh -n many") == ("", "Failed to parse lines 'many'\n", 1)


async def test_a_unit_whose_start_fails_is_failed_and_says_so(tmp_path):
    async def on_start(node):
        raise RuntimeError("bad config")

    async with node_lab(tmp_path) as lab:
        lab.node.register_service("broken", on_start)
        out, err, status = await lab.sh("sudo systemctl start broken")
        assert status == 1 and err.startswith("Job for broken.service failed because the control process")
        assert await lab.sh("systemctl is-active broken") == ("failed\n", "", 3)
        assert "bad config" in (await lab.sh("journalctl -u broken"))[0]
        assert await lab.sh("sudo systemctl start missing") == (
            "", "Failed to start missing.service: Unit missing.service not found.\n", 5)


async def test_enabled_units_start_again_at_boot_after_boot_hooks_ran(tmp_path):
    unit = f"svc{uuid.uuid4().hex[:6]}"
    started: list[str] = []

    async def on_start(node):
        started.append(node.hostname)

    async def attach(node):  # what a module does in its boot hook: give the unit its behaviour back
        if node.exists(f"/etc/systemd/system/{unit}.service"):
            node.register_service(unit, on_start)

    registry.on_boot(attach)
    try:
        async with node_lab(tmp_path) as lab:
            await lab.sh(f"sudo touch /etc/systemd/system/{unit}.service && sudo systemctl enable --now {unit}")
            assert started == []  # installed after boot: no hook yet, the unit just runs
            await lab.host.stop_node(lab.spec.vmid)
            await lab.host.start_node(lab.spec)
            assert await lab.sh(f"systemctl is-active {unit}") == ("active\n", "", 0)
            await lab.restart()
            assert await lab.sh(f"systemctl is-active {unit}") == ("active\n", "", 0)
            assert started == ["k3s-master"] * 2
    finally:
        registry.BOOT_HOOKS.remove(attach)
