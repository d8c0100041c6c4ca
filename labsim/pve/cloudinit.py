"""``cloudinit/dump``: the user, network and meta data PVE writes on a VM's cloud-init drive."""

from __future__ import annotations

import hashlib
import ipaddress

from labsim.pve.vms import VM, GuestNetwork


def dump(vm: VM, guest: GuestNetwork, kind: str) -> str:
    if kind == "user":
        return _user(guest)
    if kind == "network":
        return _network(guest)
    return f"instance-id: {hashlib.sha1(vm.digest().encode()).hexdigest()}\n"


def _user(guest: GuestNetwork) -> str:
    lines = ["#cloud-config", f"hostname: {guest.hostname}", "manage_etc_hosts: true"]
    if guest.searchdomain:
        lines.append(f"fqdn: {guest.hostname}.{guest.searchdomain}")
    lines.append(f"user: {guest.user}")
    if guest.authorized_keys:
        lines.append("ssh_authorized_keys:")
        lines += [f"  - {key}" for key in guest.authorized_keys]
    lines += ["chpasswd:", "  expire: False", "users:", "  - default", "package_upgrade: true"]
    return "\n".join(lines) + "\n"


def _network(guest: GuestNetwork) -> str:
    lines = ["version: 1", "config:", "    - type: physical", "      name: eth0"]
    if guest.mac:
        lines.append(f"      mac_address: '{guest.mac.lower()}'")
    lines.append("      subnets:")
    if guest.ip:
        netmask = ipaddress.IPv4Network(f"0.0.0.0/{guest.prefix}").netmask
        lines += ["      - type: static", f"        address: '{guest.ip}'", f"        netmask: '{netmask}'"]
        if guest.gateway:
            lines.append(f"        gateway: '{guest.gateway}'")
    else:
        lines.append("      - type: dhcp4")
    lines += ["    - type: nameserver", "      address:"] + [f"      - '{ns}'" for ns in guest.nameservers]
    if guest.searchdomain:
        lines += ["      search:", f"      - '{guest.searchdomain}'"]
    return "\n".join(lines) + "\n"
