//! keyward-core: what every part of keyward agrees on, with no runtime
//! underneath (no tokio, no hyper, no wasmtime).
//!
//! * [`crypto`]: key material and KES's cryptography: the ciphertext formats
//!   of both API generations, data keys, HMACs, and the stored-key encodings;
//! * [`keystore`] and [`audit_sink`]: the two seams backends implement
//!   (natively or as WebAssembly plugins), with the error they report;
//! * [`seal`]: wrapping stored values under an operator's key before they
//!   reach a backend;
//! * [`names`]: which key, policy and identity names each API generation
//!   accepts;
//! * [`time_format`]: times as KES's Go code writes them.

pub mod audit_sink;
pub mod crypto;
pub mod keystore;
pub mod names;
pub mod seal;
pub mod time_format;
