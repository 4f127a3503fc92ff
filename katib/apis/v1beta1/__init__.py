"""Stubs for the api.v1.beta1 package, wire-compatible with Katib."""

from . import api_pb2, api_pb2_grpc

__all__ = ["api_pb2", "api_pb2_grpc"]
