"""labsim: the embedded lab, a loopback twin of the home lab that speaks the real protocols.

Proxmox VE API (HTTPS), SSH nodes, the Kubernetes API and the apps, all on 127.0.0.0/8.
labsim never imports labkit: the two meet only on the wire.
"""

__version__ = "0.1.0"
