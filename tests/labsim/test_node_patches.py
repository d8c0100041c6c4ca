"""OS security updates on a node: pending updates listed, `apt-get upgrade` applying them and
asking for a restart when systemd changed, `reboot` power-cycling the guest (a new boot id, /run
emptied, SSH back), and unattended-upgrades enabled as on Ubuntu's cloud image."""

from __future__ import annotations

import asyncio

import asyncssh

from labsim.node import packages
from tests.labsim.node_lab import node_lab


async def test_pending_updates_upgrade_and_a_reboot_clears_the_restart_request(tmp_path):
    async with node_lab(tmp_path) as lab:
        lab.lab.nodes = lab.host  # what the lab gives its nodes: the host, for a guest's own reboot
        assert await lab.sh(f"cat {packages.AUTO_UPGRADES}") == (packages.AUTO_UPGRADES_TEXT, "", 0)
        out, _, status = await lab.sh("apt list --upgradable 2>/dev/null")
        assert status == 0 and out.startswith("Listing...\n")
        assert "systemd/jammy-updates,jammy-security 249.11-0ubuntu3.16 amd64 [upgradable from: " \
               "249.11-0ubuntu3.12]" in out and len(out.splitlines()) == 1 + len(packages.UPDATES)
        assert (await lab.sh("test -f /var/run/reboot-required"))[2] == 1
        assert "are you root?" in (await lab.sh("apt-get upgrade -y"))[1]
        out, _, status = await lab.sh("sudo apt-get upgrade -y")
        assert status == 0 and f"{len(packages.UPDATES)} upgraded, 0 newly installed" in out
        assert "Unpacking systemd (249.11-0ubuntu3.16) over (249.11-0ubuntu3.12) ..." in out
        assert await lab.sh("cat /var/run/reboot-required.pkgs") == ("systemd\n", "", 0)
        assert await lab.sh("apt list --upgradable 2>/dev/null") == ("Listing...\n", "", 0)
        assert "0 upgraded" in (await lab.sh("sudo apt-get upgrade -y"))[0]

        boot_id = (await lab.sh("cat /proc/sys/kernel/random/boot_id"))[0]
        assert "Interactive authentication required" in (await lab.sh("reboot"))[1]
        assert (await lab.sh("sudo reboot"))[2] == 0

        async def answers() -> bool:
            try:
                return (await lab.sh("cat /proc/sys/kernel/random/boot_id"))[0] not in ("", boot_id)
            except (OSError, asyncssh.Error):
                return False

        for _ in range(200):
            if await answers():
                break
            await asyncio.sleep(0.05)
        assert await answers()
        assert (await lab.sh("test -f /var/run/reboot-required"))[2] == 1
        assert await lab.sh("dpkg-query -W --showformat='${Version}' systemd") == ("249.11-0ubuntu3.16", "", 0)
