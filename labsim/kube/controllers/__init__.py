"""The controllers that move a cluster forward, as kube-controller-manager, kube-scheduler, the
kubelets and k3s' own controllers do. A Cluster runs each entry of ``CONTROLLERS`` as a task
while its API is up: ``await run(cluster)`` until cancelled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from labsim.apps.cert_manager import CertManager
from labsim.kube.controllers.clusterroles import ClusterRoleAggregationController
from labsim.kube.controllers.cronjob import CronJobController
from labsim.kube.controllers.daemonset import DaemonSetController
from labsim.kube.controllers.deployment import DeploymentController
from labsim.kube.controllers.disruption import DisruptionController
from labsim.kube.controllers.garbage import GarbageCollector
from labsim.kube.controllers.helmchart import HelmChartController
from labsim.kube.controllers.ingress import IngressStatusController
from labsim.kube.controllers.job import JobController
from labsim.kube.controllers.kubelet import Kubelet
from labsim.kube.controllers.namespace import NamespaceController
from labsim.kube.controllers.nodelifecycle import NodeLifecycleController
from labsim.kube.controllers.pvc import VolumeController
from labsim.kube.controllers.replicaset import ReplicaSetController
from labsim.kube.controllers.resourcequota import ResourceQuotaController
from labsim.kube.controllers.scheduler import Scheduler
from labsim.kube.controllers.service import ServiceController
from labsim.kube.controllers.serviceaccount import ServiceAccountController
from labsim.kube.controllers.statefulset import StatefulSetController
from labsim.kube.controllers.tokens import TokenController
from labsim.kube.controllers.workqueue import Controller

_KINDS: tuple[type[Controller], ...] = (
    Scheduler,
    Kubelet,
    ReplicaSetController,
    DeploymentController,
    ServiceController,
    StatefulSetController,
    VolumeController,
    DaemonSetController,
    JobController,
    CronJobController,
    NodeLifecycleController,
    DisruptionController,
    NamespaceController,
    GarbageCollector,
    ServiceAccountController,
    TokenController,
    ClusterRoleAggregationController,
    ResourceQuotaController,
    HelmChartController,
    IngressStatusController,
    CertManager,
)


def run_controller(kind: type[Controller]) -> Callable[[Any], Awaitable[None]]:
    async def run(cluster: Any) -> None:
        await kind(cluster).run()

    run.__name__ = run.__qualname__ = kind.name
    return run


CONTROLLERS: list[Callable[[Any], Awaitable[None]]] = [run_controller(kind) for kind in _KINDS]
