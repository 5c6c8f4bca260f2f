//! The guest workspace's own tests: the plugins' unit tests and the SDK's
//! doc examples, run for this machine's target (the plugins' logic is plain
//! Rust; only their WASI calls need a component host).

use crate::guests;

#[test]
fn the_plugins_unit_tests_and_the_sdk_examples_pass() {
    let out = guests::guest_cargo()
        .args(["test", "--locked", "--workspace", "--target-dir"])
        .arg(guests::native_target_dir())
        .output()
        .expect("run cargo test in plugins/");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "`cargo test` in plugins/ failed:\n{stdout}\n{stderr}");
    // Every test binary reports a line; count what ran, so an empty run
    // (a crate whose tests stopped being compiled) is noticed.
    let passed: usize = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(stdout.contains("Doc-tests keyward_sdk") || stderr.contains("Doc-tests keyward_sdk"), "{stderr}");
    assert!(passed >= 15, "only {passed} guest tests ran:\n{stdout}");
}
