//! Structural checks of `docker-compose.yml` and `Dockerfile` against each
//! other and against `kratos/kratos.yml`: names, ports and credentials that
//! must agree across files for the stack to work.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(rel: &str) -> Value {
    let path = root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {rel}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
}

fn compose() -> Value {
    yaml("docker-compose.yml")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let s = &compose["services"][name];
    assert!(s.is_mapping(), "service {name} is missing");
    s
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A service's environment, from either the map or the `KEY=value` list form.
fn env(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Mapping(m) => m.iter().map(|(k, v)| (str_of(k), str_of(v))).collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                let s = str_of(i);
                let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("environment: {other:?}"),
    }
}

/// `command` as a list of words (compose accepts a string or a list).
fn words(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Sequence(items) => items.iter().map(str_of).collect(),
        Value::Null => Vec::new(),
        other => panic!("command: {other:?}"),
    }
}

/// The value following `flag` in a command line.
fn flag_value(words: &[String], flag: &str) -> Option<String> {
    words
        .iter()
        .position(|w| w == flag)
        .and_then(|i| words.get(i + 1).cloned())
        .or_else(|| {
            let prefix = format!("{flag}=");
            words
                .iter()
                .find_map(|w| w.strip_prefix(&prefix).map(str::to_owned))
        })
}

/// (host, port) of an http URL.
fn host_port(url: &str) -> (String, u16) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or_else(|| panic!("{url} is not an http(s) URL"));
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url} has no explicit port"));
    (host.to_owned(), port.parse().expect("port"))
}

/// The port of a `HOST:PORT` listen address.
fn listen_port(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr} is not HOST:PORT"))
}

fn kratos_channel_request_config() -> Value {
    let kratos = yaml("kratos/kratos.yml");
    kratos["courier"]["channels"][0]["request_config"].clone()
}

const SERVICES: [&str; 6] = [
    "kratos-migrate",
    "kratos",
    "kratos-selfservice-ui-node",
    "phone-courier",
    "twilio-sandbox",
    "redis",
];

/// The port Redis listens on: `--port` on its command line, else 6379.
fn redis_port(redis: &Value) -> u16 {
    flag_value(&words(&redis["command"]), "--port")
        .map_or(6379, |p| p.parse().expect("--port is a number"))
}

/// How many containers compose starts for a service: `deploy.replicas`, or
/// `scale` (compose refuses the two when they disagree), else one.
fn replicas(service: &Value) -> u64 {
    let deploy = service["deploy"]["replicas"].as_u64();
    let scale = service["scale"].as_u64();
    if let (Some(d), Some(s)) = (deploy, scale) {
        assert_eq!(d, s, "deploy.replicas and scale disagree");
    }
    deploy.or(scale).unwrap_or(1)
}

/// The courier's configuration as its containers get it: built-in defaults,
/// then the compose environment (the image's config file only sets the
/// listen address, which the environment overrides).
fn courier_config(courier: &Value) -> kratos_phone_courier::config::Config {
    use kratos_phone_courier::config::{Config, Sources};
    Config::load(&Sources {
        file: None,
        env: env(courier).into_iter().collect(),
    })
    .expect("the courier's compose configuration loads")
}

#[test]
fn all_services_exist_with_pinned_images() {
    let c = compose();
    for name in SERVICES {
        service(&c, name);
    }
    for name in ["kratos-migrate", "kratos"] {
        assert_eq!(service(&c, name)["image"], "oryd/kratos:v26.2.0", "{name}");
    }
    assert_eq!(
        service(&c, "kratos-selfservice-ui-node")["image"],
        "oryd/kratos-selfservice-ui-node:v26.2.0"
    );
    // The courier is built from this repository's Dockerfile.
    let build = &service(&c, "phone-courier")["build"];
    let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
    assert!(root().join(dockerfile).is_file());
    // Redis (or Valkey, the same protocol): an official image, pinned to a
    // version, never `latest` or untagged.
    let image = service(&c, "redis")["image"].as_str().expect("redis image");
    let (name, tag) = image
        .split_once(':')
        .unwrap_or_else(|| panic!("{image} is not pinned to a version"));
    assert!(["redis", "valkey/valkey"].contains(&name), "{image}");
    assert!(tag.starts_with(|ch: char| ch.is_ascii_digit()), "{image}");
}

#[test]
fn kratos_services_follow_the_quickstart() {
    let c = compose();
    let kratos = service(&c, "kratos");
    let cmd = words(&kratos["command"]);
    assert_eq!(cmd.first().map(String::as_str), Some("serve"));
    assert!(cmd.iter().any(|w| w == "--watch-courier"), "{cmd:?}");
    assert_eq!(
        flag_value(&cmd, "-c").as_deref(),
        Some("/etc/config/kratos/kratos.yml")
    );

    let migrate = words(&service(&c, "kratos-migrate")["command"]);
    for w in ["migrate", "sql", "-e", "--yes"] {
        assert!(migrate.iter().any(|x| x == w), "{migrate:?}");
    }
    assert_eq!(
        flag_value(&migrate, "-c").as_deref(),
        Some("/etc/config/kratos/kratos.yml")
    );

    for name in ["kratos-migrate", "kratos"] {
        let s = service(&c, name);
        let e = env(s);
        assert_eq!(
            e.get("DSN").map(String::as_str),
            Some("sqlite:///var/lib/sqlite/db.sqlite?_fk=true&_journal=WAL"),
            "{name}"
        );
        let vols = words(&s["volumes"]);
        assert!(
            vols.iter().any(|v| v == "kratos-sqlite:/var/lib/sqlite"),
            "{name}: {vols:?}"
        );
        assert!(
            vols.iter()
                .any(|v| v.starts_with("./kratos:/etc/config/kratos")),
            "{name}: {vols:?}"
        );
    }
    let ports = words(&kratos["ports"]);
    for p in ["4433:4433", "4434:4434"] {
        assert!(ports.iter().any(|x| x == p), "{ports:?}");
    }
    assert_eq!(
        kratos["depends_on"]["kratos-migrate"]["condition"],
        "service_completed_successfully"
    );

    let ui = service(&c, "kratos-selfservice-ui-node");
    let e = env(ui);
    assert_eq!(e["KRATOS_PUBLIC_URL"], "http://kratos:4433/");
    assert_eq!(e["KRATOS_BROWSER_URL"], "http://127.0.0.1:4433/");
    for k in ["COOKIE_SECRET", "CSRF_COOKIE_NAME", "CSRF_COOKIE_SECRET"] {
        assert!(e.get(k).is_some_and(|v| !v.is_empty()), "{k}");
    }
    assert!(words(&ui["ports"]).iter().any(|p| p == "4455:4455"));
    // The UI's public host is the one in kratos.yml's ui_urls.
    let (host, _) = host_port(&e["KRATOS_PUBLIC_URL"]);
    service(&c, &host);
}

#[test]
fn kratos_channel_url_reaches_the_phone_courier() {
    let c = compose();
    let rc = kratos_channel_request_config();
    let url = rc["url"].as_str().unwrap();
    let (host, port) = host_port(url);
    let target = service(&c, &host);
    let listen = env(target)
        .get("PHONE_COURIER__SERVER__LISTEN")
        .cloned()
        .unwrap_or_else(|| panic!("service {host} sets no PHONE_COURIER__SERVER__LISTEN"));
    assert_eq!(listen_port(&listen), port, "{url} vs listen {listen}");
    assert!(
        listen.starts_with("0.0.0.0:") || listen.starts_with("[::]:"),
        "{listen} is not reachable from other containers"
    );
    assert!(
        url.ends_with("/v1/sms") || url.ends_with("/v1/voice"),
        "{url}"
    );
}

/// Kratos has one channel URL and compose no load balancer: the courier runs
/// as replicas of one service, whose name Docker's embedded DNS resolves to
/// every replica, so that URL reaches them all.
#[test]
fn kratos_reaches_every_courier_replica() {
    let c = compose();
    let rc = kratos_channel_request_config();
    let (host, _) = host_port(rc["url"].as_str().unwrap());
    let courier = service(&c, &host);
    assert_eq!(host, "phone-courier");
    assert_eq!(replicas(courier), 2, "deploy.replicas of {host}");
    // No other service runs the courier: a copy would be reached by nobody.
    for (name, s) in c["services"].as_mapping().unwrap() {
        let name = str_of(name);
        if name != host && s["image"] == courier["image"] {
            assert!(!s["entrypoint"].is_null(), "{name} runs the courier too");
        }
    }
    // A fixed container name cannot be scaled.
    assert!(courier["container_name"].is_null());
    // A fixed host port would clash between replicas: only ranges (one
    // port each) or none.
    for p in words(&courier["ports"]) {
        let p = p.split('/').next().unwrap();
        let (published, _target) = p.rsplit_once(':').unwrap_or(("", p));
        let host_port = published.rsplit(':').next().unwrap();
        if let Some((lo, hi)) = host_port.split_once('-') {
            let (lo, hi): (u64, u64) = (lo.parse().unwrap(), hi.parse().unwrap());
            assert!(
                hi - lo + 1 >= replicas(courier),
                "{p}: fewer ports than replicas"
            );
        } else {
            assert!(
                host_port.is_empty(),
                "{p}: one host port for several replicas"
            );
        }
    }
}

/// Every courier replica keeps its ledger, rate limits and budget in the
/// redis service, so a Kratos retry gets the same answer on either.
#[test]
fn courier_replicas_share_the_redis_store() {
    use kratos_phone_courier::config::Backend;
    use redis::{ConnectionAddr, IntoConnectionInfo};
    use secrecy::ExposeSecret;
    let c = compose();
    // The replicas share this one service definition, hence its environment.
    let courier = service(&c, "phone-courier");
    let e = env(courier);
    assert_eq!(e["PHONE_COURIER__STORE__BACKEND"], "redis");
    let url = &e["PHONE_COURIER__STORE__REDIS__URL"];
    // Parsed as the service parses it.
    let info = url.as_str().into_connection_info().expect("a Redis URL");
    let ConnectionAddr::Tcp(host, port) = &info.addr else {
        panic!("{url} is not plain TCP to a service");
    };
    let redis = service(&c, host);
    assert_eq!(host, "redis");
    assert_eq!(
        *port,
        redis_port(redis),
        "{url} vs the port redis listens on"
    );

    let config = courier_config(courier);
    let Backend::Redis(r) = &config.store.backend else {
        panic!("the courier's store is {:?}", config.store);
    };
    assert_eq!(r.url.expose_secret(), url);

    assert_eq!(
        courier["depends_on"]["redis"]["condition"], "service_healthy",
        "the courier starts before redis answers"
    );
}

/// Redis holds only short-lived state for the couriers: private, not
/// persisted, and checked healthy before they start.
#[test]
fn redis_is_private_ephemeral_and_healthchecked() {
    let c = compose();
    let redis = service(&c, "redis");
    assert!(
        redis["ports"].is_null(),
        "redis publishes {:?}",
        redis["ports"]
    );
    assert_eq!(words(&redis["networks"]), ["intranet"]);
    assert!(redis["volumes"].is_null(), "nothing to persist");

    // A list, so that the empty argument of --save is unambiguous. It starts
    // with the server: then the official image's entrypoint turns protected
    // mode off, which other containers need to connect.
    let cmd = words(&redis["command"]);
    assert!(
        matches!(
            cmd.first().map(String::as_str),
            Some("redis-server" | "valkey-server")
        ),
        "{cmd:?}"
    );
    assert_eq!(flag_value(&cmd, "--save").as_deref(), Some(""), "{cmd:?}");
    assert_eq!(
        flag_value(&cmd, "--appendonly").as_deref(),
        Some("no"),
        "{cmd:?}"
    );

    let test: Vec<String> = words(&redis["healthcheck"]["test"])
        .iter()
        .flat_map(|w| w.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert!(
        matches!(test.first().map(String::as_str), Some("CMD" | "CMD-SHELL")),
        "{test:?}"
    );
    assert!(
        test.iter().any(|w| w == "redis-cli" || w == "valkey-cli"),
        "{test:?}"
    );
    assert_eq!(test.last().map(String::as_str), Some("ping"), "{test:?}");
    let probed = flag_value(&test, "-p").map_or(6379, |p| p.parse().expect("-p"));
    assert_eq!(
        probed,
        redis_port(redis),
        "the healthcheck probes another port"
    );
}

#[test]
fn kratos_basic_auth_matches_the_courier() {
    let c = compose();
    let rc = kratos_channel_request_config();
    assert_eq!(rc["auth"]["type"], "basic_auth");
    let e = env(service(&c, "phone-courier"));
    assert_eq!(
        e["PHONE_COURIER__AUTH__BASIC__USERNAME"],
        str_of(&rc["auth"]["config"]["user"])
    );
    assert_eq!(
        e["PHONE_COURIER__AUTH__BASIC__PASSWORD"],
        str_of(&rc["auth"]["config"]["password"])
    );
}

#[test]
fn courier_talks_to_the_sandbox_with_its_credentials() {
    let c = compose();
    let courier = env(service(&c, "phone-courier"));
    let (host, port) = host_port(&courier["PHONE_COURIER__TWILIO__BASE_URL"]);
    assert_eq!(host, "twilio-sandbox");

    let sandbox = service(&c, "twilio-sandbox");
    assert_eq!(words(&sandbox["entrypoint"]), ["twilio-sandbox"]);
    assert_eq!(
        sandbox["image"],
        service(&c, "phone-courier")["image"],
        "the sandbox runs from the courier's image"
    );
    let cmd = words(&sandbox["command"]);
    let listen = flag_value(&cmd, "--listen").expect("--listen");
    assert_eq!(listen, "0.0.0.0:4471");
    assert_eq!(listen_port(&listen), port);
    assert_eq!(
        flag_value(&cmd, "--account-sid").as_deref(),
        Some(courier["PHONE_COURIER__TWILIO__ACCOUNT_SID"].as_str())
    );
    assert_eq!(
        flag_value(&cmd, "--auth-token").as_deref(),
        Some(courier["PHONE_COURIER__TWILIO__AUTH_TOKEN"].as_str())
    );
    // A Twilio account SID: AC + 32 hex digits.
    let sid = &courier["PHONE_COURIER__TWILIO__ACCOUNT_SID"];
    assert!(
        sid.len() == 34
            && sid.starts_with("AC")
            && sid[2..].chars().all(|ch| ch.is_ascii_hexdigit()),
        "{sid}"
    );
    assert_eq!(courier["PHONE_COURIER__TWILIO__FROM"], "+15005550006");
    assert_eq!(
        courier["PHONE_COURIER__TWILIO__VERIFY_CREDENTIALS_ON_START"],
        "true"
    );
    // The inbox is published on the host.
    assert!(words(&sandbox["ports"]).iter().any(|p| p == "4471:4471"));
    // The courier starts once the sandbox is up (it checks its credentials).
    assert_eq!(
        service(&c, "phone-courier")["depends_on"]["twilio-sandbox"]["condition"],
        "service_healthy"
    );
}

#[test]
fn volumes_are_declared_and_every_service_is_on_the_network() {
    let c = compose();
    let declared_volumes = c["volumes"].as_mapping().expect("top-level volumes");
    let declared_networks = c["networks"].as_mapping().expect("top-level networks");
    assert!(declared_networks.contains_key("intranet"));
    let services = c["services"].as_mapping().unwrap();
    for (name, s) in services {
        let name = str_of(name);
        for v in words(&s["volumes"]) {
            let source = v.split(':').next().unwrap();
            // Bind mounts start with . or /; anything else is a named volume.
            if !(source.starts_with('.') || source.starts_with('/')) {
                assert!(
                    declared_volumes.contains_key(source),
                    "{name}: volume {source} is not declared"
                );
            } else {
                assert!(
                    root().join(source).exists(),
                    "{name}: bind mount {source} does not exist"
                );
            }
        }
        let networks: Vec<String> = match &s["networks"] {
            Value::Sequence(_) => words(&s["networks"]),
            Value::Mapping(m) => m.keys().map(str_of).collect(),
            _ => Vec::new(),
        };
        assert!(
            networks.iter().any(|n| n == "intranet"),
            "{name} is not on the intranet network"
        );
        for n in &networks {
            assert!(declared_networks.contains_key(n.as_str()), "{name}: {n}");
        }
        // depends_on only names existing services (map or list form).
        let deps: Vec<String> = match &s["depends_on"] {
            Value::Mapping(m) => m.keys().map(str_of).collect(),
            Value::Sequence(_) => words(&s["depends_on"]),
            _ => Vec::new(),
        };
        for dep in deps {
            service(&c, &dep);
        }
    }
    assert_eq!(services.len(), SERVICES.len());
}

/// Dockerfile instructions of the last stage (the runtime image), joined
/// across line continuations.
fn runtime_instructions() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(stripped) = t.strip_suffix('\\') {
            current.push_str(stripped);
            current.push(' ');
        } else {
            current.push_str(t);
            lines.push(std::mem::take(&mut current));
        }
    }
    let last_from = lines
        .iter()
        .rposition(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .expect("FROM");
    assert!(last_from > 0 || lines.len() > 1);
    lines.split_off(last_from)
}

fn instruction<'a>(lines: &'a [String], keyword: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| {
            let (k, rest) = l.split_once(char::is_whitespace)?;
            k.eq_ignore_ascii_case(keyword).then_some(rest.trim())
        })
        .collect()
}

#[test]
fn dockerfile_runtime_is_non_root_healthchecked_and_exposes_4470() {
    let lines = runtime_instructions();

    let users = instruction(&lines, "USER");
    let user = users.last().expect("the runtime stage sets USER");
    let name = user.split(':').next().unwrap();
    assert!(!["root", "0", ""].contains(&name), "USER {user}");

    assert!(instruction(&lines, "EXPOSE")
        .iter()
        .any(|e| e.split_whitespace().any(|p| p == "4470" || p == "4470/tcp")));

    let health = instruction(&lines, "HEALTHCHECK");
    assert_eq!(health.len(), 1, "{health:?}");
    assert!(health[0].contains("CMD"), "{}", health[0]);
    assert!(health[0].contains("/health/ready"), "{}", health[0]);
    assert!(health[0].contains("4470"), "{}", health[0]);

    let entry = instruction(&lines, "ENTRYPOINT");
    assert_eq!(entry, [r#"["kratos-phone-courier"]"#]);
    let cmd = instruction(&lines, "CMD");
    assert_eq!(
        cmd,
        [r#"["serve", "--config", "/etc/phone-courier/config.toml"]"#]
    );

    // Both binaries are in the image, and the config file the CMD names.
    let copies = instruction(&lines, "COPY").join("\n");
    for needle in [
        "kratos-phone-courier",
        "twilio-sandbox",
        "/etc/phone-courier/config.toml",
    ] {
        assert!(copies.contains(needle), "{needle} not copied:\n{copies}");
    }
}

/// `docker compose stop` waits `stop_grace_period` before SIGKILL: the
/// courier's drain and grace (the built-in defaults) must fit inside it.
#[test]
fn courier_stop_grace_period_covers_drain_and_grace() {
    let compose = compose();
    let courier = service(&compose, "phone-courier");
    let period = str_of(&courier["stop_grace_period"]);
    let seconds: u64 = period
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("stop_grace_period {period:?} is not like \"20s\""));
    let config = courier_config(courier);
    let needed = config.server.drain + config.server.shutdown_grace;
    assert!(
        std::time::Duration::from_secs(seconds) > needed,
        "stop_grace_period {seconds}s does not cover drain + grace ({needed:?})"
    );
}
