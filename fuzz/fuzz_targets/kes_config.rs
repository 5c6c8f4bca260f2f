//! `keyward config import`: `kesconf::convert` on arbitrary KES YAML.
//!
//! Checks, besides "never panics": whatever converts is a config keyward's own
//! parser accepts (`File::parse`: valid TOML, only known keys, right types),
//! so the converter never writes a file the server refuses to read.
#![no_main]

use std::path::Path;

use keyward_server::config::File;
use keyward::kesconf::convert;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(out) = convert(&text, "kes.yml") else {
        return;
    };
    if let Err(e) = File::parse(Path::new("converted.toml"), &out) {
        panic!("convert wrote a config keyward cannot parse: {e}\n--- input\n{text}\n--- output\n{out}");
    }
});
