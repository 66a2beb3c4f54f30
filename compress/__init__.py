"""Compression methods that produce deployable subnets (see the open issues)."""

__all__: list[str] = []
