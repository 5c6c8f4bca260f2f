//! Guest-side SDK for keyward plugins.
//!
//! keyward loads its keystore backends and audit sinks as WebAssembly components
//! built against the WIT package `keyward:plugin@0.1.0` (the `wit/` directory of
//! the keyward repository, which this crate reads at compile time). This crate
//! hides the generated bindings behind one small trait per world, so a backend
//! is an ordinary Rust `impl` plus one macro call:
//!
//! ```ignore
//! use keyward_sdk::{Error, Keystore, Page};
//!
//! struct Memory;
//!
//! impl Keystore for Memory {
//!     fn init(_config: &str) -> Result<Self, Error> { Ok(Memory) }
//!     fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> { todo!() }
//!     fn get(&self, name: &str) -> Result<Vec<u8>, Error> { todo!() }
//!     fn delete(&self, name: &str) -> Result<(), Error> { todo!() }
//!     fn list(&self, prefix: &str, continue_at: &str, limit: u32) -> Result<Page, Error> { todo!() }
//! }
//!
//! keyward_sdk::export_keystore!(Memory);
//! ```
//!
//! Build the plugin crate as a `cdylib` with `cargo build --release --target
//! wasm32-wasip2`; the resulting `.wasm` file is a component ready for keyward.
//!
//! | world | trait | export macro |
//! |---|---|---|
//! | `keystore` | [`Keystore`] | [`export_keystore!`] |
//! | `audit-lines` (preferred for audit sinks) | [`AuditSink`] | [`export_audit_sink!`] |
//! | `audit-sink` (the original per-event world) | [`AuditEventSink`] | [`export_audit_event_sink!`] |
//!
//! An audit sink exports one of two worlds; the host accepts either and tells
//! them apart by the exported interface. Prefer `audit-lines` ([`AuditSink`]):
//! each batch arrives as one byte buffer of newline-delimited JSON, every
//! event's exact KES audit line followed by `\n`, which is what files, log
//! shippers and webhooks store or send anyway, and it is much cheaper for the
//! host to hand over than one record of strings per event. Use
//! `audit-sink` ([`AuditEventSink`]) only when a sink needs pre-parsed fields
//! ([`Event`]: time, ip, path, identity, status, duration) for most events and
//! would rather not parse the JSON line itself.
//!
//! Each instance of a plugin is initialised exactly once by the host (through
//! [`Keystore::init`], [`AuditSink::init`] or [`AuditEventSink::init`]) and
//! keeps the value `init` returned
//! for the rest of its life. The host may run several instances side by side and
//! may replace an instance at any time (for example after a trap), so keep
//! nothing in memory that another instance would need to see.

#![warn(missing_docs)]

// Lets the generated bindings name this crate by its public path, which is also
// how they are reached from plugin crates through the export macros.
extern crate self as keyward_sdk;

/// Raw bindings generated from the WIT by `wit-bindgen`.
///
/// Plugins normally need none of this; it is public so a plugin can reach a
/// part of the ABI this crate does not wrap, and so the export macros can name
/// it from the plugin crate.
pub mod bindings {
    /// Bindings for the `keystore` world, including the shared `types` and
    /// `log` interfaces.
    #[allow(missing_docs)]
    pub mod keystore {
        wit_bindgen::generate!({
            path: "../wit/keyward-plugin@0.1.0",
            world: "keyward:plugin/keystore@0.1.0",
            // Used from plugin crates, so the export macro must be exported and
            // must find these bindings by absolute path.
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "keyward_sdk::bindings::keystore",
            runtime_path: "keyward_sdk::__private::wit_bindgen::rt",
        });
    }

    /// Bindings for the `audit-sink` world (events as records). The shared
    /// `types` and `log` interfaces are those of [`keystore`], so there is one
    /// [`Error`](crate::Error) type for every world.
    #[allow(missing_docs)]
    pub mod audit_sink {
        wit_bindgen::generate!({
            path: "../wit/keyward-plugin@0.1.0",
            world: "keyward:plugin/audit-sink@0.1.0",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "keyward_sdk::bindings::audit_sink",
            runtime_path: "keyward_sdk::__private::wit_bindgen::rt",
            with: {
                "keyward:plugin/types@0.1.0": crate::bindings::keystore::keyward::plugin::types,
                "keyward:plugin/log@0.1.0": crate::bindings::keystore::keyward::plugin::log,
            },
        });
    }

    /// Bindings for the `audit-lines` world (events as ndjson bytes). The
    /// shared `types` and `log` interfaces are those of [`keystore`], as for
    /// [`audit_sink`].
    #[allow(missing_docs)]
    pub mod audit_lines {
        wit_bindgen::generate!({
            path: "../wit/keyward-plugin@0.1.0",
            world: "keyward:plugin/audit-lines@0.1.0",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "keyward_sdk::bindings::audit_lines",
            runtime_path: "keyward_sdk::__private::wit_bindgen::rt",
            with: {
                "keyward:plugin/types@0.1.0": crate::bindings::keystore::keyward::plugin::types,
                "keyward:plugin/log@0.1.0": crate::bindings::keystore::keyward::plugin::log,
            },
        });
    }
}

/// Why an operation failed; the WIT `error` variant.
///
/// The host maps each case to a distinct outcome, so choose precisely:
/// `NotFound` for a missing name, `Exists` when `create` finds the name taken,
/// `Unavailable` for a temporary backend problem, `Invalid` for a request or
/// configuration the backend refuses, `Internal` for everything else.
pub use bindings::keystore::keyward::plugin::types::Error;

/// One audit event; the WIT `event` record, as [`AuditEventSink::write`]
/// receives it.
pub use bindings::keystore::keyward::plugin::types::Event;

/// The WIT package this SDK implements. The host refuses plugins built for a
/// package version it does not implement.
pub const WIT_PACKAGE: &str = "keyward:plugin@0.1.0";

/// One page of a keystore listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Names in ascending byte order, all starting with the requested prefix.
    pub names: Vec<String>,
    /// The first matching name not returned (the `continue-at` of the next
    /// page), or empty when the listing is complete.
    pub next: String,
}

/// A keystore backend: the `keystore` world as a Rust trait.
///
/// Implement it and call [`export_keystore!`] once in the plugin crate.
pub trait Keystore: Sized + 'static {
    /// Builds this instance's state from the plugin's configuration, a JSON
    /// object (`{}` when the operator gave none). Called once per instance,
    /// before anything else. Answer [`Error::Invalid`] for a configuration
    /// that cannot work.
    fn init(config: &str) -> Result<Self, Error>;

    /// Stores `value` under `name`; [`Error::Exists`] if the name is taken.
    /// Must be atomic and durable before it returns.
    fn create(&self, name: &str, value: &[u8]) -> Result<(), Error>;

    /// Returns the value stored under `name`, or [`Error::NotFound`].
    fn get(&self, name: &str) -> Result<Vec<u8>, Error>;

    /// Removes `name`, or answers [`Error::NotFound`].
    fn delete(&self, name: &str) -> Result<(), Error>;

    /// Lists names starting with `prefix`, ascending, from `continue_at`
    /// (inclusive; empty = from the start), at most `limit` names (0 = the
    /// backend's own page size).
    fn list(&self, prefix: &str, continue_at: &str, limit: u32) -> Result<Page, Error>;

    /// Reports whether the backend is healthy. The default says it is, which
    /// is right for backends with nothing to reach.
    fn status(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// An audit sink: the `audit-lines` world as a Rust trait. The preferred way
/// to write an audit sink.
///
/// Implement it and call [`export_audit_sink!`] once in the plugin crate.
pub trait AuditSink: Sized + 'static {
    /// Builds this instance's state from the sink's configuration, a JSON
    /// object (`{}` when the operator gave none). Called once per instance,
    /// before anything else. Answer [`Error::Invalid`] for a configuration
    /// that cannot work.
    fn init(config: &str) -> Result<Self, Error>;

    /// Delivers a batch of one or more events as newline-delimited JSON:
    /// every event's exact KES audit line (UTF-8, no line break inside)
    /// followed by `\n`, oldest first. An error means the batch may be lost;
    /// the host counts its events as dropped and does not retry.
    fn write(&self, lines: Vec<u8>) -> Result<(), Error>;
}

/// An audit sink taking one [`Event`] record per event: the original
/// `audit-sink` world as a Rust trait.
///
/// Still supported, but prefer [`AuditSink`]: lowering every event's fields
/// into the guest costs the host far more than handing over one buffer of
/// lines. Implement it and call [`export_audit_event_sink!`] once in the
/// plugin crate.
pub trait AuditEventSink: Sized + 'static {
    /// Builds this instance's state from the sink's configuration, a JSON
    /// object. Called once per instance, before anything else.
    fn init(config: &str) -> Result<Self, Error>;

    /// Delivers a batch of events, oldest first. An error means the batch may
    /// be lost; the host counts it and does not retry.
    fn write(&self, events: Vec<Event>) -> Result<(), Error>;
}

/// Logging into the host's log, tagged there with the plugin's name.
///
/// Plugins have no stdout and their stderr may be discarded, so this is how a
/// plugin tells the operator something. Never log key material.
pub mod log {
    use crate::bindings::keystore::keyward::plugin::log::log as host_log;
    pub use crate::bindings::keystore::keyward::plugin::log::Level;

    /// Writes `message` to the host's log at `level`.
    pub fn log(level: Level, message: &str) {
        host_log(level, message);
    }
    /// Logs at `trace` level.
    pub fn trace(message: &str) {
        host_log(Level::Trace, message);
    }
    /// Logs at `debug` level.
    pub fn debug(message: &str) {
        host_log(Level::Debug, message);
    }
    /// Logs at `info` level.
    pub fn info(message: &str) {
        host_log(Level::Info, message);
    }
    /// Logs at `warn` level.
    pub fn warn(message: &str) {
        host_log(Level::Warn, message);
    }
    /// Logs at `error` level.
    pub fn error(message: &str) {
        host_log(Level::Error, message);
    }
}

impl Error {
    /// Maps an I/O error the usual way: missing file → [`Error::NotFound`],
    /// existing file → [`Error::Exists`], anything else → [`Error::Internal`]
    /// with `context` and the error text, so the operator sees what failed.
    pub fn from_io(context: &str, err: &std::io::Error) -> Error {
        match err.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound,
            std::io::ErrorKind::AlreadyExists => Error::Exists,
            _ => Error::Internal(format!("{context}: {err}")),
        }
    }
}

/// Support for the export macros. Not part of the SDK's API: names and
/// signatures here may change in any release.
#[doc(hidden)]
pub mod __private {
    use std::cell::OnceCell;
    use std::thread::LocalKey;

    pub use wit_bindgen;

    use crate::Error;

    /// Where an instance keeps the value its `init` returned. WebAssembly
    /// instances are single-threaded, so a thread-local is simply a global.
    pub type State<T> = LocalKey<OnceCell<T>>;

    /// Runs the plugin's `init` once and keeps its result.
    pub fn init<T: 'static>(state: &'static State<T>, make: impl FnOnce() -> Result<T, Error>) -> Result<(), Error> {
        state.with(|cell| {
            if cell.get().is_some() {
                return Err(Error::Internal("init called twice on one instance".into()));
            }
            let value = make()?;
            // Cannot fail: checked above and wasm instances are single-threaded.
            let _ = cell.set(value);
            Ok(())
        })
    }

    /// Runs `f` on the initialised state, or fails if the host skipped `init`.
    pub fn with<T: 'static, R>(state: &'static State<T>, f: impl FnOnce(&T) -> Result<R, Error>) -> Result<R, Error> {
        state.with(|cell| match cell.get() {
            Some(value) => f(value),
            None => Err(Error::Internal("plugin called before init".into())),
        })
    }
}

/// Exports a type implementing [`Keystore`] as this component's `keystore`
/// world. Call it exactly once, at the top level of the plugin crate.
#[macro_export]
macro_rules! export_keystore {
    ($ty:ty) => {
        const _: () = {
            use $crate::bindings::keystore::exports::keyward::plugin::keystore_api::Guest;

            ::std::thread_local! {
                static STATE: ::std::cell::OnceCell<$ty> = const { ::std::cell::OnceCell::new() };
            }

            struct KeywardKeystoreExport;

            impl Guest for KeywardKeystoreExport {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), $crate::Error> {
                    $crate::__private::init(&STATE, || <$ty as $crate::Keystore>::init(&config))
                }
                fn create(
                    name: ::std::string::String,
                    value: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), $crate::Error> {
                    $crate::__private::with(&STATE, |s| $crate::Keystore::create(s, &name, &value))
                }
                fn get(
                    name: ::std::string::String,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::Error> {
                    $crate::__private::with(&STATE, |s| $crate::Keystore::get(s, &name))
                }
                fn delete(name: ::std::string::String) -> ::std::result::Result<(), $crate::Error> {
                    $crate::__private::with(&STATE, |s| $crate::Keystore::delete(s, &name))
                }
                fn list(
                    prefix: ::std::string::String,
                    continue_at: ::std::string::String,
                    limit: u32,
                ) -> ::std::result::Result<
                    (
                        ::std::vec::Vec<::std::string::String>,
                        ::std::string::String,
                    ),
                    $crate::Error,
                > {
                    $crate::__private::with(&STATE, |s| {
                        $crate::Keystore::list(s, &prefix, &continue_at, limit)
                            .map(|page| (page.names, page.next))
                    })
                }
                fn status() -> ::std::result::Result<(), $crate::Error> {
                    $crate::__private::with(&STATE, |s| $crate::Keystore::status(s))
                }
            }

            $crate::bindings::keystore::export!(
                KeywardKeystoreExport with_types_in $crate::bindings::keystore
            );
        };
    };
}

/// Exports a type implementing [`AuditSink`] as this component's
/// `audit-lines` world. Call it exactly once, at the top level of the plugin
/// crate.
#[macro_export]
macro_rules! export_audit_sink {
    ($ty:ty) => {
        const _: () = {
            use $crate::bindings::audit_lines::exports::keyward::plugin::audit_lines_api::Guest;

            ::std::thread_local! {
                static STATE: ::std::cell::OnceCell<$ty> = const { ::std::cell::OnceCell::new() };
            }

            struct KeywardAuditLinesExport;

            impl Guest for KeywardAuditLinesExport {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), $crate::Error> {
                    $crate::__private::init(&STATE, || <$ty as $crate::AuditSink>::init(&config))
                }
                fn write(lines: ::std::vec::Vec<u8>) -> ::std::result::Result<(), $crate::Error> {
                    $crate::__private::with(&STATE, |s| $crate::AuditSink::write(s, lines))
                }
            }

            $crate::bindings::audit_lines::export!(
                KeywardAuditLinesExport with_types_in $crate::bindings::audit_lines
            );
        };
    };
}

/// Exports a type implementing [`AuditEventSink`] as this component's
/// `audit-sink` world (the original per-event world; prefer
/// [`export_audit_sink!`]). Call it exactly once, at the top level of the
/// plugin crate.
#[macro_export]
macro_rules! export_audit_event_sink {
    ($ty:ty) => {
        const _: () = {
            use $crate::bindings::audit_sink::exports::keyward::plugin::audit_sink_api::Guest;

            ::std::thread_local! {
                static STATE: ::std::cell::OnceCell<$ty> = const { ::std::cell::OnceCell::new() };
            }

            struct KeywardAuditSinkExport;

            impl Guest for KeywardAuditSinkExport {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), $crate::Error> {
                    $crate::__private::init(&STATE, || <$ty as $crate::AuditEventSink>::init(&config))
                }
                fn write(events: ::std::vec::Vec<$crate::Event>) -> ::std::result::Result<(), $crate::Error> {
                    $crate::__private::with(&STATE, |s| $crate::AuditEventSink::write(s, events))
                }
            }

            $crate::bindings::audit_sink::export!(
                KeywardAuditSinkExport with_types_in $crate::bindings::audit_sink
            );
        };
    };
}
