"""varfx: variant-effect prediction with chromatin-feature CNNs, served over gRPC.

Subpackages: ``varfx.client`` (Python client, ``varfx score``), ``varfx.server``
(``varfx serve``), ``varfx.training`` (``varfx simulate`` / ``train`` / ``export``),
``varfx.proto`` (generated API code).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("varfx")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
