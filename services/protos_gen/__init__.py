"""Generated from protos/taps/v1/taps.proto by services/gen_protos.py: do not edit, regenerate."""
