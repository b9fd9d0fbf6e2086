//! `kalam` as a process where no server is needed: the command line, and the
//! messages for a server that is not there. (Tests against a real server are in
//! the integration suite, `backend/tests/integration/test_cli.rs`; this target also
//! makes `cargo test --workspace` build the `kalam` binary they run.)

use std::process::{Command, Stdio};

fn kalam(args: &[&str]) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_kalam"))
        .args(args)
        .env("KALAM_HOME", home.path())
        .env_remove("KALAM_URL")
        .env_remove("KALAM_USER")
        .env_remove("KALAM_PASSWORD")
        .env_remove("KALAM_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("kalam runs");
    (
        output.status.code().expect("an exit status"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn help_lists_the_options() {
    let (code, out, _) = kalam(&["--help"]);
    assert_eq!(code, 0);
    for option in [
        "--url",
        "--user",
        "--password",
        "--token",
        "--command",
        "--file",
        "--format",
        "login",
    ] {
        assert!(out.contains(option), "{option} in {out}");
    }
}

#[test]
fn command_line_mistakes_exit_with_2() {
    let (code, _, err) = kalam(&["--no-such-flag"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = kalam(&["--format", "yaml", "-c", "SELECT 1"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown format 'yaml'"), "{err}");
    let (code, _, err) = kalam(&["--url", "localhost:8080", "-c", "SELECT 1"]);
    assert_eq!(code, 2);
    assert!(err.contains("use http://host:port"), "{err}");
    let (code, _, err) = kalam(&["login"]);
    assert_eq!(code, 2);
    assert!(err.contains("no user given"), "{err}");
}

#[test]
fn an_unreachable_server_is_one_line_that_says_what_to_do() {
    // Port 9 (discard) has no KalamDB server on a test machine.
    let (code, out, err) = kalam(&["--url", "http://127.0.0.1:9", "-c", "SELECT 1"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:9"),
        "{err}"
    );
    assert!(err.contains("--url"), "{err}");
}
