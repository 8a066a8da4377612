"""vssflow.plugins: built-in components, registered through the same hooks a third-party plugin uses.

Each kind lives in its own subpackage exposing `register(register)`; `builtin.py` holds the hookimpls.
Heavy imports (timm, diffusers, av, espeak) stay inside factories so the CLI starts fast.
"""
