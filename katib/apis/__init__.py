"""Generated wire contract (gRPC stubs); regenerate with scripts/generate_stubs.py."""
