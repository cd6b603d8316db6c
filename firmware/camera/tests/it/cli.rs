//! The `firegrid-camera` binary: the example configuration passes `check-config`, a broken
//! one fails with the reason.

use std::process::Command;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_firegrid-camera"))
}

#[test]
fn check_config_accepts_the_example_and_rejects_mistakes() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/firegrid-camera.example.toml");
    let out = binary().args(["check-config", "--config", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("device = \"cam-b12-gate\"", "device = \"cam b12\"");
    std::fs::write(&broken, text).unwrap();
    let out = binary().args(["check-config", "--config"]).arg(&broken).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("device id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
