"""The embedded lab's Kubernetes: object store, API server, clusters (controllers in ``controllers``)."""
