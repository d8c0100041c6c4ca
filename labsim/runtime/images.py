"""The image model: what a container image holds, as far as a plain container needs it: its
OS release file, its users and the programs on its PATH (busybox applets, Debian's base).

Programs are those of the node shell's registry; one the image lacks is "not found" inside the
container even though the node shell knows it (busybox has no apt-get, ubuntu no wget).
"""

from __future__ import annotations

from dataclasses import dataclass


def _programs(names: str) -> frozenset[str]:
    return frozenset(names.split())


_BUSYBOX = _programs(
    "sh ash cat echo printf ls mkdir rm rmdir cp mv touch chmod chown env printenv hostname id whoami head "
    "tail grep egrep fgrep sed awk wc sort uniq cut tr sleep date test [ true false seq tee basename dirname "
    "base64 sha256sum stat tar uname ps df free which wget timeout install")
_DEBIAN = _programs(
    "sh bash dash cat echo printf ls mkdir rm rmdir cp mv touch chmod chown env printenv hostname id whoami "
    "head tail grep egrep fgrep sed awk mawk wc sort uniq cut tr sleep date test [ true false seq tee basename "
    "dirname base64 sha256sum stat tar uname df install timeout apt-get apt dpkg dpkg-query")


@dataclass(frozen=True)
class ImageModel:
    family: str
    os_release: str
    programs: frozenset[str]
    shell: str = "/bin/sh"


BUSYBOX = ImageModel("busybox", 'NAME="BusyBox"\nID=busybox\nVERSION_ID=1.37.0\n', _BUSYBOX)
ALPINE = ImageModel("alpine", 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.21.0\n'
                    'PRETTY_NAME="Alpine Linux v3.21"\n', _BUSYBOX | {"apk"})
CURL = ImageModel("alpine", ALPINE.os_release, _BUSYBOX | {"curl"})
UBUNTU = ImageModel("ubuntu", 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\n'
                    "ID_LIKE=debian\n", _DEBIAN)
DEBIAN = ImageModel("debian", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                    'VERSION_ID="12"\nID=debian\n', _DEBIAN)
# Image repository (last path element, no tag) -> model; anything else is Debian-based, as most are.
_BY_REPOSITORY = {"busybox": BUSYBOX, "alpine": ALPINE, "curl": CURL, "ubuntu": UBUNTU, "debian": DEBIAN}


def repository(image: str) -> str:
    """``docker.io/library/busybox:1.37`` -> ``busybox``; ``curlimages/curl@sha256:..`` -> ``curl``."""
    name = image.split("@")[0].rsplit("/", 1)[-1]
    return name.split(":")[0]


def model_for(image: str) -> ImageModel:
    return _BY_REPOSITORY.get(repository(image), DEBIAN)


def is_plain(image: str) -> bool:
    """A general-purpose image whose command runs in the node shell model (a plain container).
    Other images' processes are modelled by the kubelet until the registry has a runner for them."""
    return repository(image) in _BY_REPOSITORY
