"""A keyward keystore plugin written in Python: a filesystem keystore.

It behaves like the first-party Rust plugin `plugins/keystore-fs`: one plain
file per key under a directory the host preopens (by default `/data`), whose
content is exactly the value the host stored. That is also the layout of KES's
own filesystem keystore.

Build it into a WebAssembly component with componentize-py (see README.md and
build.sh next to this file):

    componentize-py -d ../../wit/keyward-plugin@0.1.0 -w keystore componentize app -o keystore_py.wasm

How the pieces fit:

* `componentize-py` generates the `wit_world` package from `wit/` at build
  time. The exported interface `keystore-api` becomes the protocol class
  `wit_world.exports.KeystoreApi`; this module must define a class of the same
  name implementing it. The WIT `error` variant becomes
  `wit_world.imports.types.Error_*` dataclasses, and a WIT `result<_, error>`
  is "return normally" or "raise Err(error)".
* The module is imported and pre-initialised when the component is *built*
  (so module-level code must not touch the filesystem or ask for randomness:
  neither exists yet). Everything that depends on the host happens in `init`.
* The host keeps a pool of instances and may replace one at any time, so an
  instance keeps no state that matters only in its memory: everything lives in
  the shared directory.
"""

import errno
import json
import os
import stat
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log
from wit_world.imports.types import (
    Error_Exists,
    Error_Internal,
    Error_Invalid,
    Error_NotFound,
    Error_Unavailable,
)

# Where in-flight creates write their temporary files, inside the key
# directory (same filesystem, so the hard link works), exactly as the Rust
# keystore-fs plugin does: the two can serve the same directory. Key names
# never start with "." (check_name refuses them), so it can never be mistaken
# for a key, and listings skip every dot name. It is usually absent: each
# create removes it again unless another create is using it.
TEMP_DIR = ".tmp-keyward"

# Tries at a fresh temporary file: a name collision or the directory vanishing
# (another create removed it, empty) is rare; eight in a row means a fault.
OPEN_TEMP_ATTEMPTS = 8

# Page size used when the host asks for limit = 0. KES pages at 1024 names.
DEFAULT_PAGE = 1024

# The longest name accepted, in UTF-8 bytes (the usual file-name limit).
MAX_NAME = 255

# Temporary files older than this are leftovers of a crash, not an in-flight
# create of another instance.
STALE_TEMP_SECONDS = 600

# errno values that mean "an operator problem that may go away": a full disk,
# a read-only mount, an exhausted quota. Reported as `unavailable`.
UNAVAILABLE_ERRNOS = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", -1)}

# This instance's key directory, set by `init`. A module-level global because
# componentize-py may construct the KeystoreApi class for each call.
_dir = None


def _fail(error):
    """Raises a WIT `error` case: how a Python export returns `Err(...)`."""
    raise Err(error)


def _io_error(context, err):
    """Maps an OSError to the WIT error case the Rust plugin would answer."""
    if isinstance(err, FileNotFoundError):
        return Error_NotFound()
    if isinstance(err, FileExistsError):
        return Error_Exists()
    message = f"{context}: {err.strerror or err}"
    if err.errno in UNAVAILABLE_ERRNOS:
        return Error_Unavailable(message)
    return Error_Internal(message)


def _is_control(ch):
    """Unicode general category Cc, like Rust's `char::is_control`."""
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F


def check_name(name):
    """Refuses names that are not one plain file name inside the key directory,
    or that would collide with temporary/hidden files."""
    if name == "":
        why = "key name is empty"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        why = "key name is too long"
    elif "/" in name or "\\" in name:
        why = "key name contains a path separator"
    elif name.startswith("."):
        # Covers "." and "..", temporary files and hidden files.
        why = "key name starts with '.'"
    elif any(_is_control(c) for c in name):
        why = "key name contains a control character"
    else:
        return
    _fail(Error_Invalid(f"{why}: {name!r}"))


def _key_path(name):
    check_name(name)
    return os.path.join(_dir, name)


def _sync_dir():
    """Flushes the directory itself so a new or removed name survives a crash.
    Best effort: not every filesystem (or WASI host) can sync a directory."""
    try:
        fd = os.open(_dir, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_dir():
    return os.path.join(_dir, TEMP_DIR)


def _open_temp():
    """Creates a fresh temporary file in TEMP_DIR (making the directory when it
    is missing); returns its descriptor and path."""
    for _ in range(OPEN_TEMP_ATTEMPTS):
        # os.urandom reads the host's wasi:random at call time (unlike the
        # `random` module, whose seed is baked in when the component is built).
        path = os.path.join(_temp_dir(), os.urandom(16).hex())
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), path
        except FileExistsError:
            continue
        except FileNotFoundError:
            try:
                os.mkdir(_temp_dir())
            except FileExistsError:
                pass
            except OSError as e:
                _fail(_io_error("cannot create temporary directory", e))
        except OSError as e:
            _fail(_io_error("cannot create temporary file", e))
    _fail(Error_Internal(f"cannot create a temporary file in {TEMP_DIR} ({OPEN_TEMP_ATTEMPTS} attempts)"))


def _discard_temp(path):
    """Removes a temporary file, and TEMP_DIR with it unless another create is
    using it (then removing the directory fails, harmlessly). Best effort: a
    file left behind is reclaimed by a later `init`."""
    for remove, target in ((os.unlink, path), (os.rmdir, _temp_dir())):
        try:
            remove(target)
        except OSError:
            pass


def _write_temp(value):
    """Writes `value` to a fresh temporary file, flushes it, returns its path."""
    fd, path = _open_temp()
    try:
        view = memoryview(value)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        _discard_temp(path)
        _fail(_io_error("cannot write temporary file", e))
    os.close(fd)
    return path


def _remove_stale_temps():
    """Removes temporary files left behind by a crash mid-create, then TEMP_DIR
    itself if that emptied it. Best effort: they are invisible to listings
    anyway, this only reclaims the space.

    Reads only TEMP_DIR (usually absent), so starting an instance costs the
    same however many keys there are. (Leftovers of versions that kept
    `.tmp-*` files next to the keys stay; listings skip them.)"""
    now = time.time()
    try:
        entries = list(os.scandir(_temp_dir()))
    except OSError:
        return
    for entry in entries:
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS:
                os.unlink(entry.path)
                log.log(log.Level.DEBUG, f"removed stale temporary file {TEMP_DIR}/{entry.name}")
        except OSError:
            pass
    try:
        os.rmdir(_temp_dir())
    except OSError:
        pass


def _guarded(method):
    """Turns an unexpected Python exception into `internal` instead of a trap.

    An uncaught exception in an export traps the instance; the host survives
    that (it discards the instance), but a precise `internal` error with the
    exception's text is kinder to the operator reading the log.
    """

    def wrapper(*args):
        try:
            return method(*args)
        except Err:
            raise
        except Exception as e:  # noqa: BLE001 - anything else is a bug
            raise Err(Error_Internal(f"{method.__name__}: {type(e).__name__}: {e}"))

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class KeystoreApi(exports.KeystoreApi):
    """The exported `keystore-api` interface (see wit/keystore.wit)."""

    @_guarded
    def init(self, config: str) -> None:
        global _dir
        path = "/data"
        if config.strip():
            try:
                parsed = json.loads(config)
            except ValueError as e:
                _fail(Error_Invalid(f"keystore-py config: {e}"))
            if not isinstance(parsed, dict):
                _fail(Error_Invalid("keystore-py config: expected a JSON object"))
            unknown = sorted(set(parsed) - {"path"})
            if unknown:
                _fail(Error_Invalid(f"keystore-py config: unknown field {unknown[0]!r}, expected 'path'"))
            path = parsed.get("path", path)
            if not isinstance(path, str):
                _fail(Error_Invalid("keystore-py config: 'path' must be a string"))
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            _fail(Error_Invalid(f"keystore-py path {path!r} is not accessible (is it granted as a preopen?): {e}"))
        if not stat.S_ISDIR(mode):
            _fail(Error_Invalid(f"keystore-py path {path!r} is not a directory"))
        _dir = path
        _remove_stale_temps()
        log.log(log.Level.DEBUG, f"python fs keystore serving {path}")

    @_guarded
    def create(self, name: str, value: bytes) -> None:
        path = _key_path(name)
        # Cheap early answer for the common duplicate; the link below is what
        # actually guarantees no overwrite.
        if os.path.lexists(path):
            _fail(Error_Exists())
        temp = _write_temp(value)
        try:
            # The atomic commit point: link(2) never replaces an existing
            # name, so a racing create in another instance sees EEXIST.
            os.link(temp, path)
        except FileExistsError:
            _fail(Error_Exists())
        except OSError as e:
            _fail(_io_error("cannot commit key file", e))
        finally:
            _discard_temp(temp)
        _sync_dir()

    @_guarded
    def get(self, name: str) -> bytes:
        path = _key_path(name)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            _fail(_io_error("cannot read key file", e))

    @_guarded
    def delete(self, name: str) -> None:
        path = _key_path(name)
        try:
            os.unlink(path)
        except OSError as e:
            _fail(_io_error("cannot remove key file", e))
        _sync_dir()

    @_guarded
    def list(self, prefix: str, continue_at: str, limit: int):
        limit = DEFAULT_PAGE if limit == 0 else limit
        names = []
        try:
            with os.scandir(_dir) as entries:
                for entry in entries:
                    name = entry.name
                    # Names that are not UTF-8 (surrogate-escaped by Python)
                    # were not written by keyward or KES.
                    try:
                        name.encode("utf-8")
                    except UnicodeEncodeError:
                        continue
                    if name.startswith(".") or not name.startswith(prefix) or name < continue_at:
                        continue
                    if entry.is_file(follow_symlinks=False):
                        names.append(name)
        except OSError as e:
            _fail(_io_error("cannot list key directory", e))
        # Python compares str by code point, which is the same order as
        # comparing their UTF-8 bytes: the "ascending byte order" WIT asks for.
        names.sort()
        next_name = names[limit] if len(names) > limit else ""
        return (names[:limit], next_name)

    @_guarded
    def status(self) -> None:
        try:
            mode = os.stat(_dir).st_mode
        except OSError as e:
            _fail(Error_Unavailable(f"cannot reach {_dir}: {e}"))
        if not stat.S_ISDIR(mode):
            _fail(Error_Unavailable(f"{_dir} is not a directory"))
