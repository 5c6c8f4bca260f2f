//! Audit and error logs.
//!
//! Every request produces one audit line, KES's JSON shape. The request
//! path only records the event: its facts go into each sink's pending buffer
//! for the serving thread (a lock no other core takes but the writer's, every
//! few milliseconds; a full buffer drops the event and counts it, so a slow
//! sink never slows a response), and the line is sent to any client
//! following `/v1/log/audit`. Each sink's writer formats everything pending a
//! few milliseconds later into one [`AuditBatch`]: the request path allocates
//! nothing per event and writes a fraction of the line's bytes, and a sink
//! (typically a WebAssembly plugin) is called once per batch with the lines
//! it will write.
//!
//! Each sink's writer runs on a thread of its own (`keyward-audit`), never
//! on a request worker: a sink may block the thread it runs on (a WebAssembly
//! sink's file I/O runs on the calling thread), and a sink stalled that way
//! holds up neither requests nor the other sinks.
//!
//! Order: lines reach a sink in the order their requests were answered, as
//! with one shared log: the writer merges the threads' buffers by the
//! (monotonic) answer time, so a client's sequential requests are audited in
//! the order it made them, whichever threads served them.
//!
//! Error messages go to the tracing log and to clients following
//! `/v1/log/error`.
//!
//! The parts, in the order an event passes them: `fan_out` ([`AuditLog`]:
//! the event to every sink and follower), `queue` (each sink's per-thread
//! pending events), `writer` (each sink's thread, lingering into batches),
//! `merge` (the threads' events back into answer order) and `line` (the KES
//! line of one request); `error_log` holds [`ErrorLog`].
//!
//! [`AuditBatch`]: keyward_core::audit_sink::AuditBatch

mod error_log;
mod fan_out;
pub mod follow;
mod line;
mod merge;
mod queue;
pub mod stdout;
mod writer;

pub use error_log::ErrorLog;
pub use fan_out::AuditLog;
pub use line::{line, Answered};
pub use queue::{QUEUE_BYTES, QUEUE_CAPACITY};
pub use writer::{FLUSH_GRACE, LINGER};

/// A writer's batch buffer larger than this after a burst is given back.
const KEEP_BUFFER: usize = 1 << 20;

#[cfg(test)]
mod test_support;
