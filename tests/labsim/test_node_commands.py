"""The base Ubuntu 22.04 command set, over SSH: what a provisioning tool reads from a fresh
cloud image, sizes that follow the VM's config, and the shell's syntax."""

from __future__ import annotations

import asyncio

import pytest

from tests.labsim.node_lab import GIB, node_lab

MIB = 1024 ** 2


async def test_identity_of_a_fresh_cloud_image(tmp_path):
    async with node_lab(tmp_path) as lab:
        ip = lab.spec.ip
        cases = [
            ("cat /etc/os-release | head -n 1", 'PRETTY_NAME="Ubuntu 22.04.5 LTS"\n'),
            ("grep VERSION_CODENAME /etc/os-release", "VERSION_CODENAME=jammy\n"),
            ("hostname", "k3s-master\n"),
            ("hostname -f", "k3s-master.home.example.com\n"),
            ("hostname -I", f"{ip} \n"),
            ("cat /etc/hostname", "k3s-master\n"),
            ("uname", "Linux\n"),
            ("uname -r", "5.15.0-126-generic\n"),
            ("uname -m", "x86_64\n"),
            ("uname -s -r -m", "Linux 5.15.0-126-generic x86_64\n"),
            ("id -u", "1000\n"),
            ("id -un", "ubuntu\n"),
            ("sudo id -u", "0\n"),
            ("whoami", "ubuntu\n"),
            ("sudo whoami", "root\n"),
            ("echo $HOME", "/home/ubuntu\n"),
            ("pwd", "/home/ubuntu\n"),
            ("grep nameserver /etc/resolv.conf", f"nameserver {lab.spec.nameservers[0]}\n"),
            ("cloud-init status", "status: done\n"),
            ("cloud-init status --wait", "status: done\n"),
            ("systemctl is-active ssh qemu-guest-agent", "active\nactive\n"),
            ("which hostname", "/usr/bin/hostname\n"),
            ("command -v tee", "/usr/bin/tee\n"),
            ("pidof sshd >/dev/null && echo sshd-up", "sshd-up\n"),
            ("hostnamectl hostname", "k3s-master\n"),
        ]
        for command, expected in cases:
            assert await lab.sh(command) == (expected, "", 0), command
        out, _, status = await lab.sh("uname -a")
        assert status == 0 and out.startswith("Linux k3s-master 5.15.0-126-generic ") and "x86_64 GNU/Linux" in out


async def test_ip_shows_the_cloud_init_address(tmp_path):
    async with node_lab(tmp_path) as lab:
        out, _, status = await lab.sh("ip -4 addr show")
        assert status == 0
        assert f"    inet {lab.spec.ip}/24 brd {lab.spec.ip.rsplit('.', 1)[0]}.255 scope global eth0\n" in out
        assert "    inet 127.0.0.1/8 scope host lo\n" in out
        out, _, _ = await lab.sh("ip -4 -o addr show eth0")
        assert out.startswith(f"2: eth0    inet {lab.spec.ip}/24 ")
        out, _, _ = await lab.sh("ip -4 -br addr show scope global")
        assert out.split() == ["eth0", "UP", f"{lab.spec.ip}/24"]


def _free(out: str) -> dict[str, int]:
    header, mem, swap = out.splitlines()
    assert header.split() == ["total", "used", "free", "shared", "buff/cache", "available"]
    return dict(zip(header.split(), map(int, mem.split()[1:]), strict=True)) | {"swap": int(swap.split()[1])}


def _df(out: str) -> dict[str, int | str]:
    header, row = out.splitlines()
    assert header.split() == ["Filesystem", "1B-blocks", "Used", "Available", "Use%", "Mounted", "on"]
    source, size, used, avail, pcent, target = row.split()
    return {"source": source, "size": int(size), "used": int(used), "avail": int(avail), "target": target}


async def test_sizes_follow_the_vm_config_and_its_changes(tmp_path):
    async with node_lab(tmp_path) as lab:
        assert await lab.sh("nproc") == ("2\n", "", 0)
        free = _free((await lab.sh("free -b"))[0])
        assert 0.95 * 4096 * MIB < free["total"] <= 4096 * MIB
        assert free["used"] + free["free"] + free["buff/cache"] == free["total"]
        assert free["swap"] == 0
        assert _free((await lab.sh("free -m"))[0])["total"] == free["total"] // MIB
        df = _df((await lab.sh("df -B1 /"))[0])
        assert df["source"] == "/dev/sda1" and df["target"] == "/"
        assert 0.95 * 32 * GIB < df["size"] < 32 * GIB
        assert 0 < df["used"] < df["size"] and df["avail"] < df["size"] - df["used"]

        await lab.resize(cores=4, memory_mib=8192, disk_bytes=64 * GIB)
        assert await lab.sh("nproc") == ("4\n", "", 0)
        assert _free((await lab.sh("free -b"))[0])["total"] == 2 * free["total"]
        assert _df((await lab.sh("df -B1 /"))[0])["size"] > 1.9 * df["size"]
        out, _, _ = await lab.sh("grep -c processor /proc/cpuinfo; grep MemTotal /proc/meminfo")
        assert out.split() == ["4", "MemTotal:", str(2 * free["total"] // 1024), "kB"]


async def test_disk_use_grows_with_the_files_written(tmp_path):
    async with node_lab(tmp_path) as lab:
        before = _df((await lab.sh("df -B1 /var"))[0])["used"]
        await lab.sh("sudo tee /var/blob >/dev/null", input="x" * 1_000_000)
        assert _df((await lab.sh("df -B1 /var"))[0])["used"] - before == 1_000_000
        out, err, status = await lab.sh("df /nowhere")
        assert (status, err) == (1, "df: /nowhere: No such file or directory\n")


async def test_stdin_reaches_commands_that_read_it(tmp_path):
    async with node_lab(tmp_path) as lab:
        assert await lab.sh("cat - | wc -c", input="12345") == ("5\n", "", 0)
        assert await lab.sh("sudo -n sh -c 'mkdir -p /etc/app && tee /etc/app/c.yaml >/dev/null'", input="a: 1\n") == (
            "", "", 0)
        assert await lab.sh("cat /etc/app/c.yaml") == ("a: 1\n", "", 0)
        assert await lab.sh("sudo -u ubuntu tee ~/t >/dev/null; timeout 5 cat ~/t", input="typed\n") == (
            "typed\n", "", 0)


async def test_cloud_init_runs_on_the_lab_clock_after_boot(tmp_path):
    async with node_lab(tmp_path, time_scale=1.0) as lab, lab.connect() as conn:
        assert (await conn.run("cloud-init status")).stdout == "status: running\n"
        waiting = await conn.create_process("cloud-init status --wait")
        lab.lab.clock.advance(30)  # the modelled boot time passes
        result = await waiting.wait(timeout=20)
        assert result.stdout.endswith("status: done\n") and result.exit_status == 0
        assert (await conn.run("cloud-init status")).stdout == "status: done\n"
        sleeper = await conn.create_process("timeout 5 sleep 100")
        await asyncio.sleep(0.1)  # let both start their modelled waits
        lab.lab.clock.advance(10)
        assert (await sleeper.wait(timeout=20)).exit_status == 124


async def test_pipes_lists_redirections_and_expansions(tmp_path):
    async with node_lab(tmp_path) as lab:
        cases = [
            ("echo one two | tr -d o", "ne tw\n", "", 0),
            ("echo one | perl -pe 1", "", "bash: line 1: perl: command not found\n", 127),
            ("echo hello | grep -c ell", "1\n", "", 0),
            ("true && echo yes || echo no", "yes\n", "", 0),
            ("false && echo yes || echo no", "no\n", "", 0),
            ("false; echo $?", "1\n", "", 0),
            ("! false", "", "", 0),
            ("A=1 B='two words' env | grep -E '^(A|B)='", "A=1\nB=two words\n", "", 0),
            ("X=5; echo ${X} \"$X\" '$X' ${MISSING:-fallback}", "5 5 $X fallback\n", "", 0),
            ("echo \"$(hostname)-$(echo a b)\"", "k3s-master-a b\n", "", 0),
            ("echo a > f && echo b >> f && cat f && wc -l < f", "a\nb\n2\n", "", 0),
            ("cat missing 2>/dev/null; echo $?", "1\n", "", 0),
            ("cat missing 2>&1 | head -n 1", "cat: missing: No such file or directory\n", "", 0),
            ("(echo sub)", "sub\n", "", 0),
            ("echo a; )", "", "bash: -c: line 1: syntax error near unexpected token `)'\n", 2),
            ("echo 'a;b' \"c|d\" e\\&f", "a;b c|d e&f\n", "", 0),
            ("printf '%s=%d\\n' a 1 b 2", "a=1\nb=2\n", "", 0),
            ("echo -n x; echo -e 'y\\tz'", "xy\tz\n", "", 0),
            ("mkdir -p d/e && touch d/e/1.yaml d/e/2.yaml d/e/3.txt && ls d/e/*.yaml", "d/e/1.yaml\nd/e/2.yaml\n", "", 0),
            ("cat <<EOF\nuser=$USER\nEOF", "user=ubuntu\n", "", 0),
            ("cat <<'EOF'\nuser=$USER\nEOF", "user=$USER\n", "", 0),
            ("cd /etc && pwd; pwd", "/etc\n/etc\n", "", 0),
            ("sh -c 'echo $0 $1' first second", "first second\n", "", 0),
            ("bash -c 'exit 7'", "", "", 7),
            ("bash -lc 'echo $0' && bash -ec 'false; echo no' || echo stopped", "bash\nstopped\n", "", 0),
            ("sh -c 'missing-tool'", "", "sh: 1: missing-tool: not found\n", 127),
            ("set -e; false; echo not reached", "", "", 1),
            ("set -e; false && echo no; false || echo recovered", "recovered\n", "", 0),
            ("echo a 1>&2 2>/dev/null", "", "a\n", 0),
        ]
        for command, out, err, status in cases:
            assert await lab.sh(command) == (out, err, status), command


async def test_compound_commands_and_arithmetic(tmp_path):
    async with node_lab(tmp_path) as lab:
        cases = [
            ("if test -f /etc/hostname; then echo yes; else echo no; fi", "yes\n", "", 0),
            ("if false; then echo a; elif true; then echo b; fi", "b\n", "", 0),
            ("if ! command -v k3s >/dev/null; then echo missing; fi", "missing\n", "", 0),
            ("if false; then echo a; fi; echo $?", "0\n", "", 0),
            ("for x in a 'b c'; do echo \"[$x]\"; done", "[a]\n[b c]\n", "", 0),
            ("for f in /etc/*-release; do basename $f; done", "lsb-release\nos-release\n", "", 0),
            ("i=0; while [ $i -lt 3 ]; do echo $i; i=$((i + 1)); done", "0\n1\n2\n", "", 0),
            ("n=5; until [ $n -le 3 ]; do n=$((n - 1)); done; echo $n", "3\n", "", 0),
            ("for i in 1 2 3 4; do [ $i = 2 ] && continue; [ $i = 4 ] && break; echo $i; done", "1\n3\n", "", 0),
            ("echo $((2 * (3 + 4) % 5)) $((7 / 2)) $((3 > 2 && 1)) $((x))", "4 3 1 0\n", "", 0),
            ("{ echo a; echo b; } > g && cat g", "a\nb\n", "", 0),
            ("(cd /tmp && pwd; exit 3); echo $? $(pwd)", "/tmp\n3 /home/ubuntu\n", "", 0),
            ("set -e; if false; then :; fi; false || true; echo survived", "survived\n", "", 0),
            ("for x in a\ndo echo $x\ndone", "a\n", "", 0),
            ("if true; then echo x", "", "bash: -c: line 1: syntax error: unexpected end of file\n", 2),
            ("echo a |", "", "bash: -c: line 1: syntax error: unexpected end of file\n", 2),
            ("echo $((1 +))", "", "bash: line 1: 1 +: syntax error in expression\n", 1),
            ("sh -c 'for a in \"$@\"; do echo \"<$a>\"; done; printf %s \"$@\"' _ 'x y' z", "<x y>\n<z>\nx yz", "", 0),
            ("sh -c 'for a in \"$@\"; do echo $a; done; echo end'", "end\n", "", 0),
            ("exec echo replaced; echo never", "replaced\n", "", 0),
            ("{ echo kept; exit 4; }; echo never", "kept\n", "", 4),
            ("X=5; echo $(echo $X); y=$(false); echo $?; z=1; echo $?", "5\n1\n0\n", "", 0),
            ("V=v1.34.3+k3s1; echo ${V#v} ${V%%+*} ${V%.*} ${V##*.} ${#V} ${U:-d} ${U-e} ${U:=f} $U ${V:+alt}",
             "1.34.3+k3s1 v1.34.3 v1.34 3+k3s1 12 d e f f alt\n", "", 0),
            ("echo ${V!}", "", "bash: line 1: ${V!}: bad substitution\n", 1),
            ("for i in 1 2; do if true; then echo in-if; break; fi; done; echo after", "in-if\nafter\n", "", 0),
            ("echo quiet 2>&-; echo shown", "quiet\nshown\n", "", 0),
        ]
        for command, out, err, status in cases:
            assert await lab.sh(command) == (out, err, status), command


async def test_file_and_text_tools(tmp_path):
    async with node_lab(tmp_path) as lab:
        cases = [
            ("printf 'a\\nb\\nc\\n' > l && head -n 2 l && tail -n 1 l && tail -n +2 l", "a\nb\nc\nb\nc\n"),
            ("grep -v b l; grep -q zz l || echo none; grep -n c l", "a\nc\nnone\n3:c\n"),
            ("grep -E 'a|c' l | wc -l; grep 'a\\|b' l | wc -l", "2\n2\n"),
            ("echo x | tee t1 t2 >/dev/null && cat t1 t2 && echo y | tee -a t1 && cat t1", "x\nx\ny\nx\ny\n"),
            ("mkdir -p a/b/c && test -d a/b/c && test ! -f a/b && [ -e a ] && echo ok", "ok\n"),
            ("touch e && test -s e || echo empty; test -x e || echo noexec", "empty\nnoexec\n"),
            ("chmod 755 e && stat -c %a e && chmod go-rx e && stat -c %a e && chmod +x e && test -x e && echo x",
             "755\n700\nx\n"),
            ("rm -rf a && ls; rm -f nothing; echo $?", "e\nl\nt1\nt2\n0\n"),
            ("ls -A | head -n 2", ".bash_logout\n.bashrc\n"),
            ("[ 3 -gt 2 ] && [ a != b ] && [ -n x ] && [ -z '' ] && echo cmp", "cmp\n"),
            ("sleep 1 && echo slept", "slept\n"),
            ("echo c2VjcmV0 | base64 -d; echo", "secret\n"),
            ("echo -n abc | sha256sum", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  -\n"),
            ("cp l l2 && mv l2 l3 && cat l3 | wc -l && test ! -e l2 && echo moved", "3\nmoved\n"),
            ("basename /etc/rancher/k3s/config.yaml .yaml; dirname /etc/rancher/k3s/config.yaml",
             "config\n/etc/rancher/k3s\n"),
            ("printf '10\\n9\\nb\\nb\\n' | sort -n | uniq -c", "      2 b\n      1 9\n      1 10\n"),
            ("printf 'b\\na\\nb\\n' | sort -u; echo k3s-master:6443 | cut -d: -f2; echo abc | tr a-c A-C",
             "a\nb\n6443\nABC\n"),
            ("echo v > f1 && sudo install -D -m 600 f1 /opt/tool/f1 && sudo stat -c '%a %U' /opt/tool/f1",
             "600 root\n"),
        ]
        for command, expected in cases:
            assert await lab.sh(command) == (expected, "", 0), command
        assert await lab.sh("rm missing") == ("", "rm: cannot remove 'missing': No such file or directory\n", 1)
        assert await lab.sh("mkdir x/y") == ("", "mkdir: cannot create directory 'x/y': No such file or directory\n", 1)
        assert await lab.sh("test") == ("", "", 1)
        assert await lab.sh("which k3s nosuch") == ("", "", 1)


async def test_sed_and_awk_one_liners(tmp_path):
    async with node_lab(tmp_path) as lab:
        await lab.sh("printf 'server: https://127.0.0.1:6443\\nname: default\\nname: other\\n' > k.yaml")
        cases = [
            ("sed 's/127.0.0.1/10.0.0.1/' k.yaml | head -n 1", "server: https://10.0.0.1:6443\n"),
            ("sed -n '/name/p' k.yaml", "name: default\nname: other\n"),
            ("sed -e '1d' -e 's/name: \\(.*\\)/[\\1]/g' k.yaml", "[default]\n[other]\n"),
            ("sed -E 's/(na)me/\\1&/;$d' k.yaml | tail -n 1", "naname: default\n"),
            ("sed -i 's|https://127.0.0.1|https://k3s-master|' k.yaml && head -n 1 k.yaml",
             "server: https://k3s-master:6443\n"),
            ("awk '{print $2}' k.yaml", "https://k3s-master:6443\ndefault\nother\n"),
            ("awk -F': ' '/name/ {print NR, $2}' k.yaml", "2 default\n3 other\n"),
            ("awk '$2 == \"other\" {print $1 \"!\"} END {print NR}' k.yaml", "name:!\n3\n"),
            ("df -B1 / | awk 'NR==2 {print $NF}'", "/\n"),
            ("free -b | awk '/Mem:/ {print $2}' | grep -c .", "1\n"),
            ("timeout 60 cloud-init status --wait", "status: done\n"),
        ]
        for command, expected in cases:
            assert await lab.sh(command) == (expected, "", 0), command
        out, err, status = await lab.sh("awk 'BEGIN { x = 1 }'")
        assert status == 2 and "print" in err
        assert (await lab.sh("sudo sed -i s/a/b/ /etc/missing"))[1:] == (
            "sed: couldn't edit /etc/missing: No such file or directory\n", 4)


async def test_unknown_commands_fail_as_bash_does(tmp_path):
    async with node_lab(tmp_path) as lab:
        assert await lab.sh("k3s --version") == ("", "bash: line 1: k3s: command not found\n", 127)
        assert await lab.sh("/usr/local/bin/k3s --version") == (
            "", "bash: line 1: /usr/local/bin/k3s: No such file or directory\n", 127)
        assert await lab.sh("sudo kubectl get nodes") == ("", "sudo: kubectl: command not found\n", 1)
        assert await lab.sh("nosuch && echo never") == ("", "bash: line 1: nosuch: command not found\n", 127)


@pytest.mark.parametrize("command, message", [
    ("echo x > /etc/x.conf", "bash: line 1: /etc/x.conf: Permission denied\n"),
    ("tee /usr/local/bin/tool < /dev/null", "tee: /usr/local/bin/tool: Permission denied\n"),
    ("mkdir -p /var/lib/rancher", "mkdir: cannot create directory '/var/lib/rancher': Permission denied\n"),
    ("touch /etc/hostname", "touch: cannot touch '/etc/hostname': Permission denied\n"),
    ("rm /etc/hostname", "rm: cannot remove '/etc/hostname': Permission denied\n"),
    ("chmod 777 /etc/hostname", "chmod: changing permissions of '/etc/hostname': Operation not permitted\n"),
    ("cat /etc/shadow", "cat: /etc/shadow: Permission denied\n"),
    ("ls /root", "ls: cannot open directory '/root': Permission denied\n"),
    ("systemctl restart ssh", "Failed to restart ssh.service: Interactive authentication required.\n"
                              "See system logs and 'systemctl status ssh.service' for details.\n"),
])
async def test_root_owned_paths_need_sudo(tmp_path, command, message):
    async with node_lab(tmp_path) as lab:
        out, err, status = await lab.sh(command)
        assert (err, status != 0) == (message, True)
        out, err, status = await lab.sh(f"sudo {command}" if "<" not in command and ">" not in command
                                        else f"sudo sh -c '{command}'")
        assert status == 0, err


async def test_sudo_runs_as_root_with_the_environment_it_is_given(tmp_path):
    async with node_lab(tmp_path) as lab:
        cases = [
            ("sudo -n true && echo ok", "ok\n"),
            ("sudo sh -c 'echo $HOME $USER'", "/root root\n"),
            ("FOO=1 sudo sh -c 'echo ${FOO:-unset}'", "unset\n"),
            ("export FOO=1; sudo -E sh -c 'echo ${FOO:-unset}'", "1\n"),
            ("sudo FOO=2 sh -c 'echo $FOO'", "2\n"),
            ("sudo -u ubuntu id -u", "1000\n"),
            ("sudo mkdir -p /etc/rancher/k3s && echo 'a: 1' | sudo tee /etc/rancher/k3s/config.yaml >/dev/null"
             " && cat /etc/rancher/k3s/config.yaml && stat -c '%U %a' /etc/rancher/k3s/config.yaml",
             "a: 1\nroot 644\n"),
            ("sudo chmod 600 /etc/rancher/k3s/config.yaml; cat /etc/rancher/k3s/config.yaml 2>&1; "
             "sudo cat /etc/rancher/k3s/config.yaml", "cat: /etc/rancher/k3s/config.yaml: Permission denied\na: 1\n"),
            ("echo mine > ~/note && stat -c %U ~/note && sudo chown root ~/note && stat -c %U ~/note", "ubuntu\nroot\n"),
            ("touch u1 && stat -c %a u1 && umask && umask 077 && touch u2 && mkdir d2 && stat -c %a u2 d2",
             "664\n0002\n600\n700\n"),
            ("sudo -n sh -c 'umask 077 && tee /etc/secret.yaml >/dev/null' < /dev/null && "
             "stat -c %a /etc/secret.yaml && sudo touch /etc/plain && stat -c %a /etc/plain", "600\n644\n"),
        ]
        for command, expected in cases:
            assert await lab.sh(command) == (expected, "", 0), command
        assert await lab.sh("sudo") == ("", "usage: sudo -h | -K | -k | -V\n"
                                            "usage: sudo [-AbEHknPS] [-u user] [VAR=value] [-i|-s] [<command>]\n", 1)


async def test_files_persist_in_the_state_folder_across_a_restart(tmp_path):
    async with node_lab(tmp_path) as lab:
        await lab.sh("sudo mkdir -p /opt/app && echo v1 | sudo tee /opt/app/version && echo note > ~/n")
        assert (lab.node.host_path("/opt/app/version")).read_text() == "v1\n"
        await lab.restart()
        assert await lab.sh("cat /opt/app/version ~/n && stat -c %U ~/n") == ("v1\nnote\nubuntu\n", "", 0)
