//! {{name}}: a keyward audit sink plugin. The host hands it batches of audit
//! events, one JSON line each (KES's audit format), and it writes them to its
//! standard error, which the host logs (`stderr: …` at warn level). Replace
//! `write` with a call to your collector (grant its origin with
//! `--grant-host` and use `wasi:http`) or a file (`--grant-dir`).
//!
//! A batch is either written whole or answered with an error: the host then
//! counts its events as dropped (it does not retry), so retry here if your
//! collector can fail for a moment.

use std::io::Write as _;

wit_bindgen::generate!({ world: "keyward:plugin/audit-lines@0.1.0", path: "wit/keyward-plugin@0.1.0" });

use exports::keyward::plugin::audit_lines_api::Guest;
use keyward::plugin::types::Error;

struct Sink;

impl Guest for Sink {
    fn init(_config: String) -> Result<(), Error> {
        Ok(())
    }

    fn write(lines: Vec<u8>) -> Result<(), Error> {
        let mut err = std::io::stderr().lock();
        err.write_all(&lines).map_err(|e| Error::Unavailable(format!("stderr: {e}")))?;
        err.flush().map_err(|e| Error::Unavailable(format!("stderr: {e}")))
    }
}

export!(Sink);
