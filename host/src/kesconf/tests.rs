//! `keyward config import` against KES configurations of every generation.

use super::*;
use std::path::Path;

fn load(toml: &str) -> keyward_server::config::Settings {
    let file =
        keyward_server::config::File::parse(Path::new("out.toml"), toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    keyward_server::config::Settings::from_file(file).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

const ID: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";

#[test]
fn go_durations_convert() {
    assert_eq!(parse_go_duration("5m0s").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_go_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_go_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
    assert!(parse_go_duration("-1s").is_err());
    assert!(parse_go_duration("5").is_err());
    assert!(parse_go_duration("5d").is_err());
    for d in ["5m0s", "1h30m", "1.5s", "20s", "0s", "250ms"] {
        let text = format_duration(parse_go_duration(d).unwrap());
        let back = keyward_server::config::parse_duration("t", &text).unwrap();
        assert_eq!(back, parse_go_duration(d).unwrap(), "{d} -> {text}");
    }
}

#[test]
fn minimal_config_round_trips() {
    let yaml = format!("address: :7373\nadmin:\n  identity: {ID}\ntls:\n  key: server.key\n  cert: server.crt\n");
    let toml = convert(&yaml, "kes.yml").unwrap();
    let s = load(&toml);
    assert_eq!(s.address.to_string(), "0.0.0.0:7373");
    assert_eq!(s.tls.cert, Path::new("server.crt"));
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let yaml = format!("admin:\n  identity: {ID}\ntls:\n  key: k\n  cert: c\npolciy: {{}}\n");
    let err = convert(&yaml, "kes.yml").unwrap_err().to_string();
    assert!(err.contains("polciy") && err.contains("line 6"), "{err}");
}

#[test]
fn old_generation_keystore_under_keys_and_root_admin() {
    let yaml = format!("root: {ID}\ntls:\n  key: k\n  cert: c\nkeys:\n  fs:\n    path: ./keys\n");
    let s = load(&convert(&yaml, "old.yml").unwrap());
    let ks = s.keystore.unwrap();
    assert_eq!((ks.plugin.as_str(), ks.config_json.as_str()), ("fs", r#"{"path":"./keys"}"#));
}

#[test]
fn unsupported_keystores_are_named() {
    for (yaml_ks, name) in [
        ("aws:\n    secretsmanager:\n      region: us-east-1", "aws.secretsmanager"),
        ("azure:\n    keyvault:\n      endpoint: x", "azure.keyvault"),
    ] {
        let yaml = format!("admin:\n  identity: {ID}\ntls:\n  key: k\n  cert: c\nkeystore:\n  {yaml_ks}\n");
        let err = convert(&yaml, "kes.yml").unwrap_err().to_string();
        assert!(err.contains(&format!("'{name}'")), "{err}");
    }
}

#[test]
fn log_levels_become_switches() {
    let c = Converter { file: "f".into(), out: String::new() };
    let lvl = |s: &str| c.level("log.error", &Some(Value::String(s.into()))).unwrap();
    assert_eq!(lvl("off").as_deref(), Some("off"));
    assert_eq!(lvl("ERROR+1").as_deref(), Some("off"));
    assert_eq!(lvl("WARN").as_deref(), Some("on"));
    assert_eq!(lvl("on").as_deref(), Some("on"));
    assert!(c.level("log.error", &Some(Value::String("loud".into()))).is_err());
}

#[test]
fn strings_are_quoted_for_toml() {
    assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
    assert_eq!(toml_key("/v1/ready"), "\"/v1/ready\"");
    assert_eq!(toml_key("my-app"), "my-app");
}
