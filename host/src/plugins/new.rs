//! `keyward plugin new`: a plugin project to start from, with the WIT it
//! implements copied in, a build command, and a working implementation
//! (templates under `templates/`, embedded in the binary).

use std::path::{Path, PathBuf};

use super::PluginCmdError;

/// The WIT package the templates implement, copied into each project.
const WIT: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../wit/keyward-plugin@0.1.0/types.wit")),
    ("keystore.wit", include_str!("../../../wit/keyward-plugin@0.1.0/keystore.wit")),
    ("audit-lines.wit", include_str!("../../../wit/keyward-plugin@0.1.0/audit-lines.wit")),
    ("audit-sink.wit", include_str!("../../../wit/keyward-plugin@0.1.0/audit-sink.wit")),
];

/// One template: (path in the project, text with `{{name}}`/`{{crate}}`).
type Template = &'static [(&'static str, &'static str)];

const RUST_KEYSTORE: Template = &[
    ("Cargo.toml", include_str!("templates/rust-keystore/Cargo.toml.in")),
    ("src/lib.rs", include_str!("templates/rust-keystore/lib.rs")),
    ("README.md", include_str!("templates/rust-keystore/README.md")),
    (".gitignore", include_str!("templates/rust-keystore/gitignore")),
];

const RUST_AUDIT_SINK: Template = &[
    ("Cargo.toml", include_str!("templates/rust-keystore/Cargo.toml.in")),
    ("src/lib.rs", include_str!("templates/rust-audit-sink/lib.rs")),
    ("README.md", include_str!("templates/rust-audit-sink/README.md")),
    (".gitignore", include_str!("templates/rust-keystore/gitignore")),
];

/// The Python keystore is the repository's example (tested like the Rust
/// plugins); its build script finds the WIT in the project it is copied into.
const PYTHON_KEYSTORE: Template = &[
    ("app.py", include_str!("../../../examples/python-keystore/app.py")),
    ("build.sh", include_str!("../../../examples/python-keystore/build.sh")),
    ("README.md", include_str!("templates/python-keystore/README.md")),
    (".gitignore", include_str!("templates/python-keystore/gitignore")),
];

/// A Python audit sink: the example's build script builds the world its
/// `app.py` implements.
const PYTHON_AUDIT_SINK: Template = &[
    ("app.py", include_str!("templates/python-audit-sink/app.py")),
    ("build.sh", include_str!("../../../examples/python-keystore/build.sh")),
    ("README.md", include_str!("templates/python-audit-sink/README.md")),
    (".gitignore", include_str!("templates/python-keystore/gitignore")),
];

/// The JavaScript keystore is the repository's example too.
const JS_KEYSTORE: Template = &[
    ("app.js", include_str!("../../../examples/js-keystore/app.js")),
    ("build.sh", include_str!("../../../examples/js-keystore/build.sh")),
    ("keystore-js.wit", include_str!("../../../examples/js-keystore/keystore-js.wit")),
    ("package.json", include_str!("../../../examples/js-keystore/package.json")),
    ("package-lock.json", include_str!("../../../examples/js-keystore/package-lock.json")),
    ("README.md", include_str!("templates/js-keystore/README.md")),
    (".gitignore", "node_modules/\n/target\n"),
];

/// A JavaScript audit sink: the example's build script builds the one world
/// file beside it.
const JS_AUDIT_SINK: Template = &[
    ("app.js", include_str!("templates/js-audit-sink/app.js")),
    ("build.sh", include_str!("../../../examples/js-keystore/build.sh")),
    ("audit-lines-js.wit", include_str!("templates/js-audit-sink/audit-lines-js.wit")),
    ("package.json", include_str!("../../../examples/js-keystore/package.json")),
    ("package-lock.json", include_str!("../../../examples/js-keystore/package-lock.json")),
    ("README.md", include_str!("templates/js-audit-sink/README.md")),
    (".gitignore", "node_modules/\n/target\n"),
];

/// The languages and kinds `plugin new` knows, for messages.
pub const AVAILABLE: &str = "--lang rust|python|js --kind keystore|audit-sink";

/// A template file's text for project `name`: the placeholders filled in.
fn fill(text: &str, name: &str) -> String {
    text.replace("{{name}}", name).replace("{{crate}}", &name.replace('-', "_"))
}

/// Writes a new project `name` under `parent`; returns its directory.
pub fn new(lang: &str, kind: &str, name: &str, parent: &Path) -> Result<PathBuf, PluginCmdError> {
    let template = match (lang, kind) {
        ("rust", "keystore") => RUST_KEYSTORE,
        ("rust", "audit-sink") => RUST_AUDIT_SINK,
        ("python", "keystore") => PYTHON_KEYSTORE,
        ("python", "audit-sink") => PYTHON_AUDIT_SINK,
        ("js", "keystore") => JS_KEYSTORE,
        ("js", "audit-sink") => JS_AUDIT_SINK,
        _ => {
            return Err(PluginCmdError::Refused(format!(
                "no template for --lang {lang} --kind {kind} (available: {AVAILABLE})"
            )))
        }
    };
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(PluginCmdError::Refused(format!(
            "plugin name {name:?}: use 1-64 ASCII letters, digits, '-' and '_', starting with a letter"
        )));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(PluginCmdError::Refused(format!("{} exists; pick another name or --dir", dir.display())));
    }
    let wit = WIT.iter().map(|(file, text)| (format!("wit/keyward-plugin@0.1.0/{file}"), text.to_string()));
    let files = template.iter().map(|(path, text)| (path.to_string(), fill(text, name))).chain(wit);
    for (path, text) in files {
        let path = dir.join(path);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text)?;
            if path.extension().is_some_and(|e| e == "sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        };
        write().map_err(|source| PluginCmdError::Write { path: path.display().to_string(), source })?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_gets_its_files_and_names_are_checked() {
        let parent = tempfile::tempdir().unwrap();
        let dir = new("rust", "keystore", "my-store", parent.path()).unwrap();
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"my-store\""), "{cargo}");
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.contains("release/my_store.wasm") && !readme.contains("{{"), "{readme}");
        assert!(dir.join("wit/keyward-plugin@0.1.0/keystore.wit").is_file());
        assert!(new("rust", "keystore", "my-store", parent.path()).unwrap_err().to_string().contains("exists"));
        assert!(new("rust", "keystore", "../x", parent.path()).is_err());
        assert!(new("cobol", "keystore", "x", parent.path()).unwrap_err().to_string().contains("available"));
        let py = new("python", "keystore", "py-store", parent.path()).unwrap();
        let example = include_str!("../../../examples/python-keystore/build.sh");
        assert_eq!(std::fs::read_to_string(py.join("build.sh")).unwrap(), example);
        assert!(py.join("app.py").is_file() && py.join("wit/keyward-plugin@0.1.0/types.wit").is_file());
        let js = new("js", "keystore", "js-store", parent.path()).unwrap();
        let example = include_str!("../../../examples/js-keystore/build.sh");
        assert_eq!(std::fs::read_to_string(js.join("build.sh")).unwrap(), example);
        assert!(js.join("wit").is_dir(), "the build script looks for wit/ beside it");
    }
}
