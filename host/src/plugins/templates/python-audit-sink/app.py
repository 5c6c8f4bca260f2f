"""{{name}}: a keyward audit sink plugin written in Python.

The host hands it batches of audit events, one JSON line each (KES's audit
format), and it writes them to its standard error, which the host logs
(`stderr: ...` at warn level). Replace `write` with a call to your collector
or a file in a granted directory.

A batch is either written whole or answered with an error: the host then
counts its events as dropped (it does not retry), so retry here if your
collector can fail for a moment.

`componentize-py` generates the `wit_world` package from `wit/` at build time:
the exported interface `audit-lines-api` becomes the protocol class
`wit_world.exports.AuditLinesApi`, which this module implements; a WIT
`result<_, error>` is "return normally" or "raise Err(error)".
"""

import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import Error_Unavailable


class AuditLinesApi(exports.AuditLinesApi):
    def init(self, config: str) -> None:
        pass

    def write(self, lines: bytes) -> None:
        try:
            sys.stderr.buffer.write(lines)
            sys.stderr.flush()
        except OSError as e:
            raise Err(Error_Unavailable(f"stderr: {e}"))
