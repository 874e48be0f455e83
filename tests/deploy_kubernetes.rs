//! The Kubernetes base in `deploy/kubernetes/`: valid against Kubernetes's
//! own schemas (`kubernetes-validate`, strict), and in agreement with the
//! service it runs: the configuration passes the service's own check with
//! every secret read from a file of the Secret, the drain window, the ports,
//! the image's user, the sizing from BENCHMARKS.md.

#[path = "common/tool.rs"]
mod tool;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kratos_phone_courier::config::{Backend, Config, Sources};
use serde_yaml::Value;

/// The oldest Kubernetes the base supports: the `sleep` preStop action is
/// on by default from 1.30.
const KUBERNETES_VERSION: &str = "1.30.0";

/// The distroless image's "nonroot" user and group (Dockerfile: `USER nonroot:nonroot`).
const DISTROLESS_NONROOT: i64 = 65532;

/// Where the Deployment mounts the Secret.
const SECRETS_DIR: &str = "/run/secrets/phone-courier/";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The files the kustomization lists, in order.
fn resources() -> Vec<PathBuf> {
    let k = yaml(&dir().join("kustomization.yaml"));
    k["resources"]
        .as_sequence()
        .expect("resources is a list")
        .iter()
        .map(|r| dir().join(r.as_str().expect("a file name")))
        .collect()
}

/// The resource of `kind` among the kustomization's.
fn resource(kind: &str) -> Value {
    let found: Vec<Value> = resources()
        .iter()
        .map(|p| yaml(p))
        .filter(|v| v["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in the base");
    found.into_iter().next().unwrap()
}

fn container() -> Value {
    let d = resource("Deployment");
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .clone();
    assert_eq!(containers.len(), 1, "one container");
    containers[0].clone()
}

fn config_text() -> String {
    resource("ConfigMap")["data"]["config.toml"]
        .as_str()
        .expect("the ConfigMap holds config.toml")
        .to_owned()
}

/// The Secret's keys and example values (secret.example.yaml).
fn example_secret() -> Vec<(String, String)> {
    let s = yaml(&dir().join("secret.example.yaml"));
    s["stringData"]
        .as_mapping()
        .expect("stringData")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The ConfigMap's configuration checked by the service itself, with the
/// Secret's files (example values) in a temporary directory standing in for
/// the mount.
/// `tag` keeps the directories of tests running at once apart.
fn checked_config(tag: &str) -> Config {
    let tmp = std::env::temp_dir().join(format!("kpc-k8s-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (key, value) in example_secret() {
        std::fs::write(tmp.join(&key), format!("{value}\n")).unwrap();
    }
    let text = config_text().replace(SECRETS_DIR, &format!("{}/", tmp.display()));
    let file = tmp.join("config.toml");
    std::fs::write(&file, text).unwrap();
    let config = Config::load(&Sources {
        file: Some(file),
        env: Default::default(),
    });
    let _ = std::fs::remove_dir_all(&tmp);
    config.unwrap_or_else(|e| panic!("the ConfigMap's config.toml fails the service's check: {e}"))
}

fn quantity_bytes(q: &str) -> u64 {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = n.parse().expect("a number");
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "M" => 1_000_000,
        other => panic!("unit {other}"),
    }
}

#[test]
fn the_kustomization_lists_every_manifest_and_uses_nothing_else() {
    let k = yaml(&dir().join("kustomization.yaml"));
    let keys: Vec<&str> = k
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    // Only `resources`: what kustomize prints is then these files as they are,
    // which is what the other tests here read.
    assert_eq!(keys, ["apiVersion", "kind", "resources"]);
    let listed = resources();
    let mut on_disk: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            // The Secret is created by the operator, never shipped.
            name != "kustomization.yaml" && name != "secret.example.yaml"
        })
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, on_disk, "every manifest is listed, once");
    assert!(
        !listed.iter().any(|p| yaml(p)["kind"] == "Secret"),
        "the base must not ship credentials"
    );
    // kubectl, when installed, builds the same documents.
    if let Some(kubectl) = tool::find_on_path("kubectl") {
        let out = Command::new(kubectl)
            .args(["kustomize"])
            .arg(dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let built = String::from_utf8(out.stdout).unwrap();
        let kinds: Vec<String> = built
            .split("\n---\n")
            .map(|d| {
                serde_yaml::from_str::<Value>(d).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let mut ours: Vec<String> = listed
            .iter()
            .map(|p| yaml(p)["kind"].as_str().unwrap().to_owned())
            .collect();
        let mut theirs = kinds.clone();
        ours.sort();
        theirs.sort();
        assert_eq!(theirs, ours);
    }
}

#[test]
fn manifests_are_valid_against_the_kubernetes_schemas() {
    // The module where pip put it, even when its script is not on PATH
    // (pyenv without a rehash); the script otherwise.
    let module = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .output()
        .is_ok_and(|o| o.status.success());
    let validator = if module {
        vec![
            "python3".to_owned(),
            "-m".into(),
            "kubernetes_validate".into(),
        ]
    } else {
        match tool::require(
            "kubernetes-validate",
            "python3 -m pip install kubernetes-validate",
        ) {
            Some(path) => vec![path.display().to_string()],
            None => return,
        }
    };
    let mut files = resources();
    files.push(dir().join("secret.example.yaml"));
    let run = |files: &[PathBuf]| {
        Command::new(&validator[0])
            .args(&validator[1..])
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .args(files)
            .output()
            .expect("kubernetes-validate runs")
    };
    let out = run(&files);
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert_eq!(
        report.matches(" passed for resource ").count(),
        files.len(),
        "each file validated: {report}"
    );
    // The validator does reject a wrong manifest: a misspelt field in the
    // same Deployment.
    let broken = std::env::temp_dir().join(format!("kpc-k8s-broken-{}.yaml", std::process::id()));
    let text = std::fs::read_to_string(dir().join("deployment.yaml"))
        .unwrap()
        .replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:");
    std::fs::write(&broken, text).unwrap();
    let out = run(std::slice::from_ref(&broken));
    let _ = std::fs::remove_file(&broken);
    assert!(
        !out.status.success(),
        "a misspelt field must fail validation"
    );
}

#[test]
fn the_config_map_passes_the_services_check_with_secrets_from_files() {
    let text = config_text();
    // Every credential is read from the Secret's mount, none is inline.
    let secret_keys: Vec<String> = example_secret().into_iter().map(|(k, _)| k).collect();
    let mut referenced = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        assert!(
            ![
                "password",
                "auth_token",
                "api_key_secret",
                "url",
                "key_secret",
                "value"
            ]
            .contains(&key),
            "`{key}` inline in the ConfigMap: use its _file twin"
        );
        if key.ends_with("_file") {
            let path = value.trim().trim_matches('"');
            let name = path
                .strip_prefix(SECRETS_DIR)
                .unwrap_or_else(|| panic!("{key} points outside the Secret's mount: {path}"));
            assert!(
                secret_keys.iter().any(|k| k == name),
                "{key}: no key {name} in the Secret"
            );
            referenced.push(name.to_owned());
        }
    }
    referenced.sort();
    let mut all = secret_keys.clone();
    all.sort();
    assert_eq!(
        referenced, all,
        "every Secret key is read by the configuration"
    );

    let config = checked_config("secrets");
    assert_eq!(
        config.server.listen.ip().to_string(),
        "0.0.0.0",
        "reachable from the Service"
    );
    assert!(config.auth.basic.is_some(), "Kratos authenticates");
    // Two replicas: only the Redis store keeps the ledger, limits and budget shared.
    assert!(matches!(config.store.backend, Backend::Redis(_)));
    assert!(config.metrics_listen.is_some(), "metrics on their own port");
}

#[test]
fn the_drain_window_and_the_stop_timeout_agree_with_the_configuration() {
    let config = checked_config("drain");
    let d = resource("Deployment");
    let pod = &d["spec"]["template"]["spec"];
    let pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop sleeps");
    assert_eq!(
        Duration::from_secs(pre_stop),
        config.server.drain,
        "preStop sleeps server.drain_ms"
    );
    assert!(!config.server.drain.is_zero());
    let stop = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().expect("set"));
    let needed = Duration::from_secs(pre_stop) + config.server.drain + config.server.shutdown_grace;
    assert!(
        stop >= needed,
        "terminationGracePeriodSeconds {stop:?} < preStop + drain + grace {needed:?}"
    );
    assert_eq!(d["spec"]["replicas"].as_u64(), Some(2));
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0)
    );
    let pdb = resource("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(1));
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn probes_ports_and_network_policy_match_the_service() {
    let config = checked_config("ports");
    let api_port = config.server.listen.port() as u64;
    let metrics_port = config.metrics_listen.unwrap().port() as u64;
    let c = container();
    let port_named = |name: &str| {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port_named("http"), api_port);
    assert_eq!(port_named("metrics"), metrics_port);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health/ready");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health/alive");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http");
    // The image reads its configuration where the ConfigMap is mounted.
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        ["serve", "--config", "/etc/phone-courier/config.toml"]
    );

    let svc = resource("Service");
    let svc_ports: Vec<(u64, String)> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        svc_ports,
        [(api_port, "http".into()), (metrics_port, "metrics".into())]
    );

    let np = resource("NetworkPolicy");
    assert_eq!(
        np["spec"]["policyTypes"],
        serde_yaml::from_str::<Value>("[Ingress]").unwrap()
    );
    let rules = np["spec"]["ingress"].as_sequence().unwrap();
    let api_rules: Vec<&Value> = rules
        .iter()
        .filter(|r| {
            r["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|p| p["port"].as_u64() == Some(api_port))
        })
        .collect();
    assert_eq!(api_rules.len(), 1, "one rule opens the API port");
    let from = api_rules[0]["from"].as_sequence().unwrap();
    assert_eq!(from.len(), 1);
    assert_eq!(
        from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "kratos"
    );
    assert!(from[0]["namespaceSelector"].is_null() && from[0]["ipBlock"].is_null());
    for r in rules {
        assert!(!r["from"].is_null(), "no rule open to everyone");
    }
}

#[test]
fn runs_as_the_images_non_root_user_on_a_read_only_root() {
    let dockerfile =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
            .unwrap();
    assert!(
        dockerfile.contains("\nUSER nonroot:nonroot\n"),
        "the image's user changed: update deployment.yaml"
    );
    assert!(dockerfile.contains("distroless/cc-debian12:nonroot"));
    let d = resource("Deployment");
    let pod = &d["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["runAsUser"].as_i64(), Some(DISTROLESS_NONROOT));
    assert_eq!(pod["runAsGroup"].as_i64(), Some(DISTROLESS_NONROOT));
    assert_eq!(pod["fsGroup"].as_i64(), Some(DISTROLESS_NONROOT));
    let c = container();
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert_eq!(
        d["spec"]["template"]["spec"]["automountServiceAccountToken"].as_bool(),
        Some(false)
    );
    // Secrets are mounted read-only from the Secret, not passed in the environment.
    assert!(c["env"].is_null() && c["envFrom"].is_null());
    let volumes = d["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    let secret = volumes
        .iter()
        .find(|v| !v["secret"].is_null())
        .expect("a Secret volume");
    assert_eq!(secret["secret"]["secretName"], "kratos-phone-courier");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == secret["name"])
        .expect("mounted");
    assert_eq!(
        format!("{}/", mount["mountPath"].as_str().unwrap()),
        SECRETS_DIR
    );
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
}

#[test]
fn resources_are_sized_from_the_benchmarks() {
    // The memory limit must hold the measured peak with a million remembered
    // recipients ("... (peak N MB)" in BENCHMARKS.md's memory table).
    let bench =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md"))
            .unwrap();
    let peak_mb: f64 = bench
        .split("(peak ")
        .nth(1)
        .and_then(|s| s.split(" MB").next())
        .and_then(|n| n.parse().ok())
        .expect("BENCHMARKS.md gives the peak RSS with a million keys");
    let idle_mb: f64 = bench
        .split("| idle, after start | ")
        .nth(1)
        .and_then(|s| s.split(" MB").next())
        .and_then(|n| n.parse().ok())
        .expect("BENCHMARKS.md gives the idle RSS");
    let r = &container()["resources"];
    let limit = quantity_bytes(r["limits"]["memory"].as_str().expect("a memory limit"));
    let request = quantity_bytes(r["requests"]["memory"].as_str().expect("a memory request"));
    assert!(
        limit as f64 > peak_mb * 1e6,
        "limit {limit} under the measured peak {peak_mb} MB"
    );
    assert!(request as f64 > idle_mb * 1e6, "request under the idle RSS");
    assert!(
        !r["requests"]["cpu"].is_null(),
        "a CPU request for scheduling"
    );
}
