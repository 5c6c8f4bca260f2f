#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Sources: tests/fixtures/kes/vectors.json (ciphertexts in all three formats,
tampered ciphertexts, stored keys, names, policy patterns, HMAC messages),
examples/*.toml (server config, plugin manifest) and tests/fixtures/kes/*.yml
(KES configs for `config import`).

Usage: python3 fuzz/seed.py [path/to/vectors.json]
(default: $KEYWARD_VECTORS, else tests/fixtures/kes/vectors.json).

Seeds are named seed-<hash>, so re-running only adds files and the corpus
that libFuzzer grows in the same directories is left alone. Standard library
only, so it runs on any CI machine.
"""

import base64
import glob
import hashlib
import json
import os
import re
import sys

FUZZ = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(FUZZ)
CORPUS = os.path.join(FUZZ, "corpus")


def b64(s):
    return base64.b64decode(s) if s else b""


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def key_table():
    """The (algorithm, key) table of fuzz_targets/decrypt.rs, in order."""
    with open(os.path.join(FUZZ, "fuzz_targets", "decrypt.rs")) as f:
        src = f.read()
    table = re.search(r"const KEYS: &\[\(&str, &str\)\] = &\[(.*?)\];", src, re.S).group(1)
    return [(a, b64(k)) for a, k in re.findall(r'\("(AES256|ChaCha20)",\s*"([A-Za-z0-9+/=]+)"\)', table)]


def selector(table, algorithm, key):
    """Index into the table, bit 7 set when the key is used with the other
    algorithm; the zero AES key when the table does not hold it."""
    algorithm = {"AES256-GCM_SHA256": "AES256", "XCHACHA20-POLY1305": "ChaCha20"}.get(algorithm, algorithm)
    for i, (a, k) in enumerate(table):
        if k == key and a == algorithm:
            return i
    for i, (a, k) in enumerate(table):
        if k == key:
            return i | 0x80
    return 0


def decrypt_input(sel, context, ciphertext):
    context = context[:255]
    return bytes([sel, len(context)]) + context + ciphertext


def seed_decrypt(v):
    table = key_table()
    cases = []  # (algorithm, key, context, ciphertext)
    for t in v["decrypt"]:
        for fmt in ("raw", "msgpack", "json"):
            cases.append((t["algorithm"], b64(t["key"]), b64(t["context"]), b64(t["ciphertext_" + fmt])))
    for section in ("decrypt_kes_tests", "tampered"):
        for t in v[section]:
            cases.append((t["algorithm"], b64(t["key"]), b64(t["context"]), b64(t["ciphertext"])))
    for t in v["cross_algorithm"]:
        cases.append((t["key_type"], b64(t["key"]), b64(t["context"]), b64(t["ciphertext"])))
        cases.append((t["ciphertext_algorithm"], b64(t["key"]), b64(t["context"]), b64(t["ciphertext"])))
    for alg, key, ctx, ct in cases:
        sel = selector(table, alg, key)
        write("decrypt", decrypt_input(sel, ctx, ct))
        write("decrypt", decrypt_input(sel ^ 0x80, ctx, ct))
    # Edge cases of the parse rule: empty, exactly 28 bytes, lone markers.
    for ct in (b"", b"\0" * 28, b"\0" * 29, b"\x95", b"{", b"{}", b"\x95" * 45, b'{"aead":"ChaCha20Poly1305"}'):
        write("decrypt", decrypt_input(0, b"", ct))


def seed_stored_key(v):
    for t in v["stored_keys"]:
        write("stored_key", t["raw"])
    write("stored_key", '{"bytes":null}')
    write("stored_key", '{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","created_at":"9999-12-31T23:59:59-23:59"}')
    write("stored_key", "")


def seed_request_bodies(v):
    def j(obj):
        return json.dumps(obj, separators=(",", ":"))

    for t in v["decrypt"]:
        ctx = t["context"]
        write("request_bodies", j({"plaintext": t["plaintext"], "context": ctx}))
        cts = [{"ciphertext": t["ciphertext_" + f], "context": ctx} for f in ("raw", "msgpack", "json")]
        write("request_bodies", j(cts[0]))
        write("request_bodies", j(cts))
        write("request_bodies", j({"context": ctx}))
        write("request_bodies", j({"key": t["key"], "cipher": t["algorithm"]}))
        write("request_bodies", j({"bytes": t["key"], "algorithm": t["algorithm"]}))
    for t in v["hmac"]:
        write("request_bodies", j({"message": t["message"]}))
    for body in ("", "{}", "[]", "null", " \n{\"context\":null}", "{\"plaintext\":\"A\"}", "[{}]", "{\"key\":\"\",\"cipher\":\"\"}"):
        write("request_bodies", body)


def seed_pattern(v):
    for t in v["policy_match"]:
        write("pattern", t["pattern"] + "\0" + t["path"])
    for t in v["policy_decisions"]:
        for p in t["allow"] + t["deny"]:
            write("pattern", p + "\0" + t["path"])
    for p, s in (("*??", "\u20ac"), ("[^a-]", "b"), ("a\\*b", "a*b"), ("[\\]]", "]"), ("*/*", "a/b"), ("[", "")):
        write("pattern", p + "\0" + s)


def seed_names(v):
    for t in v["names"]:
        write("names", t["value"])


def seed_files():
    for path in sorted(glob.glob(os.path.join(REPO, "examples", "*.toml"))):
        target = "manifest" if os.path.basename(path) == "plugins.toml" else "config"
        with open(path, "rb") as f:
            write(target, f.read())
    for path in sorted(glob.glob(os.path.join(REPO, "tests", "fixtures", "kes", "*.y*ml"))):
        with open(path, "rb") as f:
            write("kes_config", f.read())
    write("manifest", '[[plugin]]\nname = "a"\nkind = "audit-sink"\npath = "/a.wasm"\n'
          '[plugin.grants]\nhosts = ["https://[::1]:8443"]\nenv = ["A"]\n'
          '[plugin.limits]\nmemory = "4GiB"\ncall_timeout = "10m"\n')


def main():
    path = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get("KEYWARD_VECTORS") \
        or os.path.join(REPO, "tests", "fixtures", "kes", "vectors.json")
    with open(path) as f:
        v = json.load(f)
    seed_decrypt(v)
    seed_stored_key(v)
    seed_request_bodies(v)
    seed_pattern(v)
    seed_names(v)
    seed_files()
    for target in sorted(os.listdir(CORPUS)):
        n = len([x for x in os.listdir(os.path.join(CORPUS, target)) if x.startswith("seed-")])
        print(f"{target}: {n} seeds")


if __name__ == "__main__":
    main()
