//! Running the benches' commands (a module, not a bench: included with `#[path]` by the
//! benches that use it).

use std::process::Command;

/// Runs `cmd` from the project root (where the models and scripts are), panicking with its
/// standard output and error if it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the command starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
