"""The Kubernetes backend: manifests rendered from kgpu resources, and the operator that applies them."""
