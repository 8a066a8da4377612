"""vssflow: a plugin framework for video-conditioned sound and speech generation with flow matching.

Subpackages: `vssflow.core` (engine), `vssflow.registry` (plugins, recipes), `vssflow.plugins` (built-ins).
"""

from __future__ import annotations

__version__ = "0.1.0"
