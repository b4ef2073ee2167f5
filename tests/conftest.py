from k8s_emulator.fixtures import kube_api  # noqa: F401  (the Kubernetes API emulator fixture)
