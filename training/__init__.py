"""varfx.training: simulated data, training data pipeline, CNNs, training loop and ONNX export."""

__all__: list[str] = []
