"""The local cluster: an API server, GPU nodes, a kubelet and Prometheus.

Real Kubernetes clients (kubectl, helm, kopf, the kubernetes Python client) talk
to it over HTTP with a kubeconfig. It exists because no kube-apiserver, kind or
k3s can be installed where Trireme is developed and tested, and so that users can
try Trireme on a laptop. Trireme's product packages never import it.
"""
