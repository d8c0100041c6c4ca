"""k3s release versions: parsing, what `k3s --version` prints, and the version skew policy.

A k3s version is a Kubernetes version with a k3s revision: ``v1.34.3+k3s1``. The sim has no
release server: ``RELEASES`` lists the k3s releases of the 1.33, 1.34 and 1.35 lines (as published
on github.com/k3s-io/k3s/releases), and the installer refuses any other version as the real one
does (its download of the release's checksums fails). A few releases print their real commit and
Go version, the others a stable made-up commit derived from the version.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# The stable channel's release when no INSTALL_K3S_VERSION is given.
STABLE = "v1.34.3+k3s1"

# Releases whose `k3s --version` lines are known: version -> (commit, go version).
_RELEASES = {
    "v1.34.3+k3s1": ("48ffa7b6", "go1.24.11"),
    "v1.33.3+k3s1": ("236cbf25", "go1.24.4"),
}
# Published releases (1.34 starts at v1.34.1: there was no k3s v1.34.0).
RELEASES = frozenset(
    [f"v1.33.{p}+k3s1" for p in range(0, 8)]
    + [f"v1.34.{p}+k3s1" for p in range(1, 6)]
    + [f"v1.35.{p}+k3s1" for p in range(0, 4)]
)
# Go used per Kubernetes minor, for releases not listed above.
_GO_BY_MINOR = {35: "go1.25.5", 34: "go1.24.11", 33: "go1.24.4", 32: "go1.23.6", 31: "go1.22.12", 30: "go1.22.8"}

# Kubernetes skew policy: a kubelet may be up to 3 minors older than the API server, never newer.
MAX_KUBELET_MINORS_BEHIND = 3

_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)(?:-rc(\d+))?\+k3s(\d+)$")


class VersionError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class K3sVersion:
    major: int
    minor: int
    patch: int
    revision: int
    text: str

    @classmethod
    def parse(cls, text: str) -> K3sVersion:
        match = _VERSION.match(text.strip())
        if not match:
            raise VersionError(f"not a k3s version: {text!r} (expected vX.Y.Z+k3sN)")
        major, minor, patch, _rc, revision = match.groups()
        return cls(int(major), int(minor), int(patch), int(revision), text.strip())

    def __str__(self) -> str:
        return self.text

    @property
    def commit(self) -> str:
        known = _RELEASES.get(self.text)
        return known[0] if known else hashlib.sha1(self.text.encode()).hexdigest()[:8]

    @property
    def go_version(self) -> str:
        known = _RELEASES.get(self.text)
        return known[1] if known else _GO_BY_MINOR.get(self.minor, "go1.24.11")

    def version_lines(self) -> str:
        """What `k3s --version` prints."""
        return f"k3s version {self.text} ({self.commit})\ngo version {self.go_version}\n"

    @property
    def released(self) -> bool:
        return self.text in RELEASES

    def kubernetes(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)


def skew_error(agent: K3sVersion, server: K3sVersion) -> str | None:
    """Why a kubelet of version ``agent`` may not join an API server of version ``server``, or None."""
    if agent.kubernetes() > server.kubernetes():
        return (f"kubelet version {agent} is newer than the API server version {server}: "
                "the Kubernetes version skew policy does not allow a kubelet newer than kube-apiserver")
    if agent.major == server.major and server.minor - agent.minor > MAX_KUBELET_MINORS_BEHIND:
        return (f"kubelet version {agent} is more than {MAX_KUBELET_MINORS_BEHIND} minor versions older "
                f"than the API server version {server}: not supported by the Kubernetes version skew policy")
    return None
