"""The service's generated messages and stub (python/generate.sh writes this package)."""
