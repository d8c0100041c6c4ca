"""SFTP on a node: asyncssh's SFTP server chrooted into the node's file tree, starting in the
user's home as OpenSSH's does, refusing what the user's permissions refuse, and recording the
owner of the files a user creates."""

from __future__ import annotations

import posixpath

import asyncssh

from labsim.node import image
from labsim.node.model import NodeModel, normpath

WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC


class NodeSFTPServer(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel, node: NodeModel) -> None:
        super().__init__(chan, chroot=str(node.root).encode())
        self.node = node
        self.user = chan.get_extra_info("username")
        self.home = image.home(node, self.user)

    def map_path(self, path: bytes) -> bytes:
        return super().map_path(posixpath.join(self.home.encode(), path))

    def _node_path(self, path: bytes) -> str:
        return normpath(path.decode(errors="replace"), self.home)

    def _require(self, path: str, access: str) -> None:
        if not self.node.can(path, self.user, access):
            raise asyncssh.SFTPPermissionDenied(f"{path}: Permission denied")

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        node_path = self._node_path(path)
        existed = self.node.exists(node_path)
        if existed:
            self._require(node_path, "w" if pflags & WRITE_FLAGS else "r")
        elif pflags & WRITE_FLAGS and self.node.is_dir(posixpath.dirname(node_path)):
            self._require(posixpath.dirname(node_path), "w")
        opened = super().open(path, pflags, attrs)
        if not existed and self.user != "root":
            self.node.chown(node_path, self.user)
        return opened

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        mode = attrs.permissions if attrs.permissions is not None else None
        self.node.mkdir(self._node_path(path), parents=False, mode=mode, user=self.user)

    def remove(self, path: bytes) -> None:
        self.node.remove(self._node_path(path), user=self.user)

    def rmdir(self, path: bytes) -> None:
        node_path = self._node_path(path)
        if self.node.listdir(node_path):
            raise asyncssh.SFTPFailure(f"{node_path}: Directory not empty")
        self.node.remove(node_path, recursive=True, user=self.user)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        if self.node.exists(self._node_path(newpath)):
            raise asyncssh.SFTPFailure(f"{self._node_path(newpath)}: File exists")
        self.node.rename(self._node_path(oldpath), self._node_path(newpath), user=self.user)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self.node.rename(self._node_path(oldpath), self._node_path(newpath), user=self.user)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        node_path = self._node_path(path)
        if self.user != "root" and self.node.owner(node_path) != self.user:
            raise asyncssh.SFTPPermissionDenied(f"{node_path}: Operation not permitted")
        super().setstat(path, attrs)

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("symlinks are not modelled on simulated nodes")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("hard links are not modelled on simulated nodes")

    def exit(self) -> None:
        # sshd reports the sftp-server's exit status; OpenSSH's scp fails without one.
        self.channel.exit(0)
