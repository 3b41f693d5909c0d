"""varfx.training: simulated data, training data pipeline, CNNs, training loop and ONNX export.

Heavy modules (torch, onnx) are imported from their submodules: ``varfx.training.models``,
``.train``, ``.export``, ``.evaluate``; ``.peaks`` and ``.dataset`` need numpy and pysam only.
"""

from varfx.training.errors import DataError, ExportError, ParityError, TrainingError

__all__ = ["DataError", "ExportError", "ParityError", "TrainingError"]
