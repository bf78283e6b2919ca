"""Runs inside the kernel: records what the notebook reads, for the cache key's ``reads`` part.

Standard library only, no import of the package: its source is sent into the kernel
at start.  The host imports it for :class:`Rules` and :func:`listing_digest`, so that
a listing is digested the same way on both sides.

What is recorded, for the whole run: every file opened for reading (``open``,
``io.open``, ``os.open`` with read flags, ``sqlite3.connect``; ``pathlib``,
``pandas.read_csv``, ``numpy.load``... go through them), every file it tried to
read and did not find, every folder listed (``os.listdir``, ``os.scandir``, so
``glob``, ``os.walk`` and ``Path.iterdir``), and at the end every module whose
file lies outside the interpreter (``sys.modules[...].__file__``).  Files the run
wrote before reading them are its products, not inputs; writes, renames and removals
are noted for that, and so that a listing the run changed is not taken for one that
changed under it.

Why wrappers and not a PEP 578 audit hook: an audit hook is called for every
audited event, and ``copy.deepcopy`` raises one per object (``builtins.id``),
unpickling one per class (``pickle.find_class``).  Measured by
``benchmarks/reads_bench.py``: a hook that returns at once for other events
makes a deepcopy-and-pickle loop 1.6-2.2x slower; the wrappers cost nothing
there, and some microseconds the first time a file is opened.  Their limit: a
library that kept its own reference to ``open`` before the recorder started
calls the original.  The known ones are re-pointed (:data:`KEPT_REFERENCES`,
IPython's among them: a cell's ``open`` is its own); a scan of every module's
globals would find the rest, but costs 3-12 ms per kernel with pandas loaded.

The import system's own reads are not inputs: it opens and lists through ``_io``
and ``posix`` directly, which are left alone, and a read whose nearest caller
(past ``pathlib``, ``io``, ``os``...) is ``importlib``, ``pkgutil``,
``linecache`` and the like is left out, as are files and listings under
``site-packages``, the standard library, the temp folder, ``/proc``, ``/dev``,
the user's cache and config folders, the kernel's connection file and the
host's exclusions (the output folder).  Folders the host names as roots (the
notebook's, the run's) count even when they lie in the temp folder.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import io
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: The payload's layout version.
PAYLOAD_VERSION = 1
#: Where libraries keep their own reference to ``open``, taken before the recorder
#: started: ``(module, attribute)``, ``[None]`` naming a dict's item.
KEPT_REFERENCES = (
    ("IPython.core.interactiveshell", "io_open"),  # the cells' own ``open``
    ("bz2", "_builtin_open"),
    ("lzma", "_builtin_open"),
    ("tarfile", "bltn_open"),
    ("numpy.lib._datasource", "_file_openers._file_openers[None]"),  # np.loadtxt
)
#: Modules whose calls are followed up to their caller when deciding who reads.
_PLUMBING = frozenset(
    {"pathlib", "io", "_io", "codecs", "os", "posixpath", "ntpath", "genericpath", "glob"}
    | {"fnmatch", "shutil", "contextlib", "functools", "gzip", "bz2", "lzma", "zipfile"}
    | {"configparser", "tomllib", "json", "csv", "pickle", "shelve", "dbm", "sqlite3"}
)
#: Callers whose reads are the interpreter's own business, not the notebook's.
_MACHINERY = (
    "importlib._", "importlib.metadata", "importlib.util", "importlib.machinery",
    "importlib_metadata", "pkgutil", "pkg_resources", "zipimport", "site", "sysconfig",
    "linecache", "tokenize", "setuptools", "_distutils_hack", "distutils", "traceback",
    "coverage.",  # a measured kernel's own data file and configuration: never the notebook's
)  # fmt: skip
#: Shutil's tree removal lists folders to delete them: not a read.
_REMOVING = frozenset({"rmtree", "_rmtree_safe_fd", "_rmtree_unsafe", "_rmtree_isdir"})
_SYSTEM = ("/proc", "/sys", "/dev", "/run", "/etc", "/usr", "/var/run", "/var/cache")
_HOME_NOISE = (
    ".cache", ".config/matplotlib", ".matplotlib", ".ipython", ".jupyter", ".local/share/jupyter"
)  # fmt: skip
_ENV_NOISE = (
    "MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
    "XDG_CACHE_HOME", "TMPDIR",
)  # fmt: skip


_SITE, _DIST = f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}"
#: The calls that change what is on disk, or the working folder.
_CHANGES = ("remove", "unlink", "rmdir", "mkdir", "rename", "replace", "chdir", "fchdir")


def _folder(path: str) -> str:
    """``path`` made absolute, with a trailing separator, for prefix tests."""
    return os.path.join(os.path.abspath(os.path.expanduser(path)), "")


def _both(paths: Iterable[str]) -> tuple[str, ...]:
    """Each folder as given and with its links resolved (``/tmp`` may be ``/private/tmp``)."""
    found: dict[str, None] = {}
    for path in paths:
        if path:
            found[_folder(path)] = None
            found[_folder(os.path.realpath(path))] = None
    return tuple(found)


class Rules:
    """Which paths are the notebook's inputs, and which names of a listing count.

    ``settings`` (from the host, JSON): ``roots`` (folders that count even under
    the temp folder), ``exclude`` (folders or files that never count: the output
    folder, the kernel's connection file) and ``ignore`` (regular expressions of
    absolute paths, the user's ``--millrun-cache-ignore`` globs).
    """

    def __init__(self, settings: Mapping[str, Any], *, environment: bool = True) -> None:
        self.roots = _both(settings.get("roots", ()))
        self.excluded = _both(settings.get("exclude", ()))
        self.ignore = tuple(re.compile(pattern) for pattern in settings.get("ignore", ()))
        self.interpreter: tuple[str, ...] = ()
        self.outside: tuple[str, ...] = ()
        if environment:
            self.interpreter, self.outside = _environment_folders()

    def counts(self, path: str) -> bool:
        """Whether an absolute ``path`` is an input (before who read it is known)."""
        probe = path + os.sep
        if probe.startswith(self.excluded) or probe.startswith(self.interpreter):
            return False
        if _SITE in probe or _DIST in probe or path.endswith(".pyc"):
            return False
        if self.ignore and any(pattern.fullmatch(path) for pattern in self.ignore):
            return False
        return probe.startswith(self.roots) or not probe.startswith(self.outside)

    def listed(self, folder: str, name: str) -> bool:
        """Whether a name in ``folder``'s listing counts: hidden names and caches do not."""
        if name.startswith(".") or name == "__pycache__":
            return False
        path = os.path.join(folder, name)
        if (path + os.sep).startswith(self.excluded):
            return False
        return not any(pattern.fullmatch(path) for pattern in self.ignore)


def _environment_folders() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The interpreter's folders (never inputs) and the noise folders (unless under a root)."""
    import tempfile

    interpreter = [os.path.dirname(os.__file__)]  # the standard library
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        if len(os.path.abspath(prefix).strip(os.sep).split(os.sep)) >= 2:
            interpreter.append(prefix)  # a venv or an installed Python, never "/usr" alone
    outside = [tempfile.gettempdir(), *_SYSTEM]
    home = os.path.expanduser("~")
    if home not in ("~", os.sep):
        outside += [os.path.join(home, noise) for noise in _HOME_NOISE]
    outside += [os.environ.get(name, "") for name in _ENV_NOISE]
    argv = sys.argv
    for index, arg in enumerate(argv[:-1]):  # ipykernel's ``-f connection-file``
        if arg == "-f":
            interpreter.append(argv[index + 1])
    return _both(interpreter), _both(outside)


def listing_digest(folder: str, rules: Rules, scandir: Callable[[str], Any] = os.scandir) -> str:
    """A digest of a folder's counted names (folders marked ``/``); ``missing`` when it is gone."""
    try:
        names = sorted(_names(folder, rules, scandir))
    except OSError:
        return "missing"
    return hashlib.sha256("\n".join(names).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _names(folder: str, rules: Rules, scandir: Callable[[str], Any]) -> set[str]:
    with scandir(folder) as entries:  # is_dir(): False for an entry removed since
        return {e.name + "/" * e.is_dir() for e in entries if rules.listed(folder, e.name)}


#: The working folder, known until a ``chdir`` forgets it: a ``getcwd`` less per file.
_CWD: list[str] = []


def _path(file: Any) -> str | None:
    """An absolute path for what ``open`` and friends were given; None for a descriptor."""
    if isinstance(file, int):
        return None
    try:
        text = os.fsdecode(os.fspath(file))
    except (TypeError, ValueError):
        return None
    if not os.path.isabs(text):
        if not _CWD:
            _CWD.append(os.getcwd())
        text = os.path.join(_CWD[0], text)
    return os.path.normpath(text)


def _by_machinery() -> bool:
    """Whether the nearest caller past the plumbing (and this recorder) is the import system."""
    own = globals()
    frame: Any = sys._getframe(1)
    for _ in range(24):
        if frame is None:
            return False
        module = frame.f_globals.get("__name__") or ""
        if module == "shutil" and frame.f_code.co_name in _REMOVING:
            return True
        if frame.f_globals is not own and module not in _PLUMBING:
            return module.startswith(_MACHINERY)
        frame = frame.f_back
    return False


class ReadRecorder:
    """The run's reads, writes and listings, gathered by wrappers around the stdlib's calls."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.rules = Rules(settings)
        self.started = time.time_ns()
        self.files: dict[str, tuple[int, int]] = {}
        self.missing: set[str] = set()
        self.listings: dict[str, set[str]] = {}
        self.written: set[str] = set()
        self.removed: set[str] = set()
        self.problem = ""
        self._undo: list[Callable[[], None]] = []
        self._scandir = os.scandir

    # -- what the wrappers report

    def read(self, file: Any, handle: Any) -> None:
        path = _path(file)
        if path is None or path in self.files or path in self.written:
            return
        if not self.rules.counts(path) or _by_machinery():
            return
        try:
            stat = os.fstat(handle if isinstance(handle, int) else handle.fileno())
        except (OSError, AttributeError, ValueError):
            stat = os.stat(path)
        self.files[path] = (stat.st_size, stat.st_mtime_ns)

    def not_found(self, file: Any) -> None:
        path = _path(file)
        if path is None or path in self.written or path in self.files:
            return
        if self.rules.counts(path) and not _by_machinery():
            self.missing.add(path)

    def wrote(self, file: Any, *_: Any) -> None:
        self.written.add(_path(file) or "")

    def gone(self, file: Any) -> None:
        self.removed.add(_path(file) or "")

    def listed(self, folder: Any) -> None:
        path = _path("." if folder is None else folder)
        if path is None or path in self.listings or path in self.written:
            return
        if not self.rules.counts(path) or _by_machinery():
            return
        try:
            self.listings[path] = _names(path, self.rules, self._scandir)
        except OSError:
            self.missing.add(path)

    # -- the end of the run

    def payload(self) -> dict[str, Any]:
        """What the run read, as JSON: paths absolute, stats as ``[size, mtime_ns]``."""
        changed: list[str] = []
        listings = {}
        for folder, seen in sorted(self.listings.items()):
            listings[folder] = listing_digest(folder, self.rules, self._scandir)
            try:
                now = _names(folder, self.rules, self._scandir)
            except OSError:
                now = set()
            ours = self.written | self.removed
            if any(os.path.join(folder, n.rstrip("/")) not in ours for n in now ^ seen):
                changed.append(folder)
        modules = self._modules(changed)
        found: dict[str, Any] = {
            "version": PAYLOAD_VERSION,
            "files": {path: list(stat) for path, stat in sorted(self.files.items())},
            "missing": sorted(self.missing - self.written - set(self.files)),
            "listings": listings,
            "modules": modules,
            "changed": changed,
            "wrote": sorted(p for p in self.written if self.rules.counts(p)),
        }
        if self.problem:
            found["problem"] = self.problem
        return found

    def _modules(self, changed: list[str]) -> dict[str, list[int]]:
        """Files of the modules loaded from outside the interpreter, with their stats now."""
        found: dict[str, list[int]] = {}
        interpreter = self.rules.interpreter
        for module in list(sys.modules.values()):
            file = getattr(module, "__file__", None)
            if not isinstance(file, str) or file.startswith(interpreter):
                continue  # most modules: cheap to leave out before the full test
            path = os.path.abspath(file)
            if path in found or path in self.written or not self.rules.counts(path):
                continue
            try:
                stat = os.stat(path)
            except OSError:
                continue
            found[path] = [stat.st_size, stat.st_mtime_ns]
            if stat.st_mtime_ns > self.started:
                changed.append(path)  # edited after this kernel started: it may run old code
        return dict(sorted(found.items()))

    # -- installing the wrappers

    def safely(self, record: Callable[..., None], *args: Any) -> None:
        """Record, never failing the user's call: a failure is noted, and the key not kept."""
        try:
            record(*args)
        except Exception as exc:
            self.problem = self.problem or f"recording reads failed: {type(exc).__name__}: {exc}"

    def install(self) -> None:
        """Replace the reading, listing and writing calls by recording ones (once)."""
        if getattr(builtins.open, "millrun_reads", False):
            return
        undo = self._undo
        opener = _recording_open(builtins.open, self)
        wrappers: dict[int, Any] = {id(builtins.open): opener}  # original's id -> wrapper
        _replace(builtins, "open", opener, undo)
        _replace(io, "open", opener, undo)
        makers = {"open": _recording_os_open, "listdir": _recording_listing}
        for name in ("open", "listdir", "scandir", *_CHANGES):
            original = getattr(os, name)
            make = makers.get(name, _recording_listing if name == "scandir" else _recording_change)
            wrappers[id(original)] = make(original, self)
            _replace(os, name, wrappers[id(original)], undo)
        for module in ("sqlite3", "sqlite3.dbapi2"):
            found = sys.modules.get(module)
            if found is not None and hasattr(found, "connect"):
                _replace(found, "connect", _recording_connect(found.connect, self), undo)
        _repoint_kept_references(wrappers, undo)

    def uninstall(self) -> None:
        """Put the original calls back (a kernel ends instead; tests need it)."""
        while self._undo:
            self._undo.pop()()
        _CWD.clear()


def _replace(owner: Any, name: str, new: Any, undo: list[Callable[[], None]]) -> None:
    old = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, new)
    undo.append(lambda: setattr(owner, name, old))


def _like(wrapper: Any, original: Any, module: str) -> Any:
    """The wrapper named as the original, where pickle and help look it up."""
    functools.update_wrapper(wrapper, original)
    wrapper.__module__ = module
    wrapper.__qualname__ = original.__name__
    wrapper.millrun_reads = True
    return wrapper


def _recording_open(original: Any, recorder: ReadRecorder) -> Any:
    def open(file: Any, mode: Any = "r", *args: Any, **kwargs: Any) -> Any:
        reading = isinstance(mode, str) and "r" in mode
        try:
            handle = original(file, mode, *args, **kwargs)
        except FileNotFoundError:
            if reading:
                recorder.safely(recorder.not_found, file)
            raise
        if reading:
            recorder.safely(recorder.read, file, handle)
        else:
            recorder.safely(recorder.wrote, file)
        return handle

    return _like(open, original, "io")


def _recording_os_open(original: Any, recorder: ReadRecorder) -> Any:
    writes = os.O_TRUNC | getattr(os, "O_EXCL", 0)

    def open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        elsewhere = kwargs.get("dir_fd") is not None
        reading = flags & os.O_ACCMODE != os.O_WRONLY and not flags & writes
        try:
            fd = original(path, flags, *args, **kwargs)
        except FileNotFoundError:
            if reading and not elsewhere:
                recorder.safely(recorder.not_found, path)
            raise
        if not elsewhere:
            recorder.safely(recorder.read if reading else recorder.wrote, path, fd)
        return int(fd)

    return _like(open, original, "os")


def _recording_listing(original: Any, recorder: ReadRecorder) -> Any:
    def listing(*args: Any, **kwargs: Any) -> Any:
        folder = args[0] if args else kwargs.get("path")
        try:
            found = original(*args, **kwargs)
        except FileNotFoundError:
            recorder.safely(recorder.not_found, "." if folder is None else folder)
            raise
        recorder.safely(recorder.listed, folder)
        return found

    return _like(listing, original, "os")


def _recording_change(original: Any, recorder: ReadRecorder) -> Any:
    """``rename``/``replace``: a path gone, one written; ``mkdir`` written; ``chdir`` forgets
    the working folder; the others (``remove``, ``unlink``, ``rmdir``) a path gone."""
    name = original.__name__
    moved: tuple[Callable[[Any], None], ...] = (recorder.gone, recorder.wrote)
    notes = {"rename": moved, "replace": moved, "mkdir": moved[1:], "chdir": (), "fchdir": ()}

    def change(*args: Any, **kwargs: Any) -> Any:
        _CWD.clear()
        done = original(*args, **kwargs)
        _CWD.clear()
        first = args[0] if args else kwargs.get("src", kwargs.get("path"))
        paths = (first, args[1] if len(args) > 1 else kwargs.get("dst"))
        if kwargs.get("dir_fd") is None and kwargs.get("src_dir_fd") is None:
            for index, note in enumerate(notes.get(name, moved[:1])):  # no zip(strict=): 3.9
                if paths[index] is not None:
                    recorder.safely(note, paths[index])
        return done

    return _like(change, original, "os")


def _recording_connect(original: Any, recorder: ReadRecorder) -> Any:
    def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
        path = _database_path(database)
        existed = path is not None and os.path.exists(path)
        connection = original(database, *args, **kwargs)
        if path is not None:
            recorder.safely(recorder.read if existed else recorder.wrote, path, None)
        return connection

    return _like(connect, original, "sqlite3")


def _database_path(database: Any) -> str | None:
    """The file a ``sqlite3.connect`` opens, or None for an in-memory database."""
    if isinstance(database, int) or not isinstance(database, (str, bytes, os.PathLike)):
        return None
    text = os.fsdecode(os.fspath(database))
    if text.startswith("file:"):
        from urllib.parse import unquote

        text, _, query = text[5:].partition("?")
        if "mode=memory" in query:
            return None
        text = unquote(text)
    return None if text in ("", ":memory:") else text


def _repoint_kept_references(wrappers: Mapping[int, Any], undo: list[Callable[[], None]]) -> None:
    """Point the libraries' own references to a replaced call at its recording wrapper."""
    for module_name, where in KEPT_REFERENCES:
        owner: Any = sys.modules.get(module_name)
        *path, last = where.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if last.endswith("[None]"):
            table = getattr(owner, last[: -len("[None]")], None)
            if isinstance(table, dict) and id(table.get(None)) in wrappers:
                undo.append(functools.partial(table.__setitem__, None, table[None]))
                table[None] = wrappers[id(table[None])]
        elif owner is not None and id(getattr(owner, last, None)) in wrappers:
            _replace(owner, last, wrappers[id(getattr(owner, last))], undo)
    accessor = getattr(sys.modules.get("pathlib"), "_NormalAccessor", None)
    for name in ("open", "listdir", "scandir"):  # Python < 3.11: what pathlib kept when defined
        kept = getattr(accessor, "__dict__", {}).get(name)
        if id(kept) in wrappers:
            _replace(accessor, name, staticmethod(wrappers[id(kept)]), undo)


#: The run's recorder, in the namespace this source runs in.
_RECORDER: ReadRecorder | None = None


def start(settings: Mapping[str, Any]) -> None:
    """Begin recording for the whole run (at the kernel's start, before the first cell)."""
    global _RECORDER
    if _RECORDER is None:
        _RECORDER = ReadRecorder(settings)
        _RECORDER.install()


def finish() -> dict[str, Any]:
    """What the run read (see :meth:`ReadRecorder.payload`); empty when nothing recorded."""
    return _RECORDER.payload() if _RECORDER is not None else {}
