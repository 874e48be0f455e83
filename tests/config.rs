//! Configuration: layering, secrets from files, the Twilio variables, and
//! errors that name the key. Also the `check-config` command as a user runs it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use kratos_phone_courier::config::{
    Config, ConfigError, LineAction, LookupOnError, Settings, SmsSender, Sources,
};
use secrecy::ExposeSecret;

const SID: &str = "AC0123456789abcdef0123456789abcdef";

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn good() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PHONE_COURIER__AUTH__BASIC__USERNAME", "kratos"),
        ("PHONE_COURIER__AUTH__BASIC__PASSWORD", "pw-1"),
        ("PHONE_COURIER__TWILIO__ACCOUNT_SID", SID),
        ("PHONE_COURIER__TWILIO__AUTH_TOKEN", "tok-1"),
        ("PHONE_COURIER__TWILIO__FROM", "+15005550006"),
    ]
}

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load(&Sources {
        file: None,
        env: env(pairs),
    })
}

fn without(key: &str) -> Vec<(&'static str, &'static str)> {
    good().into_iter().filter(|(k, _)| *k != key).collect()
}

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = good();
    v.extend_from_slice(extra);
    v
}

fn key_of(e: ConfigError) -> String {
    match e {
        ConfigError::Invalid { key, .. } => key,
        ConfigError::Load(m) => format!("load: {m}"),
    }
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kpc-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn defaults_plus_environment() {
    let c = load(&good()).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:4470");
    assert_eq!(c.server.max_body_bytes, 65536);
    assert_eq!(c.twilio.base_url, "https://api.twilio.com");
    assert_eq!(c.twilio.timeout.as_millis(), 8000);
    assert_eq!(
        c.twilio.sms_sender,
        SmsSender::From("+15005550006".parse().unwrap())
    );
    assert_eq!(c.twilio.voice_from.as_deref(), Some("+15005550006"));
    assert_eq!(c.voice.language, "en-US");
    assert_eq!(c.twilio.username, SID);
    assert_eq!(c.twilio.password.expose_secret(), "tok-1");
}

#[test]
fn errors_name_the_key() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            without("PHONE_COURIER__AUTH__BASIC__PASSWORD"),
            "auth.basic",
        ),
        (
            good()
                .into_iter()
                .filter(|(k, _)| !k.starts_with("PHONE_COURIER__AUTH"))
                .collect(),
            "auth",
        ),
        (
            without("PHONE_COURIER__TWILIO__ACCOUNT_SID"),
            "twilio.account_sid",
        ),
        (
            with(&[("PHONE_COURIER__TWILIO__ACCOUNT_SID", "AC123")]),
            "twilio.account_sid",
        ),
        (
            without("PHONE_COURIER__TWILIO__AUTH_TOKEN"),
            "twilio.auth_token",
        ),
        (without("PHONE_COURIER__TWILIO__FROM"), "twilio.from"),
        (
            with(&[("PHONE_COURIER__TWILIO__FROM", "5005550006")]),
            "twilio.from",
        ),
        (
            with(&[("PHONE_COURIER__TWILIO__VOICE_FROM", "nope")]),
            "twilio.voice_from",
        ),
        (
            with(&[("PHONE_COURIER__TWILIO__MESSAGING_SERVICE_SID", "MGxyz")]),
            "twilio.messaging_service_sid",
        ),
        (
            with(&[(
                "PHONE_COURIER__TWILIO__API_KEY_SID",
                "SK0123456789abcdef0123456789abcdef",
            )]),
            "twilio.api_key_secret",
        ),
        (
            with(&[("PHONE_COURIER__TWILIO__BASE_URL", "ftp://x")]),
            "twilio.base_url",
        ),
        (
            with(&[("PHONE_COURIER__TWILIO__TIMEOUT_MS", "0")]),
            "twilio.timeout_ms",
        ),
        (
            with(&[("PHONE_COURIER__SERVER__LISTEN", "localhost")]),
            "server.listen",
        ),
        (
            with(&[("PHONE_COURIER__SERVER__MAX_BODY_BYTES", "10")]),
            "server.max_body_bytes",
        ),
        (with(&[("PHONE_COURIER__LOG__FORMAT", "xml")]), "log.format"),
        (
            with(&[("PHONE_COURIER__VOICE__LANGUAGE", "english!")]),
            "voice.language",
        ),
        (
            with(&[("PHONE_COURIER__AUTH__API_KEY__HEADER", "X Bad")]),
            "auth.api_key",
        ),
        // The old list of trusted headers is refused, pointing at its
        // replacement, rather than silently ignored.
        (
            with(&[("PHONE_COURIER__LIMITS__IP_HEADERS", "True-Client-Ip")]),
            "limits.ip_headers",
        ),
        (
            with(&[("PHONE_COURIER__LIMITS__CLIENT_IP__TRUSTED_HOPS", "0")]),
            "limits.client_ip.trusted_hops",
        ),
        (
            with(&[("PHONE_COURIER__LIMITS__CLIENT_IP__HEADER", "Bad Header")]),
            "limits.client_ip.header",
        ),
        (
            with(&[("PHONE_COURIER__LIMITS__PREFIX_HIDDEN_DIGITS", "0")]),
            "limits.prefix_hidden_digits",
        ),
        (
            with(&[("PHONE_COURIER__LIMITS__SMS__UNKNOWN_IP__BURST", "0")]),
            "limits.sms.unknown_ip.burst",
        ),
        (
            with(&[("PHONE_COURIER__LIMITS__VOICE__PREFIX__PER_HOUR", "3600001")]),
            "limits.voice.prefix.per_hour",
        ),
    ];
    for (pairs, key) in cases {
        let got = key_of(load(&pairs).unwrap_err());
        assert_eq!(got, key, "{pairs:?}");
    }
    // A typo in a key is refused, naming it.
    let e = load(&with(&[("PHONE_COURIER__TWILIO__AUTH_TOKN", "x")])).unwrap_err();
    assert!(e.to_string().contains("auth_tokn"), "{e}");
}

#[test]
fn auth_can_be_disabled_explicitly() {
    let pairs: Vec<_> = good()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("PHONE_COURIER__AUTH"))
        .chain([("PHONE_COURIER__AUTH__DISABLED", "true")])
        .collect();
    let c = load(&pairs).unwrap();
    assert!(c.auth.disabled);
}

#[test]
fn twilio_variables_are_honoured_when_config_is_silent() {
    let mut pairs = without("PHONE_COURIER__TWILIO__ACCOUNT_SID");
    pairs.retain(|(k, _)| *k != "PHONE_COURIER__TWILIO__AUTH_TOKEN");
    pairs.push(("TWILIO_ACCOUNT_SID", SID));
    pairs.push(("TWILIO_AUTH_TOKEN", "from-env"));
    let c = load(&pairs).unwrap();
    assert_eq!(c.twilio.account_sid, SID);
    assert_eq!(c.twilio.password.expose_secret(), "from-env");
    // The configuration wins over them.
    let mut pairs = good();
    pairs.push(("TWILIO_AUTH_TOKEN", "from-env"));
    assert_eq!(
        load(&pairs).unwrap().twilio.password.expose_secret(),
        "tok-1"
    );
}

#[test]
fn secrets_can_come_from_files() {
    let d = tempdir("secrets");
    std::fs::write(d.join("token"), "file-token\n").unwrap();
    std::fs::write(d.join("pw"), "file-pw").unwrap();
    let token = d.join("token").display().to_string();
    let pw = d.join("pw").display().to_string();
    let mut pairs: Vec<(String, String)> = without("PHONE_COURIER__TWILIO__AUTH_TOKEN")
        .into_iter()
        .filter(|(k, _)| *k != "PHONE_COURIER__AUTH__BASIC__PASSWORD")
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    pairs.push((
        "PHONE_COURIER__TWILIO__AUTH_TOKEN_FILE".into(),
        token.clone(),
    ));
    pairs.push(("PHONE_COURIER__AUTH__BASIC__PASSWORD_FILE".into(), pw));
    let env: HashMap<_, _> = pairs.iter().cloned().collect();
    let c = Config::load(&Sources {
        file: None,
        env: env.clone(),
    })
    .unwrap();
    assert_eq!(c.twilio.password.expose_secret(), "file-token");
    assert_eq!(c.auth.basic.unwrap().password.expose_secret(), "file-pw");

    let mut both = env.clone();
    both.insert("PHONE_COURIER__TWILIO__AUTH_TOKEN".into(), "inline".into());
    let e = Config::load(&Sources {
        file: None,
        env: both,
    })
    .unwrap_err();
    assert_eq!(key_of(e), "twilio.auth_token");

    let mut missing = env;
    missing.insert(
        "PHONE_COURIER__TWILIO__AUTH_TOKEN_FILE".into(),
        "/nonexistent/token".into(),
    );
    let e = Config::load(&Sources {
        file: None,
        env: missing,
    })
    .unwrap_err();
    assert_eq!(key_of(e), "twilio.auth_token_file");
}

#[test]
fn files_in_toml_and_yaml_layer_under_the_environment() {
    let d = tempdir("files");
    let toml = d.join("c.toml");
    std::fs::write(
        &toml,
        format!(
            "[server]\nlisten = \"0.0.0.0:8080\"\n[auth.basic]\nusername = \"k\"\npassword = \"p\"\n\
             [twilio]\naccount_sid = \"{SID}\"\nauth_token = \"t\"\nfrom = \"+15005550006\"\ntimeout_ms = 5000\n"
        ),
    )
    .unwrap();
    let yaml = d.join("c.yaml");
    std::fs::write(
        &yaml,
        format!(
            "server:\n  listen: 0.0.0.0:8080\nauth:\n  basic:\n    username: k\n    password: p\n\
             twilio:\n  account_sid: {SID}\n  auth_token: t\n  from: \"+15005550006\"\n  timeout_ms: 5000\n"
        ),
    )
    .unwrap();
    for file in [toml, yaml] {
        let c = Config::load(&Sources {
            file: Some(file.clone()),
            env: env(&[("PHONE_COURIER__TWILIO__TIMEOUT_MS", "3000")]),
        })
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080", "{file:?}");
        assert_eq!(c.twilio.timeout.as_millis(), 3000, "env wins: {file:?}");
        assert_eq!(
            c.twilio.sms_sender,
            SmsSender::From("+15005550006".parse().unwrap())
        );
    }
    let e = Config::load(&Sources {
        file: Some(d.join("missing.toml")),
        env: HashMap::new(),
    })
    .unwrap_err();
    assert!(e.to_string().contains("missing.toml"), "{e}");
}

#[test]
fn the_default_file_documents_every_key() {
    // Every key line in config/default.toml is preceded by a comment.
    let text = kratos_phone_courier::config::DEFAULT_TOML;
    let mut previous = "";
    for line in text.lines() {
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') && !t.starts_with('[') {
            assert!(
                previous.starts_with('#'),
                "`{t}` in config/default.toml has no comment above it"
            );
        }
        previous = t;
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kratos-phone-courier"));
    c.env_clear();
    c
}

/// `serve` expected to refuse to start: its output once it exits. Should it
/// start serving instead, it is killed after 30 s and the test fails, rather
/// than the test waiting forever and the server outliving it.
fn serve_output(mut command: Command) -> std::process::Output {
    use std::process::Stdio;
    let child = command
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // Not reaped yet (the waiting thread reaps it), so the pid is
            // still this child's.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("`serve` was expected to exit, and was still running after 30 s");
        }
    }
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let out = bin()
        .arg("check-config")
        .envs(good())
        .env(
            "PHONE_COURIER__TWILIO__AUTH_TOKEN",
            "super-secret-token-8c1f",
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["twilio"]["password"], "[redacted]");
    assert_eq!(printed["auth"]["basic"]["password"], "[redacted]");
    assert_eq!(printed["twilio"]["account_sid"], SID);
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("super-secret-token-8c1f"));
    assert!(!all.contains("pw-1"));
}

#[test]
fn check_config_fails_naming_the_key() {
    let out = bin()
        .arg("check-config")
        .envs(without("PHONE_COURIER__TWILIO__FROM"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("`twilio.from`"), "{stderr}");
}

#[test]
fn serve_refuses_to_start_without_auth_and_names_the_key() {
    let mut c = bin();
    c.env("PHONE_COURIER__TWILIO__ACCOUNT_SID", SID)
        .env("PHONE_COURIER__TWILIO__AUTH_TOKEN", "t")
        .env("PHONE_COURIER__TWILIO__FROM", "+15005550006");
    let out = serve_output(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`auth`"));
}

#[test]
fn serve_names_server_listen_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut c = bin();
    c.envs(good()).env("PHONE_COURIER__SERVER__LISTEN", &addr);
    let out = serve_output(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`server.listen`"));
}

#[test]
fn version_and_help() {
    let out = bin().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("kratos-phone-courier "));
    let out = bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "check-config", "--config"] {
        assert!(help.contains(word), "{help}");
    }
}

#[test]
fn debug_output_of_the_configuration_redacts_secrets() {
    // What a panic or an error would print with {:?}.
    let c = load(&with(&[(
        "PHONE_COURIER__TWILIO__AUTH_TOKEN",
        "tok-debug-5d2e",
    )]))
    .unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("tok-debug-5d2e"), "{debug}");
    assert!(!debug.contains("pw-1"), "{debug}");
}

#[test]
fn keys_are_parsed_into_their_types_and_kept() {
    let c = load(&with(&[
        ("PHONE_COURIER__AUTH__API_KEY__HEADER", "X-Courier-Key"),
        ("PHONE_COURIER__AUTH__API_KEY__VALUE", "key-1"),
        ("PHONE_COURIER__POLICY__SMS__ALLOWED_COUNTRIES", "us, de"),
        ("PHONE_COURIER__POLICY__VOICE__DENIED_COUNTRIES", "GB"),
        (
            "PHONE_COURIER__TEST_NUMBERS__NUMBERS",
            " +14155550100 ,+4915112345678",
        ),
        ("PHONE_COURIER__VOICE__LANGUAGE", "EN-us"),
    ]))
    .unwrap();
    let key = c.auth.api_key.unwrap();
    assert_eq!(key.header, http::HeaderName::from_static("x-courier-key"));
    assert_eq!(c.policy.sms.allowed_countries, ["US", "DE"]);
    assert_eq!(c.policy.voice.denied_countries, ["GB"]);
    assert_eq!(c.test_numbers, ["+14155550100", "+4915112345678"]);
    assert_eq!(c.voice.language, "en-US");
    assert!(c.voice.sentences.contains_key("en-US"));
    // An alphanumeric sender sends SMS but cannot place calls: so no voice
    // fallback either. The default asks for it, and a set-up that worked
    // before must still start: fallback is off, and says why (a warning at
    // start).
    let c = load(&with(&[("PHONE_COURIER__TWILIO__FROM", "Acme")])).unwrap();
    assert_eq!(
        c.twilio.sms_sender,
        SmsSender::From("Acme".parse().unwrap())
    );
    assert_eq!(c.twilio.voice_from, None);
    assert!(!c.fallback.any() && c.fallback.no_caller_id);
    let c = load(&with(&[
        ("PHONE_COURIER__TWILIO__FROM", "Acme"),
        ("PHONE_COURIER__FALLBACK__VOICE_ON", ""),
    ]))
    .unwrap();
    assert!(!c.fallback.any() && !c.fallback.no_caller_id);
    // Both fallbacks by default; an unknown one names the key.
    let c = load(&good()).unwrap();
    assert!(c.fallback.landline && c.fallback.undelivered);
    let e = load(&with(&[(
        "PHONE_COURIER__FALLBACK__VOICE_ON",
        "landline,sms",
    )]))
    .unwrap_err();
    assert_eq!(key_of(e), "fallback.voice_on");
}

#[test]
fn server_drain_is_a_bounded_duration() {
    let c = load(&good()).unwrap();
    assert_eq!(c.server.drain, std::time::Duration::from_secs(5));
    let c = load(&with(&[("PHONE_COURIER__SERVER__DRAIN_MS", "0")])).unwrap();
    assert_eq!(c.server.drain, std::time::Duration::ZERO);
    let e = load(&with(&[("PHONE_COURIER__SERVER__DRAIN_MS", "60001")])).unwrap_err();
    assert_eq!(key_of(e), "server.drain_ms");
    load(&with(&[("PHONE_COURIER__SERVER__DRAIN_MS", "60000")])).unwrap();
}

#[test]
fn keys_that_depend_on_each_other_are_checked_together() {
    // The provider timeout stays under Kratos's 10 s, with a second to answer.
    load(&with(&[("PHONE_COURIER__TWILIO__TIMEOUT_MS", "9000")])).unwrap();
    let e = load(&with(&[("PHONE_COURIER__TWILIO__TIMEOUT_MS", "9001")])).unwrap_err();
    assert!(e.to_string().contains("Kratos"), "{e}");
    assert_eq!(key_of(e), "twilio.timeout_ms");

    // The dedup window covers the first try and 5 retries, each up to the
    // provider timeout plus a second: 6 × (1000 + 150) = 6900.
    let timeout = ("PHONE_COURIER__TWILIO__TIMEOUT_MS", "150");
    load(&with(&[
        timeout,
        ("PHONE_COURIER__DEDUP__WINDOW_MS", "6900"),
    ]))
    .unwrap();
    let e = load(&with(&[
        timeout,
        ("PHONE_COURIER__DEDUP__WINDOW_MS", "6899"),
    ]))
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("6900") && text.contains("twilio.timeout_ms"),
        "{text}"
    );
    assert_eq!(key_of(e), "dedup.window_ms");
    // With the default timeout (8 s) the bound is 54 s.
    let e = load(&with(&[("PHONE_COURIER__DEDUP__WINDOW_MS", "53999")])).unwrap_err();
    assert_eq!(key_of(e), "dedup.window_ms");

    // Caps stay where `used × 100` and `cap × warn_percent` fit in 32 bits.
    for key in ["daily_total", "daily_per_country"] {
        let var = format!("PHONE_COURIER__BUDGET__{}", key.to_uppercase());
        let mut env = env(&good());
        env.insert(var.clone(), "42949672".into());
        let sources = Sources {
            file: None,
            env: env.clone(),
        };
        Config::load(&sources).unwrap();
        env.insert(var, "42949673".into());
        let e = Config::load(&Sources { file: None, env }).unwrap_err();
        assert_eq!(key_of(e), format!("budget.{key}"));
    }

    // Status callbacks are signed with the auth token: an API key alone
    // cannot verify them.
    let api_key_only: Vec<_> = with(&[
        (
            "PHONE_COURIER__TWILIO__API_KEY_SID",
            "SK0123456789abcdef0123456789abcdef",
        ),
        ("PHONE_COURIER__TWILIO__API_KEY_SECRET", "key-secret"),
        (
            "PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL",
            "https://courier.example.com",
        ),
    ])
    .into_iter()
    .filter(|(k, _)| *k != "PHONE_COURIER__TWILIO__AUTH_TOKEN")
    .collect();
    let e = load(&api_key_only).unwrap_err();
    assert_eq!(key_of(e), "status_callback.public_url");
}

#[test]
fn the_defaults_pass_every_check() {
    // The compiled-in values, with only what has no default added.
    let c = load(&good()).unwrap();
    assert_eq!(c.dedup.window.as_millis(), 600_000);
    assert_eq!(c.budget.daily_total, 10_000);
}

/// Writes `text` to a config file in its own directory and loads it.
fn load_file(case: &str, name: &str, text: &[u8], pairs: &[(&str, &str)]) -> ConfigError {
    let d = tempdir(case);
    let file = d.join(name);
    std::fs::write(&file, text).unwrap();
    Config::load(&Sources {
        file: Some(file),
        env: env(pairs),
    })
    .unwrap_err()
}

#[test]
fn a_file_that_does_not_parse_is_reported_by_position_never_by_its_line() {
    let secret = "tok-5e1b-in-a-broken-line";
    // TOML: an unterminated string on line 3.
    let toml = format!("[twilio]\naccount_sid = \"{SID}\"\nauth_token = \"{secret}\n");
    let e = load_file("broken-toml", "c.toml", toml.as_bytes(), &good()).to_string();
    assert!(!e.contains(secret) && !e.contains("tok-5e1b"), "{e}");
    assert!(e.contains("c.toml") && e.contains("line 3"), "{e}");
    assert!(e.contains("TOML"), "{e}");
    // A duplicate key: the parser points at the second line.
    let dup = format!("[auth.basic]\npassword = \"a\"\npassword = \"{secret}\"\n");
    let e = load_file("dup-toml", "c.toml", dup.as_bytes(), &good()).to_string();
    assert!(!e.contains(secret), "{e}");
    assert!(e.contains("line 3") && e.contains("duplicate key"), "{e}");
    // YAML: the same mistake.
    let yaml = format!("twilio:\n  account_sid: {SID}\n  auth_token: \"{secret}\n");
    let e = load_file("broken-yaml", "c.yaml", yaml.as_bytes(), &good()).to_string();
    assert!(!e.contains(secret) && !e.contains("tok-5e1b"), "{e}");
    assert!(e.contains("c.yaml") && e.contains("line 3"), "{e}");
}

#[test]
fn a_value_of_the_wrong_type_is_never_quoted() {
    let secret = "pw-8d0c-of-the-wrong-type";
    // A secret key given a table: the key is named, the value is not.
    let toml = format!("[twilio]\nauth_token = {{ token = \"{secret}\" }}\n");
    let e = load_file(
        "type-table",
        "c.toml",
        toml.as_bytes(),
        &without("PHONE_COURIER__TWILIO__AUTH_TOKEN"),
    );
    let text = e.to_string();
    assert!(!text.contains(secret), "{text}");
    assert!(text.contains("twilio.auth_token"), "{text}");
    // A secret where a table of secrets was expected, from a file and from
    // the environment.
    let mut pairs: Vec<_> = good()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("PHONE_COURIER__AUTH__BASIC__"))
        .collect();
    let toml = format!("[auth]\nbasic = \"kratos:{secret}\"\n");
    let e = load_file("type-string", "c.toml", toml.as_bytes(), &pairs).to_string();
    assert!(!e.contains(secret) && e.contains("auth.basic"), "{e}");
    pairs.push(("PHONE_COURIER__AUTH__BASIC", secret));
    let e = load(&pairs).unwrap_err().to_string();
    assert!(!e.contains(secret) && e.contains("auth.basic"), "{e}");
    // A token pasted into the wrong key.
    let e = load(&with(&[("PHONE_COURIER__SERVER__MAX_BODY_BYTES", secret)]))
        .unwrap_err()
        .to_string();
    assert!(!e.contains(secret), "{e}");
    assert!(
        e.contains("server.max_body_bytes") && e.contains("a string"),
        "{e}"
    );
}

#[test]
fn a_secret_file_is_never_quoted() {
    let d = tempdir("secret-files");
    let check = |name: &str, content: &[u8]| {
        let path = d.join(name);
        std::fs::write(&path, content).unwrap();
        let path = path.display().to_string();
        let pairs: Vec<(&str, &str)> = without("PHONE_COURIER__TWILIO__AUTH_TOKEN")
            .into_iter()
            .chain([("PHONE_COURIER__TWILIO__AUTH_TOKEN_FILE", path.as_str())])
            .collect();
        let e = load(&pairs).unwrap_err();
        let text = e.to_string();
        assert_eq!(key_of(e), "twilio.auth_token_file");
        assert!(text.contains(name), "{text}");
        text
    };
    // Not UTF-8: the content is not described, let alone quoted.
    let text = check("latin1", b"tok-3a9f-\xe9\xe9\n");
    assert!(!text.contains("tok-3a9f"), "{text}");
    check("empty", b"\n");
}

#[test]
fn check_config_prints_the_typed_values_as_they_were_written() {
    let out = bin()
        .arg("check-config")
        .envs(good())
        .env("PHONE_COURIER__AUTH__API_KEY__HEADER", "X-Api-Key")
        .env("PHONE_COURIER__AUTH__API_KEY__VALUE", "key-secret-1c4e")
        .env("PHONE_COURIER__POLICY__SMS__ALLOWED_COUNTRIES", "us")
        .env("PHONE_COURIER__TEST_NUMBERS__NUMBERS", "+14155550100")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains("key-secret-1c4e"));
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["server"]["drain_ms"], 5000);
    assert_eq!(printed["dedup"]["window_ms"], 600000);
    assert_eq!(printed["twilio"]["timeout_ms"], 8000);
    assert_eq!(printed["twilio"]["sms_sender"]["from"], "+15005550006");
    assert_eq!(printed["twilio"]["voice_from"], "+15005550006");
    // Header names are case-insensitive; HeaderName keeps them in lower case.
    assert_eq!(printed["auth"]["api_key"]["header"], "x-api-key");
    assert_eq!(printed["auth"]["api_key"]["value"], "[redacted]");
    assert_eq!(printed["policy"]["sms"]["allowed_countries"][0], "US");
    assert_eq!(printed["test_numbers"][0], "+14155550100");
    assert_eq!(printed["voice"]["language"], "en-US");
    assert!(printed["voice"]["sentences"]["en-US"]["login"].is_string());
}

#[test]
fn check_config_never_echoes_a_broken_line() {
    let d = tempdir("check-config-broken");
    let file = d.join("c.toml");
    std::fs::write(&file, "[twilio]\nauth_token = \"tok-77b2-broken\n").unwrap();
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .envs(good())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("tok-77b2"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[test]
fn the_store_is_memory_by_default_and_redis_when_configured() {
    use kratos_phone_courier::config::{Backend, OnError};
    let c = load(&good()).unwrap();
    assert!(matches!(c.store.backend, Backend::Memory));
    let c = load(&with(&[
        ("PHONE_COURIER__STORE__BACKEND", "redis"),
        (
            "PHONE_COURIER__STORE__REDIS__URL",
            "redis://:pw-redis-91ab@10.0.0.5:6380/2",
        ),
    ]))
    .unwrap();
    let Backend::Redis(redis) = &c.store.backend else {
        panic!("{:?}", c.store)
    };
    assert_eq!(
        redis.url.expose_secret(),
        "redis://:pw-redis-91ab@10.0.0.5:6380/2"
    );
    assert_eq!(redis.key_prefix, "kpc:");
    assert_eq!(redis.timeout, std::time::Duration::from_millis(500));
    assert_eq!(redis.on_error, OnError::FailClosed);
    assert!(!format!("{c:?}").contains("pw-redis-91ab"));

    let c = load(&with(&[
        ("PHONE_COURIER__STORE__BACKEND", "redis"),
        (
            "PHONE_COURIER__STORE__REDIS__URL",
            "rediss://cache.internal:6380",
        ),
        ("PHONE_COURIER__STORE__REDIS__KEY_PREFIX", "courier-eu:"),
        ("PHONE_COURIER__STORE__REDIS__TIMEOUT_MS", "250"),
        ("PHONE_COURIER__STORE__REDIS__ON_ERROR", "local"),
    ]))
    .unwrap();
    let Backend::Redis(redis) = &c.store.backend else {
        panic!("{:?}", c.store)
    };
    assert_eq!(redis.key_prefix, "courier-eu:");
    assert_eq!(redis.timeout.as_millis(), 250);
    assert_eq!(redis.on_error, OnError::Local);

    // The URL from a file (a mounted secret), trailing newline dropped.
    let d = tempdir("redis-url");
    std::fs::write(d.join("url"), "redis://:pw-file-3c7d@redis:6379/0\n").unwrap();
    let path = d.join("url").display().to_string();
    let mut pairs: Vec<(&str, &str)> = with(&[("PHONE_COURIER__STORE__BACKEND", "redis")]);
    pairs.push(("PHONE_COURIER__STORE__REDIS__URL_FILE", &path));
    let c = load(&pairs).unwrap();
    let Backend::Redis(redis) = &c.store.backend else {
        panic!("{:?}", c.store)
    };
    assert_eq!(
        redis.url.expose_secret(),
        "redis://:pw-file-3c7d@redis:6379/0"
    );

    // With the memory backend, no URL is needed and none is read.
    let c = load(&with(&[(
        "PHONE_COURIER__STORE__REDIS__URL_FILE",
        "/nonexistent/redis-url",
    )]))
    .unwrap();
    assert!(matches!(c.store.backend, Backend::Memory));
}

#[test]
fn store_mistakes_name_the_key_and_never_quote_the_url() {
    let redis = ("PHONE_COURIER__STORE__BACKEND", "redis");
    let url = (
        "PHONE_COURIER__STORE__REDIS__URL",
        "redis://127.0.0.1:6379/0",
    );
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (with(&[redis]), "store.redis.url"),
        (
            with(&[redis, ("PHONE_COURIER__STORE__REDIS__URL", "")]),
            "store.redis.url",
        ),
        (
            with(&[
                redis,
                url,
                ("PHONE_COURIER__STORE__REDIS__URL_FILE", "/etc/hostname"),
            ]),
            "store.redis.url",
        ),
        (
            with(&[
                redis,
                ("PHONE_COURIER__STORE__REDIS__URL_FILE", "/nonexistent/u"),
            ]),
            "store.redis.url_file",
        ),
        (
            with(&[("PHONE_COURIER__STORE__BACKEND", "etcd")]),
            "store.backend",
        ),
        (
            with(&[("PHONE_COURIER__STORE__REDIS__ON_ERROR", "fail_open")]),
            "store.redis.on_error",
        ),
        (
            with(&[("PHONE_COURIER__STORE__REDIS__TIMEOUT_MS", "0")]),
            "store.redis.timeout_ms",
        ),
        (
            with(&[("PHONE_COURIER__STORE__REDIS__TIMEOUT_MS", "60000")]),
            "store.redis.timeout_ms",
        ),
        (
            with(&[("PHONE_COURIER__STORE__REDIS__KEY_PREFIX", "a b")]),
            "store.redis.key_prefix",
        ),
    ];
    for (pairs, key) in cases {
        let got = key_of(load(&pairs).unwrap_err());
        assert_eq!(got, key, "{pairs:?}");
    }
    // A URL that is not one: named, never quoted (it may hold a password).
    for bad in [
        "http://:pw-bad-6e1a@cache:6379",
        "redis//:pw-bad-6e1a@cache",
        "pw-bad-6e1a",
    ] {
        let e = load(&with(&[redis, ("PHONE_COURIER__STORE__REDIS__URL", bad)])).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("pw-bad-6e1a"), "{text}");
        assert_eq!(key_of(e), "store.redis.url");
    }
}

#[test]
fn check_config_prints_the_store_with_the_url_redacted() {
    let out = bin()
        .arg("check-config")
        .envs(good())
        .env("PHONE_COURIER__STORE__BACKEND", "redis")
        .env(
            "PHONE_COURIER__STORE__REDIS__URL",
            "redis://user:pw-print-5f0c@redis.internal:6379/0",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("pw-print-5f0c"), "{all}");
    assert!(!all.contains("redis.internal"), "{all}");
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["store"]["backend"], "redis");
    assert_eq!(printed["store"]["redis"]["url"], "[redacted]");
    assert_eq!(printed["store"]["redis"]["key_prefix"], "kpc:");
    assert_eq!(printed["store"]["redis"]["timeout_ms"], 500);
    assert_eq!(printed["store"]["redis"]["on_error"], "fail_closed");

    let out = bin().arg("check-config").envs(good()).output().unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["store"], serde_json::json!({"backend": "memory"}));
}

/// A relay configuration file (in a temp dir), with `extra` appended.
fn relay_file(name: &str, body: &str) -> PathBuf {
    let dir = tempdir(name);
    let path = dir.join("relay.toml");
    std::fs::write(&path, body).unwrap();
    path
}

const RELAY: &str = r#"
[relay]
enabled = true
public_url = "https://courier.example.com/"
numbers = ["+15005550006"]
webhook_secret = "webhook-secret-77aa"

[[relay.routes]]
name = "GitHub"
from = ["+15556667777", "32665", "GitHub"]
sms = ["+14443332222"]
slack = ["https://hooks.slack.com/services/T1/B1/inline-slack-secret"]
webhooks = ["https://ops.example.com/mfa"]
"#;

#[test]
fn check_config_prints_the_relay_with_slack_urls_and_the_webhook_secret_redacted() {
    let dir = tempdir("relay-redacted");
    let slack_file = dir.join("slack");
    std::fs::write(
        &slack_file,
        "# the on-call channel\nhttps://hooks.slack.com/services/T2/B2/file-slack-secret\n",
    )
    .unwrap();
    let file = relay_file(
        "relay-redacted-file",
        &format!(
            "{RELAY}\n[relay.default_route]\nname = \"Unknown\"\nslack_file = \"{}\"\n",
            slack_file.display()
        ),
    );
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .envs(good())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let relay = &printed["relay"];
    assert_eq!(
        relay["inbound_url"],
        "https://courier.example.com/v1/twilio/inbound"
    );
    assert_eq!(relay["webhook_secret"], "[redacted]");
    assert_eq!(
        relay["routes"][0]["from"],
        serde_json::json!(["+15556667777", "32665", "GitHub"])
    );
    assert_eq!(
        relay["routes"][0]["slack"],
        serde_json::json!(["[redacted]"])
    );
    assert_eq!(
        relay["routes"][0]["webhooks"],
        serde_json::json!(["https://ops.example.com/mfa"])
    );
    assert_eq!(
        relay["default_route"]["slack"],
        serde_json::json!(["[redacted]"]),
        "one URL read from slack_file, comments skipped"
    );
    assert_eq!(relay["retry_window_ms"], 120000);
    for secret in [
        "inline-slack-secret",
        "file-slack-secret",
        "webhook-secret-77aa",
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret}"
        );
    }
    // Off by default: nothing printed, no endpoint.
    let out = bin().arg("check-config").envs(good()).output().unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(printed["relay"].is_null());
}

#[test]
fn relay_mistakes_name_the_key_and_never_quote_a_slack_url() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "public_url = \"https://courier.example.com/\"",
            "public_url = \"\"",
            "relay.public_url",
        ),
        (
            "numbers = [\"+15005550006\"]",
            "numbers = []",
            "relay.numbers",
        ),
        (
            "numbers = [\"+15005550006\"]",
            "numbers = [\"15005550006\"]",
            "relay.numbers",
        ),
        (
            "from = [\"+15556667777\", \"32665\", \"GitHub\"]",
            "from = [\"12\"]",
            "relay.routes[0].from",
        ),
        (
            "from = [\"+15556667777\", \"32665\", \"GitHub\"]",
            "from = []",
            "relay.routes[0].from",
        ),
        (
            "sms = [\"+14443332222\"]",
            "sms = [\"4443332222\"]",
            "relay.routes[0].sms",
        ),
        (
            "slack = [\"https://hooks.slack.com/services/T1/B1/inline-slack-secret\"]",
            "slack = [\"hooks.slack.com/inline-slack-secret\"]",
            "relay.routes[0].slack",
        ),
        (
            "webhooks = [\"https://ops.example.com/mfa\"]",
            "webhooks = [\"ftp://x\"]",
            "relay.routes[0].webhooks",
        ),
        (
            "webhook_secret = \"webhook-secret-77aa\"",
            "",
            "relay.webhook_secret",
        ),
        ("name = \"GitHub\"", "name = \"\"", "relay.routes[0].name"),
        (
            "enabled = true",
            "enabled = true\nattempts = 0",
            "relay.attempts",
        ),
        (
            "enabled = true",
            "enabled = true\nsms_template = \"no body here\"",
            "relay.sms_template",
        ),
        (
            "enabled = true",
            "enabled = true\ntimeout_ms = 0",
            "relay.timeout_ms",
        ),
    ];
    for (i, (from, to, key)) in cases.iter().enumerate() {
        let text = RELAY.replace(from, to);
        assert_ne!(text, RELAY, "case {i} changes nothing");
        let file = relay_file(&format!("relay-bad-{i}"), &text);
        let e = Config::load(&Sources {
            file: Some(file),
            env: env(&good()),
        })
        .expect_err(key);
        let shown = e.to_string();
        assert_eq!(key_of(e), *key, "{shown}");
        assert!(!shown.contains("inline-slack-secret"), "{shown}");
    }
    // Without a URL of its own, the relay takes status_callback.public_url.
    let text = RELAY.replace(
        "public_url = \"https://courier.example.com/\"",
        "public_url = \"\"",
    );
    let mut both = good();
    both.push((
        "PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL",
        "https://hooks.example.com",
    ));
    let c = Config::load(&Sources {
        file: Some(relay_file("relay-shared-url", &text)),
        env: env(&both),
    })
    .unwrap();
    assert_eq!(
        c.relay.unwrap().inbound_url,
        "https://hooks.example.com/v1/twilio/inbound"
    );
    // A route with no target at all.
    let text = RELAY
        .replace("sms = [\"+14443332222\"]\n", "")
        .replace(
            "slack = [\"https://hooks.slack.com/services/T1/B1/inline-slack-secret\"]\n",
            "",
        )
        .replace("webhooks = [\"https://ops.example.com/mfa\"]\n", "");
    let e = Config::load(&Sources {
        file: Some(relay_file("relay-no-target", &text)),
        env: env(&good()),
    })
    .unwrap_err();
    assert_eq!(key_of(e), "relay.routes[0]");
    // Enabled without a route or a default route.
    let text = RELAY.split("[[relay.routes]]").next().unwrap();
    let e = Config::load(&Sources {
        file: Some(relay_file("relay-no-route", text)),
        env: env(&good()),
    })
    .unwrap_err();
    assert_eq!(key_of(e), "relay.routes");
    // An API key only: incoming webhooks could not be verified.
    let api_key_only: Vec<_> = without("PHONE_COURIER__TWILIO__AUTH_TOKEN")
        .into_iter()
        .chain([
            (
                "PHONE_COURIER__TWILIO__API_KEY_SID",
                "SK0123456789abcdef0123456789abcdef",
            ),
            ("PHONE_COURIER__TWILIO__API_KEY_SECRET", "key-secret"),
        ])
        .collect();
    let e = Config::load(&Sources {
        file: Some(relay_file("relay-api-key", RELAY)),
        env: env(&api_key_only),
    })
    .unwrap_err();
    assert_eq!(key_of(e), "relay.enabled");
}

#[test]
fn tracing_is_off_by_default_and_configured_as_ory_does() {
    assert!(load(&good()).unwrap().tracing.is_none());
    let on = load(&with(&[("PHONE_COURIER__TRACING__PROVIDER", "otel")])).unwrap();
    let otlp = on.tracing.expect("on");
    assert_eq!(otlp.endpoint, "http://127.0.0.1:4318/v1/traces");
    assert_eq!(otlp.service_name, "kratos-phone-courier");
    assert_eq!(otlp.sampling_ratio, 1.0);
    let tls = load(&with(&[
        ("PHONE_COURIER__TRACING__PROVIDER", "otel"),
        (
            "PHONE_COURIER__TRACING__PROVIDERS__OTLP__SERVER_URL",
            "otel-collector.monitoring:4318",
        ),
        ("PHONE_COURIER__TRACING__PROVIDERS__OTLP__INSECURE", "false"),
        (
            "PHONE_COURIER__TRACING__PROVIDERS__OTLP__SAMPLING__SAMPLING_RATIO",
            "0.25",
        ),
    ]))
    .unwrap()
    .tracing
    .unwrap();
    assert_eq!(
        tls.endpoint,
        "https://otel-collector.monitoring:4318/v1/traces"
    );
    assert_eq!(tls.sampling_ratio, 0.25);
}

#[test]
fn tracing_mistakes_name_the_key_and_never_quote_the_url() {
    let on = ("PHONE_COURIER__TRACING__PROVIDER", "otel");
    let cases: [(&[(&'static str, &'static str)], &str); 5] = [
        (
            &[("PHONE_COURIER__TRACING__PROVIDER", "jaeger")],
            "tracing.provider",
        ),
        (
            &[
                on,
                (
                    "PHONE_COURIER__TRACING__PROVIDERS__OTLP__SERVER_URL",
                    "http://user:s3cret@c:4318",
                ),
            ],
            "tracing.providers.otlp.server_url",
        ),
        (
            &[
                on,
                ("PHONE_COURIER__TRACING__PROVIDERS__OTLP__SERVER_URL", ""),
            ],
            "tracing.providers.otlp.server_url",
        ),
        (
            &[
                on,
                (
                    "PHONE_COURIER__TRACING__PROVIDERS__OTLP__SAMPLING__SAMPLING_RATIO",
                    "1.5",
                ),
            ],
            "tracing.providers.otlp.sampling.sampling_ratio",
        ),
        (
            &[on, ("PHONE_COURIER__TRACING__SERVICE_NAME", " ")],
            "tracing.service_name",
        ),
    ];
    for (extra, key) in cases {
        let e = load(&with(extra)).expect_err(key);
        let text = e.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(key_of(e), key);
    }
}

#[test]
fn lookup_is_off_by_default_and_every_key_is_checked_by_name() {
    let c = load(&good()).unwrap();
    assert!(c.lookup.is_none(), "Lookup is billed: off unless enabled");
    fn on(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all: Vec<(&str, &str)> = good();
        all.push(("PHONE_COURIER__LOOKUP__ENABLED", "true"));
        all.extend_from_slice(extra);
        load(&all)
    }
    let l = on(&[]).unwrap().lookup.unwrap();
    assert_eq!(l.base_url, "https://lookups.twilio.com");
    assert!(l.line_type && !l.sim_swap && !l.sms_pumping_risk);
    assert_eq!(l.on_error, LookupOnError::Allow);
    assert_eq!(
        l.sim_swap_refuse_for,
        ["recovery_code_valid", "login_code_valid"]
    );
    assert_eq!(l.action("mobile").1, LineAction::Sms);
    assert_eq!(l.action("landline").1, LineAction::Voice);
    assert_eq!(l.action("fixedVoip").1, LineAction::Voice);
    assert_eq!(l.action("nonFixedVoip").1, LineAction::Refuse);
    assert_eq!(l.action("premium").1, LineAction::Refuse);
    assert_eq!(l.action("something-new").1, LineAction::Sms, "as unknown");
    for (key, value, named) in [
        ("FIELDS", "line_type_intelligence,carrier", "lookup.fields"),
        ("ON_ERROR", "maybe", "lookup.on_error"),
        ("BASE_URL", "lookups.twilio.com", "lookup.base_url"),
        ("TIMEOUT_MS", "9000", "lookup.timeout_ms"),
        (
            "SIM_SWAP__REFUSE_FOR",
            "recovery,settings",
            "lookup.sim_swap.refuse_for",
        ),
        (
            "SMS_PUMPING_RISK__MAX_SCORE",
            "101",
            "lookup.sms_pumping_risk.max_score",
        ),
        (
            "LINE_TYPES__NON_FIXED_VOIP",
            "block",
            "lookup.line_types.non_fixed_voip",
        ),
    ] {
        let env = format!("PHONE_COURIER__LOOKUP__{key}");
        let e = on(&[(env.as_str(), value)]).unwrap_err();
        assert!(!e.to_string().contains(value), "{e}");
        assert_eq!(key_of(e), named);
    }
    // The lookup and the send fit in Kratos's 10 s together.
    assert_eq!(l.timeout, std::time::Duration::from_millis(1000));
    let e = on(&[("PHONE_COURIER__LOOKUP__TIMEOUT_MS", "1500")]).unwrap_err();
    assert_eq!(key_of(e), "lookup.timeout_ms");
    on(&[
        ("PHONE_COURIER__LOOKUP__TIMEOUT_MS", "1500"),
        ("PHONE_COURIER__TWILIO__TIMEOUT_MS", "7500"),
    ])
    .unwrap();
    // A landline called needs a caller id; refusing it does not.
    let e = on(&[
        ("PHONE_COURIER__TWILIO__FROM", "Acme"),
        ("PHONE_COURIER__FALLBACK__VOICE_ON", ""),
    ])
    .unwrap_err();
    assert_eq!(key_of(e), "lookup.line_types");
    on(&[
        ("PHONE_COURIER__TWILIO__FROM", "Acme"),
        ("PHONE_COURIER__FALLBACK__VOICE_ON", ""),
        ("PHONE_COURIER__LOOKUP__LINE_TYPES__LANDLINE", "refuse"),
        ("PHONE_COURIER__LOOKUP__LINE_TYPES__FIXED_VOIP", "sms"),
    ])
    .unwrap();
}

/// A Twilio account's WhatsApp (`whatsapp`, `whatsapp_from`,
/// `whatsapp_messaging_service_sid`): refused values name their key, and
/// `[whatsapp]` on with no provider that sends it names `whatsapp.enabled`.
#[test]
fn a_providers_whatsapp_keys_are_checked_and_named() {
    let on = [
        ("PHONE_COURIER__WHATSAPP__ENABLED", "true"),
        ("PHONE_COURIER__WHATSAPP__FROM", "+14155550100"),
        (
            "PHONE_COURIER__WHATSAPP__CONTENT_SID",
            "HX0123456789abcdef0123456789abcdef",
        ),
    ];
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("PHONE_COURIER__TWILIO__WHATSAPP_FROM", "Acme")],
            "twilio.whatsapp_from",
        ),
        (
            &[(
                "PHONE_COURIER__TWILIO__WHATSAPP_MESSAGING_SERVICE_SID",
                "MGnope",
            )],
            "twilio.whatsapp_messaging_service_sid",
        ),
        (
            &[
                ("PHONE_COURIER__TWILIO__WHATSAPP", "false"),
                ("PHONE_COURIER__TWILIO__WHATSAPP_FROM", "+14155550199"),
            ],
            "twilio.whatsapp",
        ),
        (
            &[("PHONE_COURIER__TWILIO__WHATSAPP", "false")],
            "whatsapp.enabled",
        ),
    ];
    for (extra, key) in cases {
        let mut pairs = with(&on);
        pairs.extend_from_slice(extra);
        assert_eq!(key_of(load(&pairs).unwrap_err()), key, "{extra:?}");
    }
    // The account's own sender, with or without `whatsapp:`.
    let mut pairs = with(&on);
    pairs.push((
        "PHONE_COURIER__TWILIO__WHATSAPP_FROM",
        "whatsapp:+14155550199",
    ));
    let config = load(&pairs).unwrap();
    assert_eq!(
        config.providers[0].api.whatsapp,
        kratos_phone_courier::config::WhatsAppUse::Own(
            kratos_phone_courier::config::SmsSender::From(
                kratos_phone_courier::phone::SenderId::parse("+14155550199").unwrap()
            )
        )
    );
    // WhatsApp off for the account, and off in [whatsapp]: nothing to say.
    let mut pairs = good();
    pairs.push(("PHONE_COURIER__TWILIO__WHATSAPP", "false"));
    assert!(load(&pairs).is_ok());
}

// The readers of `values`, through the loader.
fn refused_by_reader(key: &str, value: &str) -> String {
    let sources = Sources {
        file: None,
        env: [(format!("PHONE_COURIER__{key}"), value.to_owned())].into(),
    };
    Settings::load(&sources).unwrap_err().to_string()
}

#[test]
fn a_refused_value_names_its_key_and_what_is_allowed_never_itself() {
    let cases = [
        (
            "LOG__FORMAT",
            "xml-7f3",
            "`log.format`: must be `plain` or `json`",
        ),
        (
            "SERVER__DRAIN_MS",
            "60001",
            "`server.drain_ms`: must be at most 60000",
        ),
        (
            "VERIFY__CODE_LENGTH",
            "3",
            "`verify.code_length`: must be between 4 and 10",
        ),
        (
            "DEDUP__MAX_ENTRIES",
            "0",
            "`dedup.max_entries`: must be at least 1",
        ),
        (
            "POLICY__SMS__ALLOWED_COUNTRIES",
            "US,XX9",
            "`policy.sms.allowed_countries`: has an entry that is not",
        ),
        (
            "LOOKUP__LINE_TYPES__PAGER",
            "fax-7f3",
            "`lookup.line_types.pager`: must be one of `sms`, `voice`, `refuse`",
        ),
    ];
    for (key, value, wanted) in cases {
        let e = refused_by_reader(key, value);
        assert!(e.contains(wanted), "{e}\nwanted: {wanted}");
        assert!(!e.contains(value), "{e} quotes {value}");
    }
}

/// `[whatsapp]`'s countries and fallback delay are checked as they are read.
#[test]
fn whatsapp_keys_are_checked_as_they_are_read() {
    let read = |key: &str, value: &str| refused_by_reader(&format!("WHATSAPP__{key}"), value);
    assert!(read("COUNTRIES", "BR,Brazil").contains("whatsapp.countries"));
    assert!(read("FALLBACK_AFTER_MS", "600001").contains("whatsapp.fallback_after_ms"));
}

/// A provider entry that leaves its limits out gets `[twilio]`'s.
#[test]
fn a_provider_entry_takes_the_defaults_of_twilio() {
    let sources = Sources::default();
    let mut settings = Settings::load(&sources).unwrap();
    settings.auth.disabled = true;
    let toml = r#"
        name = "sw"
        kind = "signalwire"
        space_url = "https://example.signalwire.com"
        project_id = "5a1e0000-5a1e-4000-8000-000000000001"
        api_token = "t"
        from = "+15005550009"
    "#;
    let entry = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .unwrap();
    settings.providers = vec![entry];
    let c = settings.check(&HashMap::new()).unwrap();
    let built_in = Settings::load(&sources).unwrap().twilio;
    let api = &c.providers[0].api;
    assert_eq!(Some(api.timeout.as_millis() as u64), built_in.timeout_ms);
    assert_eq!(Some(api.max_in_flight), built_in.max_in_flight);
    assert_eq!(
        Some(api.verify_credentials_on_start),
        built_in.verify_credentials_on_start
    );
}
