"""nginx (image ``nginx``) from Debian's package, unpacked into .tools/nginx by
``scripts/install-programs.sh``.

The container holds the image's files (/etc/nginx/nginx.conf, conf.d/default.conf,
/usr/share/nginx/html) unless its volumes bring their own. nginx cannot be told to see the
container's folder as ``/``, so at each start the runtime writes a copy of /etc/nginx beside the
container with the path directives (include, root, alias, ssl_certificate...) pointing at the
real files, ``listen PORT`` bound to the pod IP, and the logs on stdout/stderr (the image links
them so), which become the container's log. nginx resolves the host names of ``proxy_pass`` and
``upstream { server ...; }`` once, at start, with the system's resolver; a container's resolver
is the cluster DNS, so the copy names the address the cluster's DNS zone gives (the container's
search list applied; a name it does not know stays, and nginx fails on it: ``host not found in
upstream``). nginx's messages name the configuration's container path (``/etc/nginx/...``), not
the copy's.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import dns.message
import dns.name
import dns.rdatatype

from labsim.net.dnszone import ClusterZone
from labsim.runtime import programs
from labsim.runtime.filesystem import ContainerFS

IMAGES = ("nginx",)
PACKAGE = "Debian's nginx (make runs scripts/install-programs.sh into .tools/nginx)"
TOOLS: tuple[str, ...] = ()
_PATH_DIRECTIVES = ("include", "root", "alias", "ssl_certificate", "ssl_certificate_key", "ssl_trusted_certificate",
                    "ssl_client_certificate", "ssl_dhparam", "auth_basic_user_file", "error_log", "access_log")
_DIRECTIVE = re.compile(rf"((?:^|[{{;}}])\s*)({'|'.join(_PATH_DIRECTIVES)})(\s+)(/[^\s;]*)", re.M)
_LISTEN = re.compile(r"((?:^|[{;}])\s*)listen\s+([^;]+);", re.M)
_HTTP = re.compile(r"^(\s*http\s*\{)", re.M)
# proxy_pass http://NAME[:port]... and an upstream block's server NAME[:port]
_UPSTREAM_HOST = re.compile(r"((?:^|[{;}])\s*(?:proxy_pass\s+https?://|server\s+))([A-Za-z][A-Za-z0-9.-]*)(?=[:/;\s])",
                            re.M)
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
_DROPPED = re.compile(r"^[ \t]*(user|pid|daemon)[ \t]+[^;\n]*;[ \t]*$", re.M)  # the line stays (line numbers)
_LOGS = {"/var/log/nginx/access.log": "/dev/stdout", "/var/log/nginx/error.log": "/dev/stderr"}
NGINX_CONF = """\
user  nginx;
worker_processes  auto;

error_log  /var/log/nginx/error.log notice;
pid        /var/run/nginx.pid;

events {
    worker_connections  1024;
}

http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;
    access_log  /var/log/nginx/access.log;
    sendfile        on;
    keepalive_timeout  65;
    include /etc/nginx/conf.d/*.conf;
}
"""
DEFAULT_CONF = """\
server {
    listen       80;
    listen  [::]:80;
    server_name  localhost;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }
}
"""
INDEX = "<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n<h1>Welcome to nginx!</h1>\n</body>\n</html>\n"


def _package() -> Path:
    tools = os.environ.get("LABSIM_TOOLS") or str(Path(__file__).resolve().parents[3] / ".tools")
    return Path(tools) / "nginx"


def bin_dir() -> Path | None:
    found = _package() / "usr" / "sbin"
    return found if (found / "nginx").exists() else None


def _image_files(fs: ContainerFS) -> None:
    """The nginx image's own files, where the container's volumes did not put others."""
    defaults = {"/etc/nginx/nginx.conf": NGINX_CONF, "/etc/nginx/conf.d/default.conf": DEFAULT_CONF,
                "/usr/share/nginx/html/index.html": INDEX}
    for path, text in defaults.items():
        real = fs.host_path(path)
        if not real.exists() and not real.parent.is_symlink():
            real.parent.mkdir(parents=True, exist_ok=True)
            real.write_text(text)
    mime = fs.host_path("/etc/nginx/mime.types")
    if not mime.exists():
        shutil.copy(_package() / "etc" / "nginx" / "mime.types", mime)
    for folder in ("/var/cache/nginx", "/var/run"):
        fs.host_path(folder).mkdir(parents=True, exist_ok=True)


def _translate(text: str, fs: ContainerFS, shadow: Path, pod_ip: str, ports: list[int]) -> str:
    """The configuration with real paths, listening on the pod IP; the ports it listens on go to ``ports``."""
    def path(match: re.Match) -> str:
        value = match.group(4)
        if value in _LOGS or value.startswith("/dev/"):
            real = _LOGS.get(value, value)
        elif value.startswith("/etc/nginx/") or value == "/etc/nginx":
            real = str(shadow) + value[len("/etc/nginx"):]
        else:
            real = str(fs.host_path(value))
        return f"{match.group(1)}{match.group(2)}{match.group(3)}{real}"

    upstreams = set(re.findall(r"(?:^|[{;}])\s*upstream\s+([^\s{]+)", text, re.M))  # names, not hosts

    def host(match: re.Match) -> str:
        name = match.group(2)
        return match.group(0) if name in upstreams else f"{match.group(1)}{_cluster_address(fs, name)}"

    def listen(match: re.Match) -> str:
        address, *options = match.group(2).split()
        if address.startswith("["):
            return ""  # IPv6: the pod network here is IPv4 only
        port = address.rsplit(":", 1)[-1]
        if port.isdigit():
            ports.append(int(port))
        return f"{match.group(1)}listen {pod_ip}:{port} {' '.join(options)};".replace(" ;", ";")

    # Debian's build keeps its temporary files in /var/lib/nginx: here, the container's cache folder.
    temp = " ".join(f"{kind}_temp_path {fs.host_path('/var/cache/nginx')}/{kind}_temp;" for kind in _TEMP_PATHS)
    # Without an access_log, nginx writes its compiled-in /var/log/nginx/access.log, which the
    # image links to stdout: say so, where the file does not choose one.
    if "access_log" not in text:
        temp += " access_log /dev/stdout;"
    text = _HTTP.sub(lambda m: f"{m.group(1)} {temp}", text, count=1)  # on its line: nginx's line numbers hold
    text = _UPSTREAM_HOST.sub(host, text)
    return _LISTEN.sub(listen, _DIRECTIVE.sub(path, _DROPPED.sub("", text)))


def _cluster_address(fs: ContainerFS, name: str) -> str:
    """The address the cluster DNS gives ``name`` through the container's search list (answered
    from the API objects, as CoreDNS answers), else ``name`` unchanged."""
    if name in ("localhost", "unix"):
        return name
    resolv = fs.read("/etc/resolv.conf").decode(errors="replace") if fs.is_file("/etc/resolv.conf") else ""
    search = next((line.split()[1:] for line in resolv.splitlines() if line.startswith("search")), [])
    candidates = [f"{name}.{domain}" for domain in search] if name.count(".") < 5 else []
    zone = ClusterZone(fs.pod_network.cluster.store)
    for candidate in [*candidates, name]:
        reply = zone.answer(dns.message.make_query(dns.name.from_text(candidate), dns.rdatatype.A))
        found = [r.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for r in rrset]
        if found:
            return found[0]
    return name


def container_line(fs: ContainerFS, line: str) -> str:
    """A line of nginx's output as the container shows it: the configuration copy's paths as /etc/nginx."""
    return line.replace(str(fs.folder / "nginx-etc"), "/etc/nginx")


def prepare(fs: ContainerFS, image: str, env: dict[str, str]) -> list[tuple[list[str], bytes]]:
    """Write the translated copy of /etc/nginx (nothing to run before nginx)."""
    _image_files(fs)
    shadow = fs.folder / "nginx-etc"
    shutil.rmtree(shadow, ignore_errors=True)
    source = fs.host_path("/etc/nginx").resolve()
    ports: list[int] = []
    for folder, _, files in os.walk(source, followlinks=True):  # conf.d is often a ConfigMap's folder
        (shadow / Path(folder).relative_to(source)).mkdir(parents=True, exist_ok=True)
        for name in files:
            real = Path(folder) / name
            target = shadow / real.relative_to(source)
            if name.endswith(".conf"):
                target.write_text(_translate(real.read_text(), fs, shadow, fs.spec.ip, ports))
            else:
                shutil.copy(real, target)
    programs.check_ports(image, ports)  # nginx would die on bind(): say so and how to fix it instead
    return []


def server(fs: ContainerFS, image: str, env: dict[str, str], pod_ip: str, args: list[str]) -> list[str]:
    bins = bin_dir()
    assert bins is not None
    prefix = fs.host_path("/var/cache/nginx")
    # Workers run as root where labsim does: the lab's state folder may be root's alone (0700).
    user = "user root; " if os.geteuid() == 0 else ""
    return [str(bins / "nginx"), "-p", f"{prefix}/", "-c", str(fs.folder / "nginx-etc" / "nginx.conf"),
            "-g", f"daemon off; {user}pid {fs.host_path('/var/run/nginx.pid')};"]
