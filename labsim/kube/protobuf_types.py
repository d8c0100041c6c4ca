"""Field numbers of the Kubernetes protobuf messages labsim decodes (what kubectl's typed clients
and helm send as application/vnd.kubernetes.protobuf).

One line per message: ``Message: number name type; ...``. A type is a scalar (``string``,
``int``, ``bool``, ``bytes``), a special (``time``, ``quantity``, ``intstr``, ``fields``
FieldsV1; ``ignored``: skipped, as the API server resets the status of what it creates;
``unsupported``: labsim does not decode it), another message, ``map<V>`` (string keys)
or ``[T]`` (repeated).
A name ending in ``?`` is a pointer or a field without omitempty: its zero value is kept
(Go writes non-pointer scalars even when zero; JSON would omit them). A name ``-`` inlines the
message's fields into its parent (Go's embedded structs).
"""

from __future__ import annotations

_SPEC = """
TypeMeta: 1 apiVersion string; 2 kind string
ObjectMeta: 1 name string; 2 generateName string; 3 namespace string; 4 selfLink string; 5 uid string; 6 resourceVersion string;
  7 generation int; 8 creationTimestamp time; 9 deletionTimestamp time; 10 deletionGracePeriodSeconds? int;
  11 labels map<string>; 12 annotations map<string>; 13 ownerReferences [OwnerReference];
  14 finalizers [string]; 17 managedFields [ManagedFieldsEntry]
OwnerReference: 1 kind string; 3 name string; 4 uid string; 5 apiVersion string; 6 controller? bool;
  7 blockOwnerDeletion? bool
ManagedFieldsEntry: 1 manager string; 2 operation string; 3 apiVersion string; 4 time time; 6 fieldsType string;
  7 fieldsV1 fields; 8 subresource string
LabelSelector: 1 matchLabels map<string>; 2 matchExpressions [LabelSelectorRequirement]
LabelSelectorRequirement: 1 key string; 2 operator string; 3 values [string]
DeleteOptions: 1 gracePeriodSeconds? int; 2 preconditions Preconditions; 3 orphanDependents? bool;
  4 propagationPolicy? string; 5 dryRun [string]
Preconditions: 1 uid? string; 2 resourceVersion? string

Namespace: 1 metadata ObjectMeta; 2 spec NamespaceSpec; 3 status ignored
NamespaceSpec: 1 finalizers [string]
Secret: 1 metadata ObjectMeta; 2 data map<bytes>; 3 type string; 4 stringData map<string>; 5 immutable? bool
ConfigMap: 1 metadata ObjectMeta; 2 data map<string>; 3 binaryData map<bytes>; 4 immutable? bool
ServiceAccount: 1 metadata ObjectMeta; 2 secrets [ObjectReference]; 3 imagePullSecrets [LocalObjectReference];
  4 automountServiceAccountToken? bool
ObjectReference: 1 kind string; 2 namespace string; 3 name string; 4 uid string; 5 apiVersion string;
  6 resourceVersion string; 7 fieldPath string
LocalObjectReference: 1 name string
TypedLocalObjectReference: 1 apiGroup? string; 2 kind? string; 3 name? string
ResourceQuota: 1 metadata ObjectMeta; 2 spec ResourceQuotaSpec; 3 status ignored
ResourceQuotaSpec: 1 hard map<quantity>; 2 scopes [string]
Service: 1 metadata ObjectMeta; 2 spec ServiceSpec; 3 status ignored
ServiceSpec: 1 ports [ServicePort]; 2 selector map<string>; 3 clusterIP string; 4 type string; 5 externalIPs [string];
  7 sessionAffinity string; 8 loadBalancerIP string; 9 loadBalancerSourceRanges [string]; 10 externalName string;
  11 externalTrafficPolicy string; 12 healthCheckNodePort int; 13 publishNotReadyAddresses bool;
  17 ipFamilyPolicy? string; 18 clusterIPs [string]; 19 ipFamilies [string];
  20 allocateLoadBalancerNodePorts? bool; 21 loadBalancerClass? string; 22 internalTrafficPolicy? string;
  23 trafficDistribution? string
ServicePort: 1 name string; 2 protocol string; 3 port? int; 4 targetPort intstr; 5 nodePort int; 6 appProtocol? string

Pod: 1 metadata ObjectMeta; 2 spec PodSpec; 3 status ignored
PodTemplateSpec: 1 metadata ObjectMeta; 2 spec PodSpec
PodSpec: 1 volumes [Volume]; 2 containers [Container]; 3 restartPolicy string;
  4 terminationGracePeriodSeconds? int; 5 activeDeadlineSeconds? int; 6 dnsPolicy string; 7 nodeSelector map<string>;
  8 serviceAccountName string; 9 serviceAccount string; 10 nodeName string; 11 hostNetwork bool; 12 hostPID bool;
  13 hostIPC bool; 14 securityContext PodSecurityContext; 15 imagePullSecrets [LocalObjectReference];
  16 hostname string; 17 subdomain string; 18 affinity Affinity; 19 schedulerName string;
  20 initContainers [Container]; 21 automountServiceAccountToken? bool; 22 tolerations [Toleration];
  23 hostAliases [HostAlias]; 24 priorityClassName string; 25 priority? int; 27 shareProcessNamespace? bool;
  29 runtimeClassName? string; 30 enableServiceLinks? bool; 31 preemptionPolicy? string;
  33 topologySpreadConstraints [TopologySpreadConstraint]; 35 setHostnameAsFQDN? bool; 37 hostUsers? bool
Affinity: 1 nodeAffinity NodeAffinity; 2 podAffinity PodAffinity; 3 podAntiAffinity PodAffinity
NodeAffinity: 1 requiredDuringSchedulingIgnoredDuringExecution NodeSelector;
  2 preferredDuringSchedulingIgnoredDuringExecution [PreferredSchedulingTerm]
NodeSelector: 1 nodeSelectorTerms [NodeSelectorTerm]
NodeSelectorTerm: 1 matchExpressions [NodeSelectorRequirement]; 2 matchFields [NodeSelectorRequirement]
NodeSelectorRequirement: 1 key? string; 2 operator? string; 3 values [string]
PreferredSchedulingTerm: 1 weight? int; 2 preference NodeSelectorTerm
PodAffinity: 1 requiredDuringSchedulingIgnoredDuringExecution [PodAffinityTerm];
  2 preferredDuringSchedulingIgnoredDuringExecution [WeightedPodAffinityTerm]
PodAffinityTerm: 1 labelSelector LabelSelector; 2 namespaces [string]; 3 topologyKey? string;
  4 namespaceSelector LabelSelector; 5 matchLabelKeys [string]; 6 mismatchLabelKeys [string]
WeightedPodAffinityTerm: 1 weight? int; 2 podAffinityTerm PodAffinityTerm
TopologySpreadConstraint: 1 maxSkew? int; 2 topologyKey? string; 3 whenUnsatisfiable? string;
  4 labelSelector LabelSelector; 5 minDomains? int; 6 nodeAffinityPolicy? string; 7 nodeTaintsPolicy? string;
  8 matchLabelKeys [string]
PodSecurityContext: 1 seLinuxOptions SELinuxOptions; 2 runAsUser? int; 3 runAsNonRoot? bool;
  4 supplementalGroups [int]; 5 fsGroup? int; 6 runAsGroup? int; 7 sysctls [Sysctl]; 8 windowsOptions unsupported;
  9 fsGroupChangePolicy? string; 10 seccompProfile SeccompProfile
SELinuxOptions: 1 user string; 2 role string; 3 type string; 4 level string
Sysctl: 1 name? string; 2 value? string
SeccompProfile: 1 type? string; 2 localhostProfile? string
HostAlias: 1 ip? string; 2 hostnames [string]
Toleration: 1 key string; 2 operator string; 3 value string; 4 effect string; 5 tolerationSeconds? int
Container: 1 name? string; 2 image string; 3 command [string]; 4 args [string]; 5 workingDir string;
  6 ports [ContainerPort]; 7 env [EnvVar]; 8 resources ResourceRequirements; 9 volumeMounts [VolumeMount];
  10 livenessProbe Probe; 11 readinessProbe Probe; 12 lifecycle Lifecycle; 13 terminationMessagePath string;
  14 imagePullPolicy string; 15 securityContext SecurityContext; 16 stdin bool; 17 stdinOnce bool; 18 tty bool;
  19 envFrom [EnvFromSource]; 20 terminationMessagePolicy string; 22 startupProbe Probe;
  24 restartPolicy? string
ContainerPort: 1 name string; 2 hostPort int; 3 containerPort? int; 4 protocol string; 5 hostIP string
EnvVar: 1 name? string; 2 value string; 3 valueFrom EnvVarSource
EnvVarSource: 1 fieldRef ObjectFieldSelector; 2 resourceFieldRef ResourceFieldSelector;
  3 configMapKeyRef KeySelector; 4 secretKeyRef KeySelector
ObjectFieldSelector: 1 apiVersion string; 2 fieldPath? string
ResourceFieldSelector: 1 containerName string; 2 resource? string; 3 divisor quantity
KeySelector: 1 - LocalObjectReference; 2 key? string; 3 optional? bool
EnvFromSource: 1 prefix string; 2 configMapRef RefSource; 3 secretRef RefSource
RefSource: 1 - LocalObjectReference; 2 optional? bool
ResourceRequirements: 1 limits map<quantity>; 2 requests map<quantity>
VolumeMount: 1 name? string; 2 readOnly bool; 3 mountPath? string; 4 subPath string; 5 mountPropagation? string;
  6 subPathExpr string; 7 recursiveReadOnly? string
Probe: 1 - ProbeHandler; 2 initialDelaySeconds int; 3 timeoutSeconds int; 4 periodSeconds int;
  5 successThreshold int; 6 failureThreshold int; 7 terminationGracePeriodSeconds? int
ProbeHandler: 1 exec ExecAction; 2 httpGet HTTPGetAction; 3 tcpSocket TCPSocketAction
Lifecycle: 1 postStart ProbeHandler; 2 preStop ProbeHandler
ExecAction: 1 command [string]
HTTPGetAction: 1 path string; 2 port intstr; 3 host string; 4 scheme string
TCPSocketAction: 1 port intstr; 2 host string
SecurityContext: 1 capabilities Capabilities; 2 privileged? bool; 3 seLinuxOptions SELinuxOptions;
  4 runAsUser? int; 5 runAsNonRoot? bool; 6 readOnlyRootFilesystem? bool; 7 allowPrivilegeEscalation? bool;
  8 runAsGroup? int; 9 procMount? string; 11 seccompProfile SeccompProfile
Capabilities: 1 add [string]; 2 drop [string]
Volume: 1 name? string; 2 - VolumeSource
VolumeSource: 1 hostPath HostPathVolumeSource; 2 emptyDir EmptyDirVolumeSource; 6 secret SecretVolumeSource;
  7 nfs NFSVolumeSource; 10 persistentVolumeClaim PVCVolumeSource; 19 configMap ConfigMapVolumeSource
HostPathVolumeSource: 1 path? string; 2 type? string
EmptyDirVolumeSource: 1 medium string; 2 sizeLimit quantity
SecretVolumeSource: 1 secretName string; 2 items [KeyToPath]; 3 defaultMode? int; 4 optional? bool
ConfigMapVolumeSource: 1 - LocalObjectReference; 2 items [KeyToPath]; 3 defaultMode? int; 4 optional? bool
KeyToPath: 1 key? string; 2 path? string; 3 mode? int
NFSVolumeSource: 1 server? string; 2 path? string; 3 readOnly bool
PVCVolumeSource: 1 claimName? string; 2 readOnly bool

Deployment: 1 metadata ObjectMeta; 2 spec DeploymentSpec; 3 status ignored
DeploymentSpec: 1 replicas? int; 2 selector LabelSelector; 3 template PodTemplateSpec; 4 strategy DeploymentStrategy;
  5 minReadySeconds int; 6 revisionHistoryLimit? int; 7 paused bool; 9 progressDeadlineSeconds? int
DeploymentStrategy: 1 type string; 2 rollingUpdate RollingUpdateDeployment
RollingUpdateDeployment: 1 maxUnavailable intstr; 2 maxSurge intstr
Job: 1 metadata ObjectMeta; 2 spec JobSpec; 3 status ignored
JobSpec: 1 parallelism? int; 2 completions? int; 3 activeDeadlineSeconds? int; 4 selector LabelSelector;
  5 manualSelector? bool; 6 template PodTemplateSpec; 7 backoffLimit? int; 8 ttlSecondsAfterFinished? int;
  9 completionMode? string; 10 suspend? bool; 12 backoffLimitPerIndex? int; 13 maxFailedIndexes? int;
  14 podReplacementPolicy? string; 15 managedBy? string
CronJob: 1 metadata ObjectMeta; 2 spec CronJobSpec; 3 status ignored
CronJobSpec: 1 schedule? string; 2 startingDeadlineSeconds? int; 3 concurrencyPolicy string; 4 suspend? bool;
  5 jobTemplate JobTemplateSpec; 6 successfulJobsHistoryLimit? int; 7 failedJobsHistoryLimit? int;
  8 timeZone? string
JobTemplateSpec: 1 metadata ObjectMeta; 2 spec JobSpec
PodDisruptionBudget: 1 metadata ObjectMeta; 2 spec PodDisruptionBudgetSpec; 3 status ignored
PodDisruptionBudgetSpec: 1 minAvailable intstr; 2 selector LabelSelector; 3 maxUnavailable intstr;
  4 unhealthyPodEvictionPolicy? string
Eviction: 1 metadata ObjectMeta; 2 deleteOptions DeleteOptions
PriorityClass: 1 metadata ObjectMeta; 2 value? int; 3 globalDefault bool; 4 description string;
  5 preemptionPolicy? string

Ingress: 1 metadata ObjectMeta; 2 spec IngressSpec; 3 status ignored
IngressSpec: 1 defaultBackend IngressBackend; 2 tls [IngressTLS]; 3 rules [IngressRule]; 4 ingressClassName? string
IngressTLS: 1 hosts [string]; 2 secretName string
IngressRule: 1 host string; 2 - IngressRuleValue
IngressRuleValue: 1 http HTTPIngressRuleValue
HTTPIngressRuleValue: 1 paths [HTTPIngressPath]
HTTPIngressPath: 1 path string; 2 backend IngressBackend; 3 pathType? string
IngressBackend: 3 resource TypedLocalObjectReference; 4 service IngressServiceBackend
IngressServiceBackend: 1 name? string; 2 port ServiceBackendPort
ServiceBackendPort: 1 name string; 2 number int

Role: 1 metadata ObjectMeta; 2 rules [PolicyRule]
ClusterRole: 1 metadata ObjectMeta; 2 rules [PolicyRule]; 3 aggregationRule AggregationRule
AggregationRule: 1 clusterRoleSelectors [LabelSelector]
PolicyRule: 1 verbs? [string]; 2 apiGroups [string]; 3 resources [string]; 4 resourceNames [string];
  5 nonResourceURLs [string]
RoleBinding: 1 metadata ObjectMeta; 2 subjects [Subject]; 3 roleRef RoleRef
ClusterRoleBinding: 1 metadata ObjectMeta; 2 subjects [Subject]; 3 roleRef RoleRef
Subject: 1 kind? string; 2 apiGroup string; 3 name? string; 4 namespace string
RoleRef: 1 apiGroup? string; 2 kind? string; 3 name? string

SelfSubjectAccessReview: 1 metadata ObjectMeta; 2 spec SelfSubjectAccessReviewSpec; 3 status ignored
SelfSubjectAccessReviewSpec: 1 resourceAttributes ResourceAttributes; 2 nonResourceAttributes NonResourceAttributes
ResourceAttributes: 1 namespace string; 2 verb string; 3 group string; 4 version string; 5 resource string;
  6 subresource string; 7 name string
NonResourceAttributes: 1 path string; 2 verb string
SubjectAccessReview: 1 metadata ObjectMeta; 2 spec SubjectAccessReviewSpec; 3 status ignored
LocalSubjectAccessReview: 1 metadata ObjectMeta; 2 spec SubjectAccessReviewSpec; 3 status ignored
SubjectAccessReviewSpec: 1 resourceAttributes ResourceAttributes; 2 nonResourceAttributes NonResourceAttributes;
  3 user string; 4 groups [string]; 6 uid string
TokenReview: 1 metadata ObjectMeta; 2 spec TokenReviewSpec; 3 status ignored
TokenReviewSpec: 1 token string; 2 audiences [string]
SelfSubjectRulesReview: 1 metadata ObjectMeta; 2 spec SelfSubjectRulesReviewSpec; 3 status ignored
SelfSubjectRulesReviewSpec: 1 namespace string
SelfSubjectReview: 1 metadata ObjectMeta; 2 status ignored
TokenRequest: 1 metadata ObjectMeta; 2 spec TokenRequestSpec; 3 status ignored
TokenRequestSpec: 1 audiences [string]; 3 boundObjectRef BoundObjectReference; 4 expirationSeconds? int
BoundObjectReference: 1 kind string; 2 apiVersion string; 3 name string; 4 uid string
"""


class Field:
    __slots__ = ("name", "type", "repeated", "keep_zero")

    def __init__(self, name: str, type_: str, repeated: bool, keep_zero: bool) -> None:
        self.name, self.type, self.repeated, self.keep_zero = name, type_, repeated, keep_zero


def _parse(spec: str) -> dict[str, dict[int, Field]]:
    messages: dict[str, dict[int, Field]] = {}
    text = spec.replace("\n  ", " ")
    for line in text.strip().splitlines():
        if not line.strip():
            continue
        name, _, body = line.partition(":")
        fields = {}
        for entry in body.split(";"):
            number, field, type_ = entry.split()
            repeated = type_.startswith("[")
            keep = field.endswith("?")
            fields[int(number)] = Field(field.rstrip("?"), type_.strip("[]"), repeated, keep)
        messages[name.strip()] = fields
    return messages


MESSAGES = _parse(_SPEC)
