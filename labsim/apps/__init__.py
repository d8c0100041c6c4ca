"""What runs inside the pods of charts whose software does not run here: one module per app, a
controller that acts only while a Ready pod of its Deployment runs (as the real one, whose pod
it is), reading its settings from that pod's spec (environment, arguments). ``APPS`` is what a
cluster runs beside its own controllers (labsim.kube.cluster)."""

from __future__ import annotations

from labsim.apps import metallb, nfs_provisioner

APPS = [nfs_provisioner.NfsProvisioner, metallb.MetalLBController]
