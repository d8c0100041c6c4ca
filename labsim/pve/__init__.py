"""The embedded lab's Proxmox VE: the hypervisor model and its HTTPS API."""
