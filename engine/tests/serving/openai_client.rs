//! The engine through OpenAI's official Python client (pinned in `scripts/versions.env`,
//! provisioned by `scripts/tools.sh openai-python`): every endpoint and field the README's
//! table lists, as a user's program would call them (`openai_compat.py`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{SERVED_NAME, Server};

/// The client's venv, provisioned if missing (the script is idempotent and prints progress).
fn client_python() -> String {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tools.sh");
    let output = Command::new("bash")
        .arg(tools)
        .arg("print-openai-python")
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/tools.sh");
    assert!(
        output.status.success(),
        "the OpenAI Python client could not be provisioned (scripts/tools.sh openai-python)"
    );
    String::from_utf8(output.stdout)
        .expect("a path")
        .trim()
        .to_string()
}

#[tokio::test]
async fn the_official_openai_client_gets_what_the_readme_promises() {
    let python = client_python();
    let server = Server::ready(&[]).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serving/openai_compat.py");
    let mut child = Command::new(&python)
        .arg(script)
        .arg(server.http_url("/v1"))
        .arg(SERVED_NAME)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the client");
    let deadline = Instant::now() + Duration::from_secs(600);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the client did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the client failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log_text()
    );
    assert!(stdout.contains("compat: 12 checks passed"), "{stdout}");
}
