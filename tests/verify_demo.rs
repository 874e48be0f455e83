//! The verify demo page of `serve --dev` in a real headless Chromium, as a
//! person would use it: open `/verify/demo`, type a number, press "Send
//! code", read the code in the sandbox's inbox page, type it into the
//! second form, press "Check code", and see "approved" — then see the same
//! code refused once it is spent.
//!
//! The browser is driven over the Chrome DevTools Protocol (a websocket;
//! `--remote-debugging-port=0` and the address Chromium prints), with the
//! few commands a click needs: `Page.navigate`, `Runtime.evaluate` and the
//! `Page.loadEventFired` event. Debian's `chromium` package provides the
//! browser (`.ci/run` installs it); without it the test is skipped with a
//! loud line, and fails under `CI=true`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Every wait of this test is bounded by this: a hung browser fails it.
const STEP: Duration = Duration::from_secs(30);

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

/// A child in a process group of its own, which is stopped whole when
/// dropped (Chromium starts helper processes; none may outlive the test).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // The group's id is the child's pid (process_group(0)).
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0.id())])
                .stderr(Stdio::null())
                .status();
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn find_chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}

/// A DevTools session on one page.
struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    session: Option<String>,
    next_id: u64,
    /// Events read while waiting for an answer.
    events: Vec<Value>,
}

impl Page {
    async fn read(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("the browser answers")
                .expect("the DevTools connection stays open")
                .expect("a DevTools message");
            if let Message::Text(text) = msg {
                return serde_json::from_str(&text).expect("DevTools speaks JSON");
            }
        }
    }

    /// One command; its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("the command is sent");
        loop {
            let v = self.read().await;
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    async fn wait_event(&mut self, method: &str) {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            self.events.remove(i);
            return;
        }
        loop {
            let v = self.read().await;
            if v["method"] == method {
                return;
            }
        }
    }

    /// Runs `script` in the page and waits for the page it loads.
    async fn act_and_load(&mut self, script: &str) {
        self.events.clear();
        self.eval(script).await;
        self.wait_event("Page.loadEventFired").await;
    }

    async fn goto(&mut self, url: &str) {
        self.events.clear();
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_event("Page.loadEventFired").await;
    }

    async fn eval(&mut self, script: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": script, "returnByValue": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{script}: {r}");
        r["result"]["value"].clone()
    }
}

#[tokio::test]
async fn the_demo_page_sends_a_code_and_approves_it_once_in_a_real_browser() {
    let Some(chromium) = find_chromium() else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        if ci {
            panic!("chromium is not installed, and CI=true: this test must run in CI (apt-get install chromium; .ci/run does it)");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n======== SKIPPED: chromium not installed (apt-get install chromium) ========\n"
        );
        return;
    };

    // The service, as a newcomer starts it.
    let mut service = Group({
        use std::os::unix::process::CommandExt;
        Command::new(env!("CARGO_BIN_EXE_kratos-phone-courier"))
            .args(["serve", "--dev"])
            .env_clear()
            .env("PHONE_COURIER__SERVER__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    });
    let banner = lines(service.0.stdout.take().unwrap());
    let (mut demo, mut inbox) = (None, None);
    while demo.is_none() || inbox.is_none() {
        let line = banner.recv_timeout(STEP).expect("the dev banner");
        let url = |label: &str| {
            line.trim()
                .strip_prefix(label)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        };
        demo = demo.or_else(|| url("Verify:"));
        inbox = inbox.or_else(|| url("Inbox:"));
    }
    let (demo, inbox) = (demo.unwrap(), inbox.unwrap());

    // The browser, with a profile of its own.
    let profile = std::env::temp_dir().join(format!(
        "kpc-chromium-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let mut browser = Group({
        use std::os::unix::process::CommandExt;
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // Containers give /dev/shm 64 MB: too little for a renderer.
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap()
    });
    let stderr = lines(browser.0.stderr.take().unwrap());
    let ws_url = loop {
        let line = stderr
            .recv_timeout(STEP)
            .expect("chromium prints its DevTools address");
        if let Some(url) = line.strip_prefix("DevTools listening on ") {
            break url.trim().to_owned();
        }
    };
    let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(&ws_url))
        .await
        .expect("DevTools answers")
        .expect("a DevTools connection");
    let mut page = Page {
        ws,
        session: None,
        next_id: 0,
        events: Vec::new(),
    };
    let target = page
        .call("Target.createTarget", json!({"url": "about:blank"}))
        .await;
    let attached = page
        .call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .await;
    page.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
    page.call("Page.enable", json!({})).await;

    // 1. Send a code.
    page.goto(&demo).await;
    assert_eq!(page.eval("document.title").await, "Verify API demo");
    page.act_and_load(
        "document.querySelector('#request input[name=to]').value = '+14155550123';
         document.querySelector('#request button').click();",
    )
    .await;
    let status = page
        .eval("document.getElementById('status').textContent")
        .await;
    let result = page
        .eval("document.getElementById('result').textContent")
        .await;
    assert_eq!(status, "pending", "{result}");

    // 2. Read it in the sandbox's inbox, as a person would.
    page.goto(&inbox).await;
    let text = page.eval("document.body.innerText").await;
    let text = text.as_str().unwrap();
    let code: String = text
        .split("Your verification code is ")
        .nth(1)
        .unwrap_or_else(|| panic!("the code in the inbox:\n{text}"))
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(code.len(), 6, "{text}");

    // 3. Check it: approved, once.
    page.goto(&demo).await;
    let check = format!(
        "document.querySelector('#check input[name=to]').value = '+14155550123';
         document.querySelector('#check input[name=code]').value = '{code}';
         document.querySelector('#check button').click();"
    );
    page.act_and_load(&check).await;
    let status = page
        .eval("document.getElementById('status').textContent")
        .await;
    let result = page
        .eval("document.getElementById('result').textContent")
        .await;
    assert_eq!(status, "approved", "{result}");
    page.act_and_load(&check).await;
    let status = page
        .eval("document.getElementById('status').textContent")
        .await;
    assert_eq!(status, "no_pending_code");

    // Close the browser as a person would, then make sure of it.
    page.session = None;
    let _ = tokio::time::timeout(STEP, page.call("Browser.close", json!({}))).await;
    drop(browser);
    drop(service);
    let _ = std::fs::remove_dir_all(&profile);
}

/// A few random hex digits, so two runs never share a profile folder.
fn rand_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    format!("{:x}", h.finish())
}
