// A keyward keystore plugin written in JavaScript: a filesystem keystore.
//
// The twin of examples/python-keystore/app.py, and like it, it behaves like
// the first-party Rust plugin `plugins/keystore-fs`: one plain file per key
// under a directory the host preopens (by default `/data`), whose content is
// exactly the value the host stored. That is also the layout of KES's own
// filesystem keystore.
//
// Build it into a WebAssembly component with ComponentizeJS (see README.md
// and build.sh next to this file):
//
//     examples/js-keystore/build.sh
//
// How the pieces fit:
//
// * The world is `keystore-js` (keystore-js.wit next to this file): keyward's
//   `keystore` world plus `wasi:filesystem/preopens`, because JavaScript has no
//   `fs` module inside a component: files are reached through the
//   `wasi:filesystem` interfaces themselves. The host sees a component that
//   exports `keyward:plugin/keystore-api@0.1.0` and imports only WASI 0.2 and
//   `keyward:plugin/log`, like any keystore plugin.
// * The exported interface `keystore-api` is the exported object
//   `keystoreApi`. A WIT `result<T, error>` is "return T" or "throw": the
//   thrown value's `payload` (here a `{ tag, val }` case of the WIT `error`
//   variant) becomes the `err`. Anything thrown that is not such a case traps
//   the instance, so every export goes through `guarded`.
// * Imported functions returning `result<T, error-code>` return T or throw an
//   error whose `payload` is the `wasi:filesystem` error code (`'no-entry'`,
//   `'exist'`, ...). Resources (descriptors, directory streams) are closed
//   with `[Symbol.dispose]()`.
// * The module's top level runs when the component is *built* (ComponentizeJS
//   snapshots the engine after it), so it must not touch the filesystem or
//   ask for randomness: neither exists yet. Everything that depends on the
//   host happens in `init`.
// * The host keeps a pool of instances and may replace one at any time, so an
//   instance keeps no state that matters only in its memory: everything lives
//   in the shared directory.

import { log } from 'keyward:plugin/log@0.1.0';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

// Where in-flight creates write their temporary files, inside the key
// directory (same filesystem, so the hard link works), exactly as the Rust
// keystore-fs plugin does: the two can serve the same directory. Key names
// never start with "." (checkName refuses them), so it can never be mistaken
// for a key, and listings skip every dot name. It is usually absent: each
// create removes it again unless another create is using it.
const TEMP_DIR = '.tmp-keyward';

// Tries at a fresh temporary file: a name collision or the directory
// vanishing (another create removed it, empty) is rare; eight in a row means a
// fault.
const OPEN_TEMP_ATTEMPTS = 8;

// Page size used when the host asks for limit = 0. KES pages at 1024 names.
const DEFAULT_PAGE = 1024;

// The longest name accepted, in UTF-8 bytes (the usual file-name limit).
const MAX_NAME = 255;

// Temporary files older than this are leftovers of a crash, not an in-flight
// create of another instance.
const STALE_TEMP_SECONDS = 600;

// How much `get` asks for per read.
const READ_CHUNK = 64n * 1024n;

// wasi:filesystem error codes that mean "an operator problem that may go
// away": a full disk, a read-only mount, an exhausted quota. Reported as
// `unavailable`.
const UNAVAILABLE_CODES = new Set(['insufficient-space', 'read-only', 'quota']);

const utf8 = new TextEncoder();

// This instance's key directory, set by `init`: the preopened directory that
// holds it (`root`), the key directory's path relative to it (`rel`, empty
// when it is the preopen itself) and the configured guest path (`path`, for
// messages).
let keyDir = null;

// A WIT `error` case, thrown: how an export returns `err(...)`.
class KeystoreError extends Error {
  constructor(payload) {
    super(payload.val ?? payload.tag);
    this.payload = payload;
  }
}

const notFound = () => new KeystoreError({ tag: 'not-found' });
const exists = () => new KeystoreError({ tag: 'exists' });
const unavailable = (msg) => new KeystoreError({ tag: 'unavailable', val: msg });
const invalid = (msg) => new KeystoreError({ tag: 'invalid', val: msg });
const internal = (msg) => new KeystoreError({ tag: 'internal', val: msg });

// The wasi:filesystem error code of what a filesystem import threw, or
// undefined for anything else.
function fsCode(err) {
  return err instanceof KeystoreError || typeof err?.payload !== 'string' ? undefined : err.payload;
}

// Maps a filesystem error to the WIT error case the Rust plugin would answer.
function ioError(context, err) {
  const code = fsCode(err);
  if (code === undefined) {
    return err instanceof KeystoreError ? err : internal(`${context}: ${err}`);
  }
  if (code === 'no-entry') return notFound();
  if (code === 'exist') return exists();
  const message = `${context}: ${code}`;
  return UNAVAILABLE_CODES.has(code) ? unavailable(message) : internal(message);
}

// Closes a WASI resource (a descriptor or a directory stream).
function close(resource) {
  resource?.[Symbol.dispose]();
}

// Calls `f`, ignoring the filesystem error it may throw; returns whether it
// succeeded. For best-effort steps.
function attempt(f) {
  try {
    f();
    return true;
  } catch (err) {
    if (fsCode(err) === undefined) throw err;
    return false;
  }
}

// Unicode general category Cc, like Rust's `char::is_control`.
function isControl(ch) {
  const code = ch.codePointAt(0);
  return code < 0x20 || (code >= 0x7f && code <= 0x9f);
}

// Refuses names that are not one plain file name inside the key directory, or
// that would collide with temporary/hidden files.
function checkName(name) {
  let why;
  if (name === '') {
    why = 'key name is empty';
  } else if (utf8.encode(name).length > MAX_NAME) {
    why = 'key name is too long';
  } else if (name.includes('/') || name.includes('\\')) {
    why = 'key name contains a path separator';
  } else if (name.startsWith('.')) {
    // Covers "." and "..", temporary files and hidden files.
    why = "key name starts with '.'";
  } else if ([...name].some(isControl)) {
    why = 'key name contains a control character';
  } else {
    return;
  }
  throw invalid(`${why}: ${JSON.stringify(name)}`);
}

// Compares two names in the order of their UTF-8 bytes, the "ascending byte
// order" WIT asks for. That is code point order, which differs from
// JavaScript's UTF-16 code unit order (`<`) only where a surrogate (a code
// point above U+FFFF) meets U+E000..U+FFFF.
function compareNames(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      if (x >= 0xd800) x += x >= 0xe000 ? -0x800 : 0x2000;
      if (y >= 0xd800) y += y >= 0xe000 ? -0x800 : 0x2000;
      return x - y;
    }
  }
  return a.length - b.length;
}

// `name`'s path relative to the preopen, for the *At functions.
function inKeyDir(name) {
  return keyDir.rel === '' ? name : `${keyDir.rel}/${name}`;
}

function keyPath(name) {
  checkName(name);
  return inKeyDir(name);
}

// The key directory, opened for reading its entries; close it after use.
function openKeyDir() {
  if (keyDir.rel === '') return { dir: keyDir.root, opened: false };
  const dir = keyDir.root.openAt({ symlinkFollow: true }, keyDir.rel, { directory: true }, { read: true });
  return { dir, opened: true };
}

// Flushes the directory itself so a new or removed name survives a crash.
// Best effort: not every filesystem (or WASI host) can sync a directory.
function syncDir() {
  let opened;
  try {
    opened = openKeyDir();
    opened.dir.sync();
  } catch (err) {
    if (fsCode(err) === undefined) throw err;
  } finally {
    if (opened?.opened) close(opened.dir);
  }
}

function tempDir() {
  return inKeyDir(TEMP_DIR);
}

// 16 random bytes as hex: asks the host's wasi:random at call time (the
// engine's state, including Math.random's seed, is a snapshot taken when the
// component was built).
function randomHex() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// Creates a fresh temporary file in TEMP_DIR (making the directory when it is
// missing); returns its descriptor and path.
function openTemp() {
  for (let i = 0; i < OPEN_TEMP_ATTEMPTS; i++) {
    const path = `${tempDir()}/${randomHex()}`;
    try {
      const fd = keyDir.root.openAt({}, path, { create: true, exclusive: true }, { write: true });
      return { fd, path };
    } catch (err) {
      const code = fsCode(err);
      if (code === 'exist') continue;
      if (code === 'no-entry') {
        try {
          keyDir.root.createDirectoryAt(tempDir());
        } catch (e) {
          if (fsCode(e) !== 'exist') throw ioError('cannot create temporary directory', e);
        }
        continue;
      }
      throw ioError('cannot create temporary file', err);
    }
  }
  throw internal(`cannot create a temporary file in ${TEMP_DIR} (${OPEN_TEMP_ATTEMPTS} attempts)`);
}

// Removes a temporary file, and TEMP_DIR with it unless another create is
// using it (then removing the directory fails, harmlessly). Best effort: a
// file left behind is reclaimed by a later `init`.
function discardTemp(path) {
  attempt(() => keyDir.root.unlinkFileAt(path));
  attempt(() => keyDir.root.removeDirectoryAt(tempDir()));
}

// Writes `value` to a fresh temporary file, flushes it, returns its path.
function writeTemp(value) {
  const { fd, path } = openTemp();
  try {
    let done = 0;
    while (done < value.length) {
      done += Number(fd.write(value.subarray(done), BigInt(done)));
    }
    fd.sync();
  } catch (err) {
    close(fd);
    discardTemp(path);
    throw ioError('cannot write temporary file', err);
  }
  close(fd);
  return path;
}

// Removes temporary files left behind by a crash mid-create, then TEMP_DIR
// itself if that emptied it. Best effort: they are invisible to listings
// anyway, this only reclaims the space.
//
// Reads only TEMP_DIR (usually absent), so starting an instance costs the
// same however many keys there are. (Leftovers of versions that kept `.tmp-*`
// files next to the keys stay; listings skip them.)
function removeStaleTemps() {
  const now = Date.now() / 1000;
  let dir;
  const names = [];
  try {
    dir = keyDir.root.openAt({}, tempDir(), { directory: true }, { read: true });
    const entries = dir.readDirectory();
    try {
      for (;;) {
        let entry;
        try {
          entry = entries.readDirectoryEntry();
        } catch (err) {
          if (fsCode(err) === undefined) throw err;
          continue; // removed meanwhile, or a name that is not UTF-8
        }
        if (entry === undefined) break;
        names.push(entry.name);
      }
    } finally {
      close(entries);
    }
  } catch (err) {
    if (fsCode(err) === undefined) throw err;
    return;
  } finally {
    close(dir);
  }
  for (const name of names) {
    const path = `${tempDir()}/${name}`;
    attempt(() => {
      const modified = keyDir.root.statAt({}, path).dataModificationTimestamp;
      if (modified !== undefined && now - Number(modified.seconds) > STALE_TEMP_SECONDS) {
        keyDir.root.unlinkFileAt(path);
        log('debug', `removed stale temporary file ${TEMP_DIR}/${name}`);
      }
    });
  }
  attempt(() => keyDir.root.removeDirectoryAt(tempDir()));
}

// The preopen holding the guest path `path` (the one with the longest
// matching path) and `path` relative to it; undefined when none holds it.
function findPreopen(path) {
  const parts = (p) => p.split('/').filter((c) => c !== '' && c !== '.');
  const wanted = parts(path);
  let best;
  for (const [descriptor, guest] of getDirectories()) {
    const prefix = parts(guest);
    const holds = path.startsWith('/') === guest.startsWith('/')
      && prefix.length <= wanted.length
      && prefix.every((c, i) => wanted[i] === c);
    if (holds && (best === undefined || prefix.length > best.depth)) {
      close(best?.root);
      best = { root: descriptor, depth: prefix.length, rel: wanted.slice(prefix.length).join('/') };
    } else {
      close(descriptor);
    }
  }
  return best;
}

// Turns an unexpected exception into `internal` instead of a trap.
//
// ComponentizeJS makes whatever an export throws (or its `payload`) the
// `err` of its result; anything that is not a case of the WIT `error`
// variant traps the instance. The host survives that (it discards the
// instance), but a precise `internal` error with the exception's text is
// kinder to the operator reading the log.
function guarded(name, method) {
  return (...args) => {
    try {
      return method(...args);
    } catch (err) {
      if (err instanceof KeystoreError) throw err;
      const code = fsCode(err);
      throw internal(code !== undefined ? `${name}: ${code}` : `${name}: ${err?.name ?? 'Error'}: ${err?.message ?? err}`);
    }
  };
}

export const keystoreApi = {
  init: guarded('init', (config) => {
    let path = '/data';
    if (config.trim() !== '') {
      let parsed;
      try {
        parsed = JSON.parse(config);
      } catch (e) {
        throw invalid(`keystore-js config: ${e.message}`);
      }
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
        throw invalid('keystore-js config: expected a JSON object');
      }
      const unknown = Object.keys(parsed).filter((k) => k !== 'path').sort();
      if (unknown.length > 0) {
        throw invalid(`keystore-js config: unknown field '${unknown[0]}', expected 'path'`);
      }
      if ('path' in parsed) path = parsed.path;
      if (typeof path !== 'string') {
        throw invalid("keystore-js config: 'path' must be a string");
      }
    }
    const found = findPreopen(path);
    if (found === undefined) {
      throw invalid(`keystore-js path ${JSON.stringify(path)} is not accessible (is it granted as a preopen?): no-entry`);
    }
    let type;
    try {
      type = found.rel === '' ? found.root.getType() : found.root.statAt({ symlinkFollow: true }, found.rel).type;
    } catch (err) {
      close(found.root);
      const why = fsCode(err) ?? err;
      throw invalid(`keystore-js path ${JSON.stringify(path)} is not accessible (is it granted as a preopen?): ${why}`);
    }
    if (type !== 'directory') {
      close(found.root);
      throw invalid(`keystore-js path ${JSON.stringify(path)} is not a directory`);
    }
    close(keyDir?.root);
    keyDir = { root: found.root, rel: found.rel, path };
    removeStaleTemps();
    log('debug', `js fs keystore serving ${path}`);
  }),

  create: guarded('create', (name, value) => {
    const path = keyPath(name);
    // Cheap early answer for the common duplicate; the link below is what
    // actually guarantees no overwrite.
    if (attempt(() => keyDir.root.statAt({}, path))) throw exists();
    const temp = writeTemp(value);
    try {
      // The atomic commit point: link(2) never replaces an existing name,
      // so a racing create in another instance sees `exist`.
      keyDir.root.linkAt({}, temp, keyDir.root, path);
    } catch (err) {
      throw fsCode(err) === 'exist' ? exists() : ioError('cannot commit key file', err);
    } finally {
      discardTemp(temp);
    }
    syncDir();
  }),

  get: guarded('get', (name) => {
    const path = keyPath(name);
    let fd;
    try {
      fd = keyDir.root.openAt({ symlinkFollow: true }, path, {}, { read: true });
      const chunks = [];
      let size = 0;
      for (;;) {
        const [chunk, eof] = fd.read(READ_CHUNK, BigInt(size));
        if (chunk.length > 0) chunks.push(chunk);
        size += chunk.length;
        if (eof || chunk.length === 0) break;
      }
      if (chunks.length === 1) return chunks[0];
      const value = new Uint8Array(size);
      let at = 0;
      for (const chunk of chunks) {
        value.set(chunk, at);
        at += chunk.length;
      }
      return value;
    } catch (err) {
      throw ioError('cannot read key file', err);
    } finally {
      close(fd);
    }
  }),

  delete: guarded('delete', (name) => {
    const path = keyPath(name);
    try {
      keyDir.root.unlinkFileAt(path);
    } catch (err) {
      throw ioError('cannot remove key file', err);
    }
    syncDir();
  }),

  list: guarded('list', (prefix, continueAt, limit) => {
    limit = limit === 0 ? DEFAULT_PAGE : limit;
    const names = [];
    let opened;
    let entries;
    try {
      opened = openKeyDir();
      entries = opened.dir.readDirectory();
      for (;;) {
        let entry;
        try {
          entry = entries.readDirectoryEntry();
        } catch (err) {
          // An entry removed by a concurrent request between the host
          // reading its name and its type, or a name that is not UTF-8
          // (written by neither keyward nor KES): skip it, list the rest.
          const code = fsCode(err);
          if (code === 'no-entry' || code === 'illegal-byte-sequence') continue;
          throw err;
        }
        if (entry === undefined) break;
        const { name, type } = entry;
        if (name.startsWith('.') || !name.startsWith(prefix) || compareNames(name, continueAt) < 0) continue;
        if (type === 'regular-file') names.push(name);
      }
    } catch (err) {
      throw ioError('cannot list key directory', err);
    } finally {
      close(entries);
      if (opened?.opened) close(opened.dir);
    }
    names.sort(compareNames);
    const next = names.length > limit ? names[limit] : '';
    return [names.slice(0, limit), next];
  }),

  status: guarded('status', () => {
    let type;
    try {
      type = keyDir.rel === '' ? keyDir.root.getType() : keyDir.root.statAt({ symlinkFollow: true }, keyDir.rel).type;
    } catch (err) {
      throw unavailable(`cannot reach ${keyDir.path}: ${fsCode(err) ?? err}`);
    }
    if (type !== 'directory') throw unavailable(`${keyDir.path} is not a directory`);
  }),
};
