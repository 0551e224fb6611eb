"""provisioner: declarative provisioning of procurement encryption key pairs (bi-clés)."""

__version__ = "0.1.0"
