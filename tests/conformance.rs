//! API conformance: `scripts/api-conformance.sh` runs schemathesis (from PyPI, with every check)
//! against a live leader, a live follower and that follower's internal listener (the batch
//! route) of this build, each checked against the OpenAPI description it serves. Needs python3
//! with venv and pip, and the package index; without them the test is skipped, or fails under
//! `SEMISYNC_REQUIRE_ALL=1`.

#[path = "common/mod.rs"]
mod common;

use std::process::Command;

use common::{runs, skip_without_tool};

/// What to install when the suite is skipped.
const INSTALL: &str = "install python3 with venv (Debian: apt-get install python3 python3-venv) \
                       and let pip reach the package index";

#[test]
fn schemathesis_finds_no_failure_on_the_leader_a_follower_or_its_internal_listener() {
    if let Err(why) = runs("python3", &["-c", "import venv, ensurepip"]) {
        skip_without_tool("the API conformance test", &why, INSTALL);
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(format!("{root}/scripts/api-conformance.sh"))
        .current_dir(root)
        .env("SEMISYNC_KV_BIN", env!("CARGO_BIN_EXE_semisync-kv"))
        .output()
        .expect("run scripts/api-conformance.sh");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    if output.status.code() == Some(75) {
        let stderr = text(&output.stderr);
        let why = stderr
            .lines()
            .last()
            .unwrap_or("schemathesis could not be installed");
        skip_without_tool("the API conformance test", why, INSTALL);
        return;
    }
    assert!(
        output.status.success(),
        "schemathesis found failures ({}):\n{}\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    for role in ["leader", "follower", "internal"] {
        assert!(
            stdout.contains(&format!("== schemathesis against the {role}")),
            "{stdout}"
        );
    }
    // Each run's summary counts its test cases: "N generated, N passed".
    assert_eq!(
        stdout.matches(" generated, ").count(),
        3,
        "all three runs completed:\n{stdout}"
    );
}
