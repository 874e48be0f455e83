//! `serve --dev` as a newcomer runs it: the banner's relay line makes the
//! built-in sandbox text a code to the dev number, and the demo route fans
//! it out to a phone and to the Slack stand-in, both in the inbox. And
//! `serve --dev --failover`: what each of its two sandboxes received, what
//! Kratos was told and what `/metrics` counted.

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
        // The banner sends a newcomer to the page that walks through every
        // magic number (tests/docs.rs checks the page names them all).
        let page = "docs/src/try-it.md";
        assert!(banner.contains(page), "{page} in the banner:\n{banner}");
        assert!(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(page)
                .is_file(),
            "{page} exists"
        );
        for number in ["+14155550171", "+14155550191", "+15005550009"] {
            assert!(banner.contains(number), "{number} in the banner:\n{banner}");
        }
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

/// The address in the first `http://ADDR/` of `line`.
fn addr_in(line: &str) -> String {
    let rest = &line[line.find("http://").expect("a URL") + "http://".len()..];
    rest.split('/').next().unwrap().to_owned()
}

async fn get_json(client: &reqwest::Client, url: String) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The create requests a sandbox received, oldest first: the status it
/// answered and the form it was sent.
async fn creates(client: &reqwest::Client, sandbox: &str) -> Vec<(u64, Vec<(String, String)>)> {
    let requests = get_json(client, format!("http://{sandbox}/requests.json")).await;
    requests["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "POST")
        .map(|r| {
            let form = serde_json::from_value(r["form"].clone()).unwrap();
            (r["answered_status"].as_u64().unwrap(), form)
        })
        .collect()
}

fn sms_form(to: &str, code: &str, callback: &str) -> Vec<(String, String)> {
    [
        ("To", to),
        ("From", "+15005550006"),
        ("Body", &format!("Your login code is: {code}")),
        ("StatusCallback", callback),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

#[tokio::test]
async fn failover_mode_passes_every_other_message_to_the_signalwire_sandbox() {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kratos-phone-courier"))
            .args(["serve", "--dev", "--failover"])
            .env_clear()
            .env("PHONE_COURIER__SERVER__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = lines(child.0.stdout.take().unwrap());
    let mut banner = String::new();
    let mut api = None;
    let mut inboxes = Vec::new();
    // The metrics line ends the part of the banner this test reads.
    loop {
        let line = stdout
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the banner:\n{banner}"));
        banner.push_str(&line);
        banner.push('\n');
        let line = line.trim();
        if line.starts_with("API:") {
            api = Some(addr_in(line));
        } else if line.starts_with("Inbox:") {
            inboxes.push(addr_in(line));
        } else if line.starts_with("Metrics:") {
            break;
        }
    }
    let api = api.unwrap_or_else(|| panic!("an API line:\n{banner}"));
    let [primary, secondary] =
        <[String; 2]>::try_from(inboxes).unwrap_or_else(|_| panic!("two inboxes:\n{banner}"));
    assert!(
        banner.contains("answers every other request with a 503"),
        "{banner}"
    );

    let client = reqwest::Client::new();
    // Each in a block of its own: limits.sms.prefix stays out of the way.
    let sends = [
        ("+14155550101", "100001"),
        ("+14155551102", "100002"),
        ("+14155552103", "100003"),
        ("+14155553104", "100004"),
    ];
    let mut sids = Vec::new();
    for (to, code) in sends {
        let answer = client
            .post(format!("http://{api}/v1/sms"))
            .json(&serde_json::json!({
                "recipient": to,
                "body": format!("Your login code is: {code}"),
                "template_type": "login_code_valid",
                "template_data": {"login_code": code},
            }))
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        sids.push(body["sid"].as_str().unwrap().to_owned());
    }

    // The primary fails the 1st and 3rd create (503, Twilio's error body)
    // and takes the 2nd and 4th; the secondary carries the 1st and 3rd.
    let twilio_cb = format!("http://{api}/v1/twilio/status");
    let signalwire_cb = format!("http://{api}/v1/signalwire/status");
    let form = |i: usize, cb: &str| sms_form(sends[i].0, sends[i].1, cb);
    assert_eq!(
        creates(&client, &primary).await,
        vec![
            (503, form(0, &twilio_cb)),
            (201, form(1, &twilio_cb)),
            (503, form(2, &twilio_cb)),
            (201, form(3, &twilio_cb)),
        ]
    );
    assert_eq!(
        creates(&client, &secondary).await,
        vec![
            (201, form(0, &signalwire_cb)),
            (201, form(2, &signalwire_cb))
        ]
    );
    // Each message accepted once in total, under the sid Kratos was given.
    let inbox = |sandbox: String| {
        let client = client.clone();
        async move {
            let inbox = get_json(&client, format!("http://{sandbox}/inbox.json")).await;
            let mut got: Vec<(String, String)> = inbox["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["to"].as_str().unwrap().to_owned(),
                        m["sid"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            got.sort();
            got
        }
    };
    let pair = |i: usize| (sends[i].0.to_owned(), sids[i].clone());
    assert_eq!(inbox(primary.clone()).await, vec![pair(1), pair(3)]);
    assert_eq!(inbox(secondary.clone()).await, vec![pair(0), pair(2)]);
    assert!(sids[1].starts_with("SM"), "a Twilio sid: {}", sids[1]);
    assert_eq!(sids[0].len(), 36, "a SignalWire sid is a UUID: {}", sids[0]);

    let metrics = client
        .get(format!("http://{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"phone_courier_provider_failovers_total{from="twilio",channel="sms"} 2"#,
        r#"phone_courier_provider_failovers_total{from="signalwire",channel="sms"} 0"#,
        r#"phone_courier_provider_requests_total{provider="twilio",channel="sms",outcome="transient"} 2"#,
        r#"phone_courier_provider_requests_total{provider="twilio",channel="sms",outcome="accepted"} 2"#,
        r#"phone_courier_provider_requests_total{provider="signalwire",channel="sms",outcome="accepted"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// A newcomer tries the sandbox's magic numbers, all in +1 415 555 01xx
/// (one block of 1000): none is refused by `limits.sms.prefix`, and each
/// reaches the sandbox.
#[tokio::test]
async fn the_sandboxs_magic_numbers_never_meet_the_prefix_limit() {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kratos-phone-courier"))
            .args(["serve", "--dev"])
            .env_clear()
            .env("PHONE_COURIER__SERVER__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = lines(child.0.stdout.take().unwrap());
    let mut banner = String::new();
    let mut api = None;
    let mut inbox = None;
    loop {
        let line = stdout
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the banner:\n{banner}"));
        banner.push_str(&line);
        banner.push('\n');
        let line = line.trim();
        if line.starts_with("API:") {
            api = Some(addr_in(line));
        } else if line.starts_with("Inbox:") && inbox.is_none() {
            inbox = Some(addr_in(line));
        } else if line.starts_with("Verify:") {
            break;
        }
    }
    let (api, sandbox) = (api.unwrap(), inbox.unwrap());
    let client = reqwest::Client::new();
    // +14155550100..114: 15 codes, more than the block's burst of 10 (and
    // none a number the sandbox's Lookup refuses).
    for i in 0..15 {
        let to = format!("+141555501{i:02}");
        let answer = client
            .post(format!("http://{api}/v1/sms"))
            .json(&serde_json::json!({
                "recipient": to,
                "body": format!("Your login code is: 2000{i:02}"),
                "template_type": "login_code_valid",
                "template_data": {"login_code": format!("2000{i:02}")},
                // Each from an address of its own: only the block is shared.
                "request_headers": {"X-Forwarded-For": [format!("198.51.100.{i}")]},
            }))
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(status, 200, "{to}: {body}");
    }
    assert_eq!(creates(&client, &sandbox).await.len(), 15);
}

/// `serve --dev` turns WhatsApp on for one demo country (Brazil): the
/// banner's WhatsApp example goes to the sandbox as the (made-up)
/// authentication template with the code as variable 1, from the dev
/// sender's `whatsapp:` address, and no `Body`.
#[tokio::test]
async fn dev_mode_sends_the_banners_brazilian_code_by_whatsapp() {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kratos-phone-courier"))
            .args(["serve", "--dev"])
            .env_clear()
            .env("PHONE_COURIER__SERVER__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = lines(child.0.stdout.take().unwrap());
    let mut banner = String::new();
    let mut api = None;
    let mut inbox = None;
    // The example whose recipient is Brazilian ends the part read here.
    let example = loop {
        let line = stdout
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the banner:\n{banner}"));
        banner.push_str(&line);
        banner.push('\n');
        let line = line.trim();
        if line.starts_with("API:") {
            api = Some(addr_in(line));
        } else if line.starts_with("Inbox:") && inbox.is_none() {
            inbox = Some(addr_in(line));
        } else if let Some(json) = line.strip_prefix("-d '") {
            let json: serde_json::Value =
                serde_json::from_str(json.trim_end_matches('\'')).unwrap();
            if json["recipient"]
                .as_str()
                .is_some_and(|r| r.starts_with("+55"))
            {
                break json;
            }
        }
    };
    assert!(banner.contains("goes by WhatsApp"), "{banner}");
    let (api, sandbox) = (api.unwrap(), inbox.unwrap());
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("http://{api}/v1/sms"))
        .json(&example)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel"], "whatsapp", "{body}");
    let to = example["recipient"].as_str().unwrap();
    let expected: Vec<(String, String)> = [
        ("To", format!("whatsapp:{to}")),
        ("From", "whatsapp:+15005550006".to_owned()),
        (
            "ContentSid",
            "HX00000000000000000000000000000de5".to_owned(),
        ),
        ("ContentVariables", r#"{"1":"482917"}"#.to_owned()),
        ("StatusCallback", format!("http://{api}/v1/twilio/status")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(creates(&client, &sandbox).await, vec![(201, expected)]);
}
