"""labsim's nodes: each running VM as an SSH server (asyncssh) over a modelled Ubuntu 22.04
cloud image, whose shell answers from a registry of commands that other modules extend.

``host`` (NodeHost: the SSH servers), ``model`` (NodeModel: files, permissions, services,
journal), ``image`` (what the cloud image holds and reports), ``syntax`` and ``shell`` (command
lines), ``coreutils`` and ``system`` (the base programs), ``sftp``, ``faults``, ``registry``.
"""
