"""The node shell's builtins and parameters as a provisioning tool uses them, over SSH: "$@",
cd, set -euo pipefail, read, trap, source, eval, exit, what is not modelled, and errors worded
as Ubuntu 22.04's bash words them ("bash: line N: ..."). Also what k3s and the node agree on:
installer arguments with spaces, and the kernel release a Node reports."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client

import labsim.k3s  # noqa: F401  -- registers k3s' installer with the nodes' shell
from labsim.lab import running_lab
from tests.labfiles import sim_config, write_lab
from tests.labsim.k3s_lab import VERSION, K3sLab
from tests.labsim.node_lab import node_lab

SCRIPT = """\
for a in "$@"; do echo "[$a]"; done
shift
echo "$# left: $*"
nosuch
"""


async def _cases(lab, cases: list[tuple[str, str, str, int]], input: str | None = None) -> None:
    for command, out, err, status in cases:
        assert await lab.sh(command, input=input) == (out, err, status), command


async def test_quoted_at_keeps_each_argument_one_word(tmp_path):
    async with node_lab(tmp_path) as lab:
        await lab.sh(f"cat > /tmp/args.sh <<'EOF'\n{SCRIPT}EOF")
        await _cases(lab, [
            ("bash /tmp/args.sh 'a b' c", "[a b]\n[c]\n1 left: c\n",
             "/tmp/args.sh: line 4: nosuch: command not found\n", 127),
            ("sh /tmp/args.sh 'a b' '' c", "[a b]\n[]\n[c]\n2 left:  c\n", "/tmp/args.sh: 4: nosuch: not found\n", 127),
            ("set -- one 'two words'; printf '<%s>' \"$@\" x\"$@\"y; echo", "<one><two words><xone><two wordsy>\n", "", 0),
            ("set -- a b c; shift 2; echo $# $1; shift 5; echo $?", "1 c\n1\n", "", 0),
            ("set -- a; set --; echo \"$#:$@:\"", "0::\n", "", 0),
        ])


async def test_cd_within_a_command_line(tmp_path):
    async with node_lab(tmp_path) as lab:
        await _cases(lab, [
            ("cd /tmp && touch here && ls && pwd", "here\n/tmp\n", "", 0),
            ("cd /etc; cd; pwd; echo $PWD", "/home/ubuntu\n/home/ubuntu\n", "", 0),
            ("cd /nope", "", "bash: line 1: cd: /nope: No such file or directory\n", 1),
            ("echo a\ncd /nope || echo failed", "a\nfailed\n", "bash: line 2: cd: /nope: No such file or directory\n", 0),
            ("cd /etc/hostname", "", "bash: line 1: cd: /etc/hostname: Not a directory\n", 1),
            ("cd /root", "", "bash: line 1: cd: /root: Permission denied\n", 1),
            ("cd /tmp /etc", "", "bash: line 1: cd: too many arguments\n", 1),
            ("cd /var/log && cd /tmp && cd - && pwd", "/var/log\n/var/log\n", "", 0),
            ("cd -", "", "bash: line 1: cd: OLDPWD not set\n", 1),
            ("cd /tmp | cat; pwd", "/home/ubuntu\n", "", 0),  # a pipeline's commands run in subshells
            ("sh -c 'cd /nope'", "", "sh: 1: cd: can't cd to /nope\n", 2),
            ("sudo sh -c 'cd /root && pwd'", "/root\n", "", 0),
        ])


async def test_options_of_set_and_the_shell(tmp_path):
    async with node_lab(tmp_path) as lab:
        await _cases(lab, [
            ("set -euo pipefail; echo ok", "ok\n", "", 0),
            ("false | true; echo $?; set -o pipefail; false | true; echo $?", "0\n1\n", "", 0),
            ("set -o pipefail; ls /nope | wc -l", "0\n", "ls: cannot access '/nope': No such file or directory\n", 2),
            ("set -u; echo ${UNSET:-default} ${UNSET-} $#; echo $UNSET; echo never", "default 0\n",
             "bash: line 1: UNSET: unbound variable\n", 127),
            ("bash -euo pipefail -c 'true | false; echo never'", "", "", 1),
            ("set -f; echo /etc/host*; set +f; echo /etc/hostnam*", "/etc/host*\n/etc/hostname\n", "", 0),
            ("set -q", "", "bash: line 1: set: -q: invalid option\n"
             "set: usage: set [-abefhkmnptuvxBCEHPT] [-o option-name] [--] [-] [arg ...]\n", 2),
            ("set -o nosuch", "", "bash: line 1: set: nosuch: invalid option name\n", 2),
            ("export A=1 B; B=2; sh -c 'echo $A $B'; export -n B; sh -c 'echo $A $B.'", "1 2\n1 .\n", "", 0),
            ("export 1x=2", "", "bash: line 1: export: `1x=2': not a valid identifier\n", 1),
            ("readonly R=1; declare -x D=2; echo $R; sh -c 'echo $D'", "1\n2\n", "", 0),
        ])


async def test_parameter_forms_scripts_use(tmp_path):
    async with node_lab(tmp_path) as lab:
        await _cases(lab, [
            ("v=v1.34.3+k3s1; echo ${v//./-} ${v/+/%2B} ${v/#v/V} ${v/%1/one} ${v/.*/} ${v:1:4} ${v: -4} ${v^^}",
             "v1-34-3+k3s1 v1.34.3%2Bk3s1 V1.34.3+k3s1 v1.34.3+k3sone v1 1.34 k3s1 V1.34.3+K3S1\n", "", 0),
            ("R=Ready; echo ${R,,} ${R,} $(echo ${R^})", "ready ready Ready\n", "", 0),
            ("printf -v line '%s=%d' port 6443; echo \"[$line]\"; printf '%s\\n' plain", "[port=6443]\nplain\n", "", 0),
            ("x=1; x+=2; PATH+=:/opt/bin; echo $x ${PATH##*:}", "12 /opt/bin\n", "", 0),
            ("echo ${X:-$(hostname)} \"${Y:-\"a  b\"}\" ${Z:-'$lit'} ${W:-${HOME}/bin} ${HOME:+\"[$USER]\"}",
             "k3s-master a  b $lit /home/ubuntu/bin [ubuntu]\n", "", 0),
            ("V=v1; echo ${V:-$(cat /nope)}; N=${NAME:=$(hostname -s)}; echo $NAME", "v1\nk3s-master\n", "", 0),
            (': "${TOKEN:?TOKEN must be set}"; echo never', "", "bash: line 1: TOKEN: TOKEN must be set\n", 127),
            ("E=; echo ${E?unset only}; echo ${N?}", "\n", "bash: line 1: N: parameter null or not set\n", 127),
            ("set -x; A=1 echo 'a b'; y=$(printf s)", "a b\n", "+ A=1\n+ echo 'a b'\n+ printf s\n+ y=s\n", 0),
            ("for i in $(seq 3); do echo $i; done; seq -s, 5 -2 1; x=$(cat /nope)", "1\n2\n3\n5,3,1\n",
             "cat: /nope: No such file or directory\n", 1),
        ])


async def test_exit_and_traps(tmp_path):
    async with node_lab(tmp_path) as lab:
        await _cases(lab, [
            ("exit 3", "", "", 3),
            ("exit 300", "", "", 44),
            ("exit -1", "", "", 255),
            ("exit abc; echo never", "", "bash: line 1: exit: abc: numeric argument required\n", 2),
            ("(exit 5); echo $?", "5\n", "", 0),
            ("trap 'echo cleanup $?' EXIT; echo work; exit 4", "work\ncleanup 4\n", "", 4),
            ("trap 'echo bye' 0 INT TERM; trap; trap - EXIT; true", "trap -- 'echo bye' EXIT\n"
             "trap -- 'echo bye' SIGINT\ntrap -- 'echo bye' SIGTERM\n", "", 0),
            ("set -e; trap 'echo failed at $?' ERR; false; echo never", "failed at 1\n", "", 1),
            ("trap 'echo x' NOPE", "", "bash: line 1: trap: NOPE: invalid signal specification\n", 1),
            ("local x=1", "", "bash: line 1: local: can only be used in a function\n", 1),
            ("return 1", "", "bash: line 1: return: can only `return' from a function or sourced script\n", 1),
        ])


async def test_functions_with_locals_and_return(tmp_path):
    async with node_lab(tmp_path) as lab:
        await _cases(lab, [
            ('x=outer; f() { local x=inner y; y=2; echo "$1 $x $y $#"; return 3; echo never; }; f a b; '
             'echo $? $x "${y-unset}"', "a inner 2 2\n3 outer unset\n", "", 0),
            ('log() { echo "[INFO] $*" >&2; }\nlog hello world', "", "[INFO] hello world\n", 0),
            ("function up { echo \"$@\" | tr a-z A-Z; }; up a b; v=$(up c); echo $v; type up",
             "A B\nC\nup is a function\n", "", 0),
            ('set -e; die() { echo "fatal: $1"; exit 9; }; true || die x; die boom; echo never', "fatal: boom\n", "", 9),
            ('f() { for i in "$@"; do [ $i = 2 ] && return 7; echo $i; done; }; f 1 2 3; echo rc=$?',
             "1\nrc=7\n", "", 0),
            ("install-k3s() {\n  echo ok\n}\ninstall-k3s && echo done", "ok\ndone\n", "", 0),
            ('f() { printf "a\\nb\\n" | while read l; do local z=$l; [ $l = b ] && return 4; echo $z; done; '
             'echo after $?; (return 2); echo sub $?; return 1; }; f; echo $?', "a\nafter 4\nsub 2\n1\n", "", 0),
            ("f() echo", "", "bash: -c: line 1: syntax error near unexpected token `echo'\n", 2),
        ])


async def test_case_statements(tmp_path):
    async with node_lab(tmp_path) as lab:
        await _cases(lab, [
            ('case "$(uname -m)" in x86_64|amd64) echo amd64;; aarch64) echo arm64;; *) echo other;; esac',
             "amd64\n", "", 0),
            ("v=1.34; case $v in\n  1.3[0-9]*)\n    echo supported\n    ;;\n  *) echo no ;;\nesac", "supported\n", "", 0),
            ("case x in (y) echo y;; esac; echo $?", "0\n", "", 0),
            ('case ab in "a*") echo literal;; a*) echo glob; esac', "glob\n", "", 0),
            ("for i in 1 2; do case $i in 1) continue;; esac; echo $i; done", "2\n", "", 0),
            ("echo a;; echo b", "", "bash: -c: line 1: syntax error near unexpected token `;;'\n", 2),
            ("case a in a) echo A", "", "bash: -c: line 1: syntax error: unexpected end of file\n", 2),
        ])


async def test_read_source_eval_and_type(tmp_path):
    async with node_lab(tmp_path) as lab:
        await lab.sh("printf 'a 1\\nb 2\\nlast\\n' > rows; printf 'X=set\\nreturn 3\\nX=never\\n' > env.sh")
        await _cases(lab, [
            ("read -r a b <<< '1 2 3'; echo \"[$a][$b]\"", "[1][2 3]\n", "", 0),
            ("IFS=: read -r user _ uid _ < /etc/passwd; echo $user $uid", "root 0\n", "", 0),
            ("while read -r k v; do echo \"$k=$v\"; done < rows", "a=1\nb=2\nlast=\n", "", 0),
            ("cat rows | while read line; do echo \"<$line>\"; done; echo \"${line:-unset}\"",
             "<a 1>\n<b 2>\n<last>\nunset\n", "", 0),
            ("read x < /dev/null; echo $? \"[$x]\"", "1 []\n", "", 0),
            (". ./env.sh; echo $? $X", "3 set\n", "", 0),
            ("source /etc/os-release && echo $VERSION_CODENAME", "jammy\n", "", 0),
            ("source /nope", "", "bash: line 1: /nope: No such file or directory\n", 1),
            ("cmd='echo evaluated; V=1'; eval \"$cmd\"; echo $V", "evaluated\n1\n", "", 0),
            ("type cd ls if; type -t sudo; type nope", "cd is a shell builtin\nls is /usr/bin/ls\n"
             "if is a shell keyword\nfile\n", "bash: line 1: type: nope: not found\n", 1),
            ("x=$(cat /nope); echo \"[$x]\"", "[]\n", "cat: /nope: No such file or directory\n", 0),
        ])
        assert await lab.sh("read -r first second; echo \"$second $first\"", input="hello world\n") == (
            "world hello\n", "", 0)
        assert await lab.sh("read -a arr", input="x\n") == (
            "", "bash: line 1: read: -a: not modelled by labsim's node shell\n", 2)


async def test_unmodelled_builtins_say_so_and_nothing_is_an_internal_error(tmp_path):
    async with node_lab(tmp_path) as lab:
        await _cases(lab, [
            ("[[ -d /tmp ]] && echo dir", "", "bash: line 1: [[: not modelled by labsim's node shell\n", 2),
            ("ulimit -n", "", "bash: line 1: ulimit: not modelled by labsim's node shell\n", 2),
            ("declare -a list", "", "bash: line 1: declare: arrays, functions and namerefs are not "
             "modelled by labsim's node shell\n", 2),
        ])
        for line in ("export", "set", "set -euo pipefail", "read", "local", "exit 2", "trap", "cd", "cd ~",
                     "shift 2", "wait", "eval", ". ", "type", "hash -r", "shopt -s nullglob", "unset -v X",
                     "umask 077", "command -v cd", "builtin cd /tmp", "let i=1", "alias x=y", "getopts a o",
                     "for x in ${y!}; do :; done", "echo $((1/0))", "cd /tmp | read x", "exec 3>&1"):
            out, err, status = await lab.sh(line, input="\n" if line == "read" else None)
            assert "internal error" not in err, line


async def test_installer_arguments_with_spaces_stay_one_argument(tmp_path):
    async with node_lab(tmp_path) as lab:
        assert await lab.sh("curl -sfL https://get.k3s.io -o /tmp/install.sh") == ("", "", 0)
        out, err, status = await lab.sh(f"INSTALL_K3S_SKIP_ENABLE=true INSTALL_K3S_VERSION={VERSION} "
                                        "sudo -E sh /tmp/install.sh server --node-label 'note=a b' --disable traefik")
        assert status == 0, err
        unit = (await lab.sh("cat /etc/systemd/system/k3s.service"))[0]
        assert "ExecStart=/usr/local/bin/k3s \\\n\tserver \\\n\t--node-label \\\n\t'note=a b' \\\n" in unit


def test_uname_and_the_node_object_report_one_kernel(tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server().exit_status == 0
        node = client.CoreV1Api(lab.kube(tmp_path)).read_node(lab.name(0))
        assert lab.ok(0, "uname -r").strip() == node.status.node_info.kernel_version
        assert f'PRETTY_NAME="{node.status.node_info.os_image}"' in lab.ok(0, "cat /etc/os-release")
