"""TensorFlow event messages (a wire-compatible subset) read by the tfevent collector."""

from . import katib_tfevent_pb2

__all__ = ["katib_tfevent_pb2"]
