"""What the cluster's DNS answers, read from the API objects at query time (CoreDNS' kubernetes
and hosts plugins, as k3s configures them):

- ``<svc>.<ns>.svc.cluster.local`` A: the ClusterIP; for a headless Service the ready endpoints'
  addresses (all of them with publishNotReadyAddresses); an ExternalName Service is a CNAME;
- ``<hostname>.<svc>.<ns>.svc.cluster.local`` A: a headless Service's endpoint with a hostname
  (StatefulSet pods);
- ``_<port>._<proto>.<svc>.<ns>.svc.cluster.local`` SRV: the named port, towards the Service name
  (or each endpoint of a headless one), the targets' A records in the additional section;
- ``a-b-c-d.<ns>.pod.cluster.local`` A: a pod IP (``pods insecure``);
- the node names listed in the ``coredns`` ConfigMap's NodeHosts (``hosts`` plugin, TTL 60);
- NXDOMAIN for anything else (the embedded lab forwards nothing to the host's resolvers); a name
  that exists with no record of the type asked is NOERROR with no answer.
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from labsim.net.kubeproxy import SERVICE_NAME

DOMAIN = dns.name.from_text("cluster.local.")
TTL = 5  # CoreDNS kubernetes plugin default
HOSTS_TTL = 60  # k3s' Corefile: hosts /etc/coredns/NodeHosts { ttl 60 }
SYSTEM = "kube-system"


class ClusterZone:
    def __init__(self, store) -> None:
        self.store = store
        self.services = store.resource("v1", "Service")
        self.slices = store.resource("discovery.k8s.io/v1", "EndpointSlice")
        self.pods = store.resource("v1", "Pod")
        self.configmaps = store.resource("v1", "ConfigMap")

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        records = self._records(name)
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa())
            return response
        answers = [r for r in records if r.rdtype in (rdtype, dns.rdatatype.CNAME)]
        if rdtype == dns.rdatatype.ANY:
            answers = records
        response.answer.extend(answers)
        if not answers:
            response.authority.append(self._soa())
        for rrset in answers:
            if rrset.rdtype == dns.rdatatype.SRV:
                for srv in rrset:
                    response.additional.extend(r for r in self._records(srv.target) or []
                                               if r.rdtype == dns.rdatatype.A)
        return response

    # -- names ------------------------------------------------------------------------------------
    def _records(self, name: dns.name.Name) -> list[dns.rrset.RRset] | None:
        """Every record set of ``name``; None when the name does not exist."""
        hosts = self._node_hosts().get(name.to_text(omit_final_dot=True).lower())
        if hosts:
            return [_rrset(name, dns.rdatatype.A, hosts, HOSTS_TTL)]
        if not name.is_subdomain(DOMAIN):
            return None
        labels = [label.decode().lower() for label in name.relativize(DOMAIN).labels]
        if len(labels) >= 3 and labels[-1] == "svc":
            return self._service_records(name, labels[:-1])
        if len(labels) == 3 and labels[-1] == "pod":
            return self._pod_records(name, labels[0], labels[1])
        if len(labels) <= 2 and labels[-1:] in ([], ["svc"], ["pod"]):
            return []  # the zone, svc, pod and namespace levels exist, with no records of their own
        return None

    def _service_records(self, name: dns.name.Name, labels: list[str]) -> list[dns.rrset.RRset] | None:
        if len(labels) == 4 and labels[0].startswith("_") and labels[1].startswith("_"):
            return self._srv_records(name, labels[0][1:], labels[1][1:].upper(), labels[2], labels[3])
        if len(labels) == 3:  # hostname.svc.ns
            svc = self._service(labels[2], labels[1])
            addresses = [ep["addresses"][0] for ep in self._endpoints(svc)
                         if labels[0] in (ep.get("hostname"), ep["addresses"][0].replace(".", "-"))]
            return [_rrset(name, dns.rdatatype.A, addresses)] if svc and addresses else None
        if len(labels) != 2:
            return None
        svc = self._service(labels[1], labels[0])
        if svc is None:
            return None
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            return [_rrset(name, dns.rdatatype.CNAME, [spec["externalName"].rstrip(".") + "."])]
        if spec.get("clusterIP") == "None":
            addresses = sorted({a for ep in self._endpoints(svc) for a in ep.get("addresses") or []})
            return [_rrset(name, dns.rdatatype.A, addresses)] if addresses else []
        return [_rrset(name, dns.rdatatype.A, [ip for ip in spec.get("clusterIPs") or [spec["clusterIP"]]])]

    def _srv_records(self, name: dns.name.Name, port_name: str, protocol: str, svc_name: str,
                     namespace: str) -> list[dns.rrset.RRset] | None:
        svc = self._service(namespace, svc_name)
        ports = [p for p in ((svc or {}).get("spec") or {}).get("ports") or []
                 if p.get("name") == port_name and p.get("protocol", "TCP") == protocol]
        if not ports:
            return None
        base = f"{svc_name}.{namespace}.svc.{DOMAIN}"
        if svc["spec"].get("clusterIP") != "None":
            return [_rrset(name, dns.rdatatype.SRV, [f"0 100 {ports[0]['port']} {base}"])]
        endpoints = self._endpoints(svc)
        port = next((p["port"] for s in self._slices(svc) for p in s.get("ports") or []
                     if p.get("name", "") == port_name), ports[0]["port"])
        targets = [f"0 {100 // len(endpoints)} {port} "
                   f"{ep.get('hostname') or ep['addresses'][0].replace('.', '-')}.{base}" for ep in endpoints]
        return [_rrset(name, dns.rdatatype.SRV, targets)] if targets else []

    def _pod_records(self, name: dns.name.Name, dashed: str, namespace: str) -> list[dns.rrset.RRset] | None:
        ip = dashed.replace("-", ".")
        for pod in self.store.list(self.pods, namespace):
            if (pod.get("status") or {}).get("podIP") == ip:
                return [_rrset(name, dns.rdatatype.A, [ip])]
        return None

    # -- objects ----------------------------------------------------------------------------------
    def _service(self, namespace: str, name: str) -> dict | None:
        return self.store.get(self.services, namespace, name)

    def _slices(self, svc: dict) -> list[dict]:
        meta = svc["metadata"]
        return self.store.list(self.slices, meta["namespace"], labels={SERVICE_NAME: meta["name"]})

    def _endpoints(self, svc: dict | None) -> list[dict]:
        """The endpoints DNS publishes: ready ones, or all with publishNotReadyAddresses."""
        if svc is None:
            return []
        publish_all = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
        return [ep for s in self._slices(svc) for ep in s.get("endpoints") or []
                if ep.get("addresses") and (publish_all or (ep.get("conditions") or {}).get("ready") is not False)]

    def _node_hosts(self) -> dict[str, list[str]]:
        config = self.store.get(self.configmaps, SYSTEM, "coredns") or {}
        hosts: dict[str, list[str]] = {}
        for line in (config.get("data") or {}).get("NodeHosts", "").splitlines():
            ip, *names = line.split()
            for host in names:
                hosts.setdefault(host.lower(), []).append(ip)
        return hosts

    def _soa(self) -> dns.rrset.RRset:
        return _rrset(DOMAIN, dns.rdatatype.SOA, [
            "ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"], TTL)


def _rrset(name: dns.name.Name | str, rdtype: dns.rdatatype.RdataType, values: list[str],
           ttl: int = TTL) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(name, ttl, dns.rdataclass.IN, rdtype, values)
