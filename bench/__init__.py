"""varfx benchmarks (not tests): ``python -m bench.run`` measures bare ONNX Runtime, the varfx
server, ``varfx score`` and a torch-eager peer side by side; see docs/benchmarks.md."""

__all__: list[str] = []
