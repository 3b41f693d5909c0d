"""varfx.proto: generated protobuf/gRPC code for the varfx.v1 API.

The source of truth is ``proto/varfx/v1/varfx.proto``; regenerate with ``scripts/gen_proto.py``.
"""

from varfx.proto.v1 import varfx_pb2, varfx_pb2_grpc

__all__ = ["varfx_pb2", "varfx_pb2_grpc"]
