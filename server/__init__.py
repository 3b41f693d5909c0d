"""varfx.server: the varfx gRPC scoring service (``varfx serve``)."""

__all__: list[str] = []
