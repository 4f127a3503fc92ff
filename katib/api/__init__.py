"""The data model: Experiment and Trial specs, YAML loading, defaults and validation (no I/O)."""
