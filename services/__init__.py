"""TAPS serving: Ray Serve drafter/verifier/router deployments, the gRPC protocol's Python code, the assignment
cache and the serving config. The engine (taps_engine) knows nothing of this package."""
