"""``tar`` for the node shell model: create (``c``) and extract (``x``) archives of the node's
or container's files, ``-f -`` on stdin/stdout, ``-C DIR``; what ``kubectl cp`` runs
(``tar cf - PATH`` and ``tar -xmf - -C DIR``)."""

from __future__ import annotations

import io
import posixpath
import tarfile

from labsim.node.model import normpath
from labsim.node.registry import CommandContext, CommandResult, command


def _options(argv: list[str]) -> tuple[set[str], str, str, list[str]] | str:
    args, letters, archive, directory, operands = list(argv), set(), "-", "", []
    if args and not args[0].startswith("-"):
        args[0] = "-" + args[0]  # `tar cf - x`: the first word is the option letters
    while args:
        arg = args.pop(0)
        if arg.startswith("--"):
            continue
        if arg.startswith("-") and len(arg) > 1:
            for letter in arg[1:]:
                if letter == "f":
                    archive = args.pop(0) if args else ""
                elif letter == "C":
                    directory = args.pop(0) if args else ""
                else:
                    letters.add(letter)
        else:
            operands.append(arg)
    if not letters & {"c", "x", "t"}:
        return "tar: You must specify one of the '-Acdtrux', '--delete' or '--test-label' options\n"
    return letters, archive, directory, operands


@command("tar")
async def tar(ctx: CommandContext) -> CommandResult:
    parsed = _options(ctx.argv[1:])
    if isinstance(parsed, str):
        return CommandResult.fail(parsed + "Try 'tar --help' or 'tar --usage' for more information.\n", 2)
    letters, archive, directory, operands = parsed
    if archive != "-":
        return CommandResult.fail("tar: only -f - (standard input/output) is modelled by labsim\n", 2)
    cwd = normpath(directory, ctx.cwd) if directory else ctx.cwd
    try:
        if "c" in letters:
            return _create(ctx, cwd, operands)
        return _extract(ctx, cwd, listing="t" in letters)
    except (OSError, tarfile.TarError) as exc:
        return CommandResult.fail(f"tar: {exc}\n", 2)


def _create(ctx: CommandContext, cwd: str, operands: list[str]) -> CommandResult:
    out, messages, failed = io.BytesIO(), [], False
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for operand in operands:
            path = normpath(operand, cwd)
            if not ctx.node.exists(path):
                messages.append(f"tar: {operand}: Cannot stat: No such file or directory\n")
                failed = True
                continue
            if operand.startswith("/"):
                messages.append("tar: Removing leading `/' from member names\n")  # a warning only
            _add(ctx, archive, path, operand.lstrip("/") or ".")
    if failed:
        messages.append("tar: Exiting with failure status due to previous errors\n")
    return CommandResult(out.getvalue(), "".join(dict.fromkeys(messages)).encode(), 2 if failed else 0)


def _add(ctx: CommandContext, archive: tarfile.TarFile, path: str, name: str) -> None:
    node = ctx.node
    info = tarfile.TarInfo(name)
    info.mode = node.mode(path)
    if node.is_dir(path):
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
        for child in node.listdir(path, ctx.user):
            _add(ctx, archive, posixpath.join(path, child), posixpath.join(name, child))
        return
    data = node.read(path, ctx.user)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _extract(ctx: CommandContext, cwd: str, listing: bool) -> CommandResult:
    names = []
    with tarfile.open(fileobj=io.BytesIO(ctx.stdin), mode="r:*") as archive:
        for member in archive:
            names.append(member.name + "\n")
            if listing:
                continue
            path = normpath(member.name, cwd)
            if member.isdir():
                ctx.node.mkdir(path, user=ctx.user)
            elif member.isfile():
                ctx.node.mkdir(posixpath.dirname(path), user=ctx.user)
                source = archive.extractfile(member)
                ctx.node.write(path, source.read() if source else b"", mode=member.mode & 0o7777, user=ctx.user)
    return CommandResult.ok("".join(names) if listing else "")
