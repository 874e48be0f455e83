//! `serve --dev` as a newcomer runs it: the banner's relay line makes the
//! built-in sandbox text a code to the dev number, and the demo route fans
//! it out to a phone and to the Slack stand-in, both in the inbox.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// Lines of a child's stream, as they come.
fn lines(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Killed and reaped when dropped, so a failing test leaves no server.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demo_route_relays_a_code_to_a_phone_and_slack() {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kratos-phone-courier"))
            .args(["serve", "--dev"])
            .env_clear()
            .env("PHONE_COURIER__SERVER__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = lines(child.0.stdout.take().unwrap());
    let stderr = lines(child.0.stderr.take().unwrap());
    {
        let mut banner = String::new();
        let (sandbox, relay_line) = loop {
            let line = stdout
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("the banner:\n{banner}"));
            banner.push_str(&line);
            banner.push('\n');
            if let Some(rest) = line.trim().strip_prefix("curl -sS http://") {
                if rest.contains("/sandbox/inbound") {
                    let addr = rest.split('/').next().unwrap().to_owned();
                    let body = stdout.recv_timeout(Duration::from_secs(5)).unwrap();
                    break (addr, body);
                }
            }
        };
        let body = relay_line
            .trim()
            .strip_prefix("-d '")
            .and_then(|b| b.strip_suffix('\''))
            .unwrap_or_else(|| panic!("a -d line: {relay_line}"))
            .to_owned();
        let client = reqwest::Client::new();
        // The banner comes once the API listens.
        let sent: serde_json::Value = client
            .post(format!("http://{sandbox}/sandbox/inbound"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(sent["status"], 200, "{sent}");
        assert_eq!(sent["answer"], "<Response/>");
        let mut logs = String::new();
        while logs.matches(" relayed").count() < 2 {
            let line = stderr
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("both targets report:\n{logs}"));
            logs.push_str(&line);
            logs.push('\n');
        }
        let inbox: serde_json::Value = client
            .get(format!("http://{sandbox}/inbox.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sms = &inbox["messages"][0];
        assert_eq!(sms["to"], "+14155550123");
        assert_eq!(sms["from"], "+15005550006");
        assert_eq!(
            sms["body"],
            "MFA code from GitHub:\nYour GitHub code is 482917"
        );
        let hooks: serde_json::Value = client
            .get(format!("http://{sandbox}/sandbox/hooks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(hooks["hooks"][0]["kind"], "slack");
        assert_eq!(hooks["hooks"][0]["name"], "demo");
        let page = client
            .get(format!("http://{sandbox}/inbox"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("Slack demo") && page.contains("482917"));
    }
}
