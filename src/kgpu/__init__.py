"""kgpu: GPU inference platform with Kubernetes-style resources."""

__version__ = "0.1.0"
API_VERSION = "kgpu.dev/v1alpha1"
