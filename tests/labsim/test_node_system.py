"""Packages and kernel knobs a K3s preflight looks at: apt-get/dpkg on the node's dpkg status,
sysctl, modprobe and swap."""

from __future__ import annotations

from tests.labsim.node_lab import node_lab


async def test_apt_get_installs_packages_that_dpkg_then_reports_across_a_restart(tmp_path):
    async with node_lab(tmp_path) as lab:
        out, err, status = await lab.sh("dpkg -s nfs-common")
        assert status == 1 and "package 'nfs-common' is not installed" in err
        assert await lab.sh("dpkg -s openssh-server | grep Status") == ("Status: install ok installed\n", "", 0)
        out, err, status = await lab.sh("apt-get install -y nfs-common")
        assert status == 100 and "are you root?" in err
        out, err, status = await lab.sh("sudo apt-get install nfs-common")
        assert status == 1 and out.endswith("Do you want to continue? [Y/n] Abort.\n")
        out, err, status = await lab.sh("sudo apt-get update && sudo apt-get install -y nfs-common open-iscsi")
        assert status == 0 and "Setting up nfs-common (1:2.6.1-1ubuntu1.2) ...\n" in out
        out, _, _ = await lab.sh("sudo apt-get install -y nfs-common")
        assert "nfs-common is already the newest version (1:2.6.1-1ubuntu1.2).\n" in out
        out, err, status = await lab.sh("sudo apt-get install -y no-such-package")
        assert (status, err) == (100, "E: Unable to locate package no-such-package\n")
        await lab.restart()
        assert await lab.sh("dpkg-query -W --showformat='${Version}' nfs-common") == ("1:2.6.1-1ubuntu1.2", "", 0)
        assert await lab.sh("sudo apt-get purge -y open-iscsi >/dev/null && dpkg -s open-iscsi >/dev/null 2>&1"
                            " || echo gone") == ("gone\n", "", 0)


async def test_sysctl_and_modules_hold_until_reboot_unless_persisted(tmp_path):
    async with node_lab(tmp_path) as lab:
        assert await lab.sh("sysctl net.ipv4.ip_forward") == ("net.ipv4.ip_forward = 0\n", "", 0)
        out, err, status = await lab.sh("sysctl -w net.ipv4.ip_forward=1")
        assert status == 255 and "permission denied on key 'net.ipv4.ip_forward'" in err
        out, err, status = await lab.sh("sysctl -n net.bridge.bridge-nf-call-iptables")
        assert status == 255 and "No such file or directory" in err  # br_netfilter not loaded yet
        assert await lab.sh("sudo modprobe br_netfilter && lsmod | grep -c br_netfilter && "
                            "sudo sysctl -w net.ipv4.ip_forward=1 && sysctl -n net.bridge.bridge-nf-call-iptables") == (
            "1\nnet.ipv4.ip_forward = 1\n1\n", "", 0)
        assert (await lab.sh("sudo modprobe no_such_module"))[2] == 1
        await lab.host.stop_node(lab.spec.vmid)
        await lab.host.start_node(lab.spec)
        assert await lab.sh("sysctl -n net.ipv4.ip_forward; lsmod | grep -c br_netfilter") == ("0\n0\n", "", 1)
        await lab.sh("echo br_netfilter | sudo tee /etc/modules-load.d/k8s.conf && sudo mkdir -p /etc/sysctl.d && "
                     "echo 'net.ipv4.ip_forward = 1' | sudo tee /etc/sysctl.d/99-k8s.conf")
        await lab.host.stop_node(lab.spec.vmid)
        await lab.host.start_node(lab.spec)
        assert await lab.sh("sysctl -n net.ipv4.ip_forward; lsmod | grep -c br_netfilter") == ("1\n1\n", "", 0)


async def test_the_cloud_image_has_no_swap(tmp_path):
    async with node_lab(tmp_path) as lab:
        assert await lab.sh("swapon --show; sudo swapoff -a && echo off") == ("off\n", "", 0)
        assert await lab.sh("free -b | grep Swap | tr -s ' '") == ("Swap: 0 0 0\n", "", 0)
