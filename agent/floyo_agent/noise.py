"""The noise filter: skips version control, caches, virtual environments, editor swap and temporary files."""

import fnmatch
import os

DEFAULT_IGNORE_PATTERNS = (
    # Version control and the caches of tools.
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
    ".tox",
    ".idea",
    # Virtual environments by their usual names. Others are found by their pyvenv.cfg.
    ".venv",
    "venv",
    "env",
    # Swap, backup, lock and temporary files of editors and office programs. Vim writes and deletes
    # a file named 4913 to test whether it may create files in a folder.
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "4913",
    "*.tmp",
    "~$*",
    ".DS_Store",
)


class NoiseFilter:
    """Decides whether a path below one of the watched folders is noise.

    A pattern without a slash is matched against each name along the path below the watched folder,
    the folders and the file alike, as in .gitignore. A pattern with a slash is anchored at the
    watched folder: it is matched against the relative path ("/" as separator) of the file and of
    each folder above it, so "build" matches "build/x.o" and "docs/*.md" matches "docs/a.md".
    Matching is case-sensitive. A folder that contains pyvenv.cfg is a virtual environment whatever
    its name, and everything in it is noise.
    """

    def __init__(self, roots, patterns=DEFAULT_IGNORE_PATTERNS):
        # The longest root first, so that a path is taken relative to the innermost watched folder.
        self.roots = sorted((os.path.normpath(root) for root in roots), key=len, reverse=True)
        self.name_patterns = [pattern for pattern in patterns if "/" not in pattern]
        self.path_patterns = [pattern.strip("/") for pattern in patterns if "/" in pattern]
        self._virtualenvs = set()

    def is_ignored(self, path):
        """Return True when the path is noise and its events should not be sent."""
        root, names = self._split(path)
        for name in names:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.name_patterns):
                return True
        for depth in range(1, len(names) + 1):
            relative = "/".join(names[:depth])
            if any(fnmatch.fnmatchcase(relative, pattern) for pattern in self.path_patterns):
                return True
        return root is not None and self._inside_virtualenv(root, names[:-1])

    def _split(self, path):
        """Return the watched folder that contains the path and the names below it."""
        path = os.path.normpath(path)
        for root in self.roots:
            if path.startswith(root + os.sep):
                return root, path[len(root) + 1 :].split(os.sep)
        return None, [os.path.basename(path)]

    def _inside_virtualenv(self, root, folder_names):
        folder = root
        for name in folder_names:
            folder = os.path.join(folder, name)
            if folder in self._virtualenvs:
                return True
            if os.path.isfile(os.path.join(folder, "pyvenv.cfg")):
                # Remembered, so that the files of a virtual environment being deleted stay noise
                # after its pyvenv.cfg is gone.
                self._virtualenvs.add(folder)
                return True
        return False
