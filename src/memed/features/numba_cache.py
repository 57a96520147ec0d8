"""Keep numba's on-disk cache honest when the kernel changes.

numba keys each cached function on its *own* module's source file. ``batch.py`` and ``stream.py`` compile
the kernel's ``advance`` into their loops, so after an edit of ``kernel.py``, ``layout.py`` or ``spec.py``
(output columns, state offsets) their cached machine code is stale — and numba would load it, writing
features into the wrong columns. Before anything compiles, :func:`invalidate_if_changed` compares a
digest of those three sources with the one recorded beside the cache and, when they differ, removes the
package's cached kernels (they are rebuilt on first use).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_HERE = Path(__file__).resolve().parent
SOURCES = ("kernel.py", "layout.py", "spec.py")


def kernel_digest(folder: Path = _HERE) -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:16]


def invalidate_if_changed(folder: Path = _HERE) -> bool:
    """Remove this package's numba cache files if the kernel's sources changed since they were written;
    whether it did. A read-only install (no writable cache folder) is left alone."""
    cache = folder / "__pycache__"
    stamp = cache / f"kernel-{kernel_digest(folder)}.stamp"
    if stamp.exists() or not cache.is_dir():
        return False
    try:
        for path in [*cache.glob("*.nbi"), *cache.glob("*.nbc"), *cache.glob("kernel-*.stamp")]:
            path.unlink()
        stamp.touch()
    except OSError:
        return False
    return True
