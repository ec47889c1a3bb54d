"""Managed folders: a directory of files inside (or referenced by) the project."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO

from ..errors import LabelloopError, NotFoundError


class UnsafePathError(LabelloopError):
    """A path that would leave its managed folder."""


class Folder:
    """A managed folder: files addressed by paths relative to the folder's root."""

    def __init__(self, name: str, root: Path):
        self.name = name
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Folder({self.name!r}, {str(self.root)!r})"

    @property
    def path(self) -> Path:
        return self.root

    def resolve(self, rel: str) -> Path:
        """The absolute path of `rel`; refuses absolute paths, `..` and links leaving the folder."""
        if not isinstance(rel, str) or not rel or "\x00" in rel:
            raise UnsafePathError(f"invalid path {rel!r} in folder {self.name!r}")
        pure = PurePosixPath(rel.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts:
            raise UnsafePathError(
                f"path {rel!r} escapes folder {self.name!r}: use a path relative to the folder, "
                "without '..'"
            )
        target = (self.root / Path(*pure.parts)).resolve()
        root = self.root.resolve()
        if target != root and root not in target.parents:
            raise UnsafePathError(f"path {rel!r} escapes folder {self.name!r} through a link")
        return target

    def list(self, pattern: str = "**/*") -> list[str]:
        """Relative posix paths of the files in the folder, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.glob(pattern)
                      if p.is_file() and not p.name.startswith("."))

    def exists(self, rel: str) -> bool:
        return self.resolve(rel).is_file()

    def read_bytes(self, rel: str) -> bytes:
        target = self.resolve(rel)
        if not target.is_file():
            raise NotFoundError(f"no file {rel!r} in folder {self.name!r}")
        return target.read_bytes()

    def write_bytes(self, rel: str, data: bytes) -> Path:
        target = self.resolve(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
        return target

    def open(self, rel: str, mode: str = "rb") -> IO:
        target = self.resolve(rel)
        if any(m in mode for m in "wax"):
            target.parent.mkdir(parents=True, exist_ok=True)
        return open(target, mode)

    def delete(self, rel: str) -> None:
        self.resolve(rel).unlink(missing_ok=True)

    def import_dir(self, source: str | Path, pattern: str = "**/*",
                   on_file: Callable[[Path], None] | None = None) -> int:
        """Copy the files of `source` (keeping sub-directories) into the folder.

        `on_file(path)` is called after each file is copied (progress)."""
        source = Path(source)
        if not source.is_dir():
            raise NotFoundError(f"no such directory: {source}")
        n = 0
        for p in sorted(source.glob(pattern)):
            if p.is_file():
                target = self.resolve(p.relative_to(source).as_posix())
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, target)
                n += 1
                if on_file is not None:
                    on_file(p)
        return n
