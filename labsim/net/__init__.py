"""The twin's cluster network on loopback: the address plan (cidrs), the kube-proxy and CoreDNS.

Pod IPs and ClusterIPs are 127.0.0.0/8 addresses (the sim lab's k3s runs with cluster-cidr
127.42.0.0/16 and service-cidr 127.43.0.0/16), so this machine can bind them without setup:
Linux answers on every 127.x address.
"""
