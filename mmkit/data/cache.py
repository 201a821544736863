"""The build cache shared by the embedded build and users' media: where it lives, how a cached
entry is verified, how bundle files are linked from it.

Both builders (:mod:`mmkit.data.embedded.build`, :mod:`mmkit.data.user.media`) keep one folder per
rendered item with an ``ok.json`` listing the SHA-256 of each file; an entry counts only when every
listed file is there with its recorded digest (a killed build leaves no half-entry that is reused).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mmkit.core.io import atomic_write, sha256_file
from mmkit.vocab import SPLITS

__all__ = ["default_cache_dir", "verify_entry", "bundle_is_current", "link_or_copy"]


def default_cache_dir() -> Path:
    """``$MMKIT_CACHE`` or ``./.cache/mmkit`` (git-ignored)."""
    return Path(os.environ.get("MMKIT_CACHE", Path.cwd() / ".cache" / "mmkit"))


def verify_entry(entry_dir: Path) -> bool:
    """True when ``ok.json`` exists and every file it lists has the recorded SHA-256."""
    ok = entry_dir / "ok.json"
    if not ok.is_file():
        return False
    try:
        recorded = json.loads(ok.read_text())["files"]
        return all((entry_dir / name).is_file() and sha256_file(entry_dir / name) == digest
                   for name, digest in recorded.items())
    except (json.JSONDecodeError, KeyError, TypeError, OSError):
        return False


def bundle_is_current(root: Path, key: str) -> bool:
    """True when the bundle at ``root`` was assembled from ``key``'s inputs and its split files are intact."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        sums = manifest["sha256"]
        return (manifest.get("build_key") == key and set(sums) >= {f"{s}.npz" for s in SPLITS}
                and all(sha256_file(root / name) == digest for name, digest in sums.items()))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content, atomically (a hard link, or an atomic copy)."""
    if dst.exists():
        try:
            if os.path.samefile(src, dst) or sha256_file(dst) == sha256_file(src):
                return
        except OSError:
            pass
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        if tmp.exists():
            tmp.unlink()
        with open(src, "rb") as fh_in:
            atomic_write(dst, lambda fh: shutil.copyfileobj(fh_in, fh))
