"""The ``labkit`` command: ``check`` a lab file, ``run`` the series, ``site`` and ``diff`` its runs,
``jupyter`` for the notebooks in JupyterLab.

Exit codes: 0 success, 1 a notebook or the run failed, 2 invalid parameters or usage.
Errors are messages, never tracebacks.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path

from labkit import secrets, yamlfile
from labkit.errors import LabError, ParamsError, Terminated
from labkit.params import Lab, load_lab, missing_files, unset_variables

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = Path("parameters/sim.yaml")
SECRET_NAME = re.compile(r"token|secret|passw|private|credential|api_?key", re.IGNORECASE)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:  # before a run had anything to record
        print("interrupted", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description="Operate a K3s home lab on Proxmox VE.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate a lab file without touching anything")
    check.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="lab file (default: %(default)s)")
    check.add_argument("--strict", action="store_true", help="also require the referenced local files and environment variables to exist")
    check.set_defaults(handler=cmd_check)

    run = sub.add_parser("run", help="run the notebook series headless with papermill")
    run.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="lab file (default: %(default)s)")
    run.add_argument("--only", nargs="+", default=[], metavar="NN", help="run only these notebooks (e.g. 01 02)")
    run.add_argument("--from", dest="start_from", metavar="NN", help="start at this notebook")
    run.add_argument("--dry-run", action="store_true", help="show plans only; change nothing")
    run.add_argument("--keep-lab", action="store_true", help="leave the embedded lab running afterwards")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a notebook parameter (VALUE in YAML), e.g. -p reconcile true")
    run.add_argument("--no-html", action="store_true", help="skip rendering executed notebooks to HTML")
    run.add_argument("--notebooks", type=Path, default=REPO / "notebooks", help=argparse.SUPPRESS)
    run.add_argument("--outputs", type=Path, default=Path("outputs"), help="where run folders go (default: %(default)s)")
    run.set_defaults(handler=cmd_run)

    site = sub.add_parser("site", help="a static site of the run folders: index, runs, history, drift")
    site.add_argument("--outputs", type=Path, default=Path("outputs"), help="the run folders (default: %(default)s)")
    site.add_argument("--out", type=Path, help="where the site goes (default: the outputs folder itself)")
    site.set_defaults(handler=cmd_site)

    diff = sub.add_parser("diff", help="what changed in the lab between two runs")
    diff.add_argument("run_a", type=Path, metavar="RUN_A", help="the earlier run folder")
    diff.add_argument("run_b", type=Path, metavar="RUN_B", help="the later run folder")
    diff.set_defaults(handler=cmd_diff)

    jupyter = sub.add_parser("jupyter", help="JupyterLab on loopback in the notebooks' folder, on the embedded lab")
    jupyter.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="lab file (default: %(default)s)")
    jupyter.add_argument("--notebooks", type=Path, default=REPO / "notebooks", help=argparse.SUPPRESS)
    jupyter.add_argument("--port", type=int, default=8888, help="JupyterLab's port on 127.0.0.1 (default: %(default)s)")
    jupyter.set_defaults(handler=cmd_jupyter)
    return parser


def cmd_check(args: argparse.Namespace) -> int:
    lab = load_lab(args.params, check_files=args.strict)
    print(describe(lab))
    if not args.strict:
        for line in missing_files(lab) + unset_variables(lab):
            print(f"  note: {line} (needed before running)")
    return 0


def describe(lab: Lab) -> str:
    servers, agents = len(lab.servers), len(lab.agents)
    mem = sum(n.memory_mib for n in lab.nodes) / 1024
    disk = sum(n.disk_gib for n in lab.nodes)
    return (f"{lab.path}: valid. Lab '{lab.name}' ({lab.kind}): {servers} server(s) + {agents} agent(s) on "
            f"Proxmox node '{lab.proxmox.node}' at {lab.proxmox.host}:{lab.proxmox.port}, "
            f"{sum(n.cores for n in lab.nodes)} vCPU, {mem:g} GiB memory, {disk} GiB disk; "
            f"network {lab.network.subnet}, k3s {lab.k3s.version}, MetalLB {lab.metallb.addresses}.")


def cmd_run(args: argparse.Namespace) -> int:
    from labkit.runner import RunOptions, interruptible, run_series

    lab = load_lab(args.params)
    options = RunOptions(params=args.params, notebooks_dir=args.notebooks, outputs_dir=args.outputs,
                         only=args.only, start_from=args.start_from, dry_run=args.dry_run,
                         keep_lab=args.keep_lab, html=not args.no_html,
                         parameters=parameter_values(args.parameter))
    with interruptible():
        run = run_series(lab, options)
    if run.interrupted_by:
        print(f"interrupted ({run.interrupted_by}): {run.folder}/summary.md", file=sys.stderr)
        return 128 + signal.Signals[run.interrupted_by]  # as a shell reports a process the signal ended
    print(f"{'passed' if run.ok else 'FAILED'}: {run.folder}/summary.md")
    return 0 if run.ok else 1


def cmd_site(args: argparse.Namespace) -> int:
    from labkit.site import build_site

    index = build_site(args.outputs, args.out or args.outputs)
    print(f"site written: {index.resolve().as_uri()}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from labkit.site import diff_text, load_run

    print(diff_text(load_run(args.run_a), load_run(args.run_b)), end="")
    return 0


def cmd_jupyter(args: argparse.Namespace) -> int:
    from labkit.jupyter import serve
    from labkit.runner import interruptible

    lab = load_lab(args.params)
    with interruptible():
        return serve(lab, args.notebooks, args.port)


def parameter_values(pairs: list[list[str]]) -> dict[str, object]:
    """``-p NAME VALUE`` pairs, each VALUE read as YAML (``true``, ``3``, ``[a, b]``)."""
    values, errors = {}, []
    for name, text in pairs:
        shape = "a secret's name" if SECRET_NAME.search(name) else secrets.secret_shape(text)
        if shape:  # never echoed: the value may be the secret
            errors.append(f"-p {name}: the value looks like {shape}; secrets never go on the command line (they "
                          "would stay in the executed notebooks): reference them in the lab file (env:NAME or "
                          "file:PATH#key)")
            continue
        try:
            values[name] = yamlfile.load(text)
        except yamlfile.YamlProblem as exc:
            errors.append(f"-p {name}: {exc}; quote a plain string, e.g. -p {name} \"'text'\"")
    if errors:
        raise ParamsError(errors, source="the command line")
    return values


if __name__ == "__main__":
    sys.exit(main())
