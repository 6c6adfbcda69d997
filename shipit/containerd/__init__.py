"""containerd without Docker (Kubernetes nodes, k3s, nerdctl hosts), driven by ``ctr``
over SSH."""
