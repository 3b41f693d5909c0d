"""varfx.client: Python client for the varfx gRPC service and the ``varfx score`` command."""

__all__: list[str] = []
