from kube.fixtures import kube_api  # noqa: F401  (the Kubernetes API emulator fixture)
