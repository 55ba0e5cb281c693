//! Deployment: the container image (built with podman and invoked over HTTP
//! from outside the container), the Kubernetes overlays (rendered with
//! `kubectl kustomize`, validated with `kubernetes-validate --strict`), the
//! Knative services (required fields, the fork's fields), and that every
//! environment variable the manifests set is one `wasmbox serve` reads and
//! accepts (`serve --check-config`).
//!
//! Tests that need an outside tool (podman, runc, kubectl,
//! kubernetes-validate) print why they skip when it is missing, and fail
//! instead when WASMBOX_REQUIRE_DEPLOY=1 (CI, after scripts/setup-deploy.sh).
//! No Kubernetes cluster is involved anywhere.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "../common/mod.rs"]
mod common;
use common::free_ports;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The path of `tool` on PATH, or None after saying why the test skips
/// (a failure when WASMBOX_REQUIRE_DEPLOY=1).
fn require(tool: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        let msg = format!("{test}: `{tool}` is not on PATH (scripts/setup-deploy.sh installs it)");
        if std::env::var("WASMBOX_REQUIRE_DEPLOY").as_deref() == Ok("1") {
            panic!("{msg}; WASMBOX_REQUIRE_DEPLOY=1, so this is a failure");
        }
        // Straight to stderr: the test harness captures eprintln! of passing
        // tests, and a skip should be seen.
        let _ = writeln!(std::io::stderr(), "SKIPPED {msg}");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    out
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// All YAML documents of `text`, as JSON values (empty documents dropped).
fn yaml_docs(text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|d| {
            let v: yaml_serde::Value = serde::Deserialize::deserialize(d).expect("valid YAML");
            serde_json::to_value(v).expect("YAML with string keys")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn read_yaml(rel: &str) -> Vec<Value> {
    let path = repo().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    yaml_docs(&text)
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn find<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    docs.iter().find(|d| kind(d) == k).unwrap_or_else(|| {
        panic!(
            "no {k} among {:?}",
            docs.iter().map(kind).collect::<Vec<_>>()
        )
    })
}

/// The overlay directories under deploy/overlays, found on disk so that a
/// new overlay is covered without editing this test.
fn overlays() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("deploy/overlays"))
        .expect("deploy/overlays exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= 3,
        "expected the isolation overlays, found {names:?}"
    );
    names
}

/// The CPU isolation each overlay asks for.
fn expected_isolation(overlay: &str) -> &'static str {
    match overlay {
        "throttle" | "keda" => "throttle",
        "cgroup-v2-delegated" => "cgroup-v2",
        "host-cgroup" => "auto",
        other => panic!("overlay {other} has no expected isolation mode in this test"),
    }
}

fn render(kubectl: &Path, dir: &str) -> Vec<Value> {
    let out = run_ok(Command::new(kubectl).arg("kustomize").arg(repo().join(dir)));
    yaml_docs(&out)
}

/// Validates `docs` (core resources only) with `kubernetes-validate --strict`
/// and returns its verdict and output.
fn validate(tool: &Path, docs: &[Value]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resources.yaml");
    let text: Vec<String> = docs
        .iter()
        .map(|d| yaml_serde::to_string(d).unwrap())
        .collect();
    std::fs::write(&file, text.join("---\n")).unwrap();
    let out = run(Command::new(tool).arg("--strict").arg(&file));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Resources whose schema kubernetes-validate has: the API groups of
/// Kubernetes itself.
fn is_core(doc: &Value) -> bool {
    let api = doc["apiVersion"].as_str().unwrap_or("");
    match api.split_once('/') {
        None => true,
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
}

fn container(pod_spec: &Value) -> &Value {
    let containers = pod_spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// A Kubernetes quantity in the given unit ("2Gi" in "1Mi" = 2048, "2" in
/// "1m" = 2000).
fn quantity(q: &str, divisor: &str) -> u64 {
    fn units(s: &str) -> f64 {
        let (num, suffix) =
            s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
        let n: f64 = num.parse().unwrap_or_else(|_| panic!("quantity {s}"));
        n * match suffix {
            "" => 1.0,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "Ki" => 1024.0,
            "Mi" => 1024.0 * 1024.0,
            "Gi" => 1024.0 * 1024.0 * 1024.0,
            other => panic!("unit {other} in {s}"),
        }
    }
    (units(q) / units(divisor)).ceil() as u64
}

/// How [`pod_env`] fills in a value from a Secret; it must never appear in
/// what wasmbox prints.
const SECRET_STAND_IN: &str = "stand-in-secret";

/// Ports a wasmbox admin listener must not take: in a Knative pod the
/// queue-proxy holds 8012 (http), 8013 (h2c), 8022 (admin), 9090
/// (autoscaler metrics) and 9091 (user metrics); the fork's reporter
/// listens on 9096.
const POD_RESERVED_PORTS: [u16; 6] = [8012, 8013, 8022, 9090, 9091, 9096];

/// The container's environment as the pod would see it: plain values, and
/// the downward API's fields, resource limits and Secrets filled in.
fn pod_env(c: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = e.get("value") {
            v.as_str()
                .unwrap_or_else(|| panic!("env {name}: value {v} must be a string"))
                .to_string()
        } else if let Some(f) = e.pointer("/valueFrom/fieldRef/fieldPath") {
            match f.as_str().unwrap() {
                "metadata.uid" => "0b7c9a4e-8a40-4c1e-9a51-2f1f0c1d2e3f".into(),
                "metadata.name" => "wasmbox-5d9c7b8f6-abcde".into(),
                other => panic!("env {name}: fieldRef {other} not handled by this test"),
            }
        } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
            // A stand-in for the Secret's value (the admin token).
            format!(
                "{SECRET_STAND_IN}-{}-{}",
                r["name"].as_str().unwrap(),
                r["key"].as_str().unwrap()
            )
        } else if let Some(r) = e.pointer("/valueFrom/resourceFieldRef") {
            let res = r["resource"].as_str().unwrap();
            let (section, what) = res.split_once('.').unwrap();
            let q = c["resources"][section][what]
                .as_str()
                .unwrap_or_else(|| panic!("env {name}: {res} is not set on the container"));
            quantity(q, r["divisor"].as_str().unwrap_or("1")).to_string()
        } else {
            panic!("env {name}: neither value nor a valueFrom this test knows");
        };
        env.insert(name, value);
    }
    env
}

/// Runs `wasmbox <container args> --check-config --functions <dir>` with
/// exactly `env` and returns (exit code, stdout, stderr).
fn check_config(args: &[String], env: &BTreeMap<String, String>) -> (i32, String, String) {
    let functions = tempfile::tempdir().unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_wasmbox"))
        .env_clear()
        .envs(env)
        .args(args)
        .arg("--check-config")
        .arg("--functions")
        .arg(functions.path()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn setting<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no '{key} = ' line in:\n{report}"))
}

/// Checks that wasmbox accepts the container's environment and reads every
/// variable in it, and that the settings agree with the pod spec. Returns
/// the check-config report.
fn assert_env_accepted(what: &str, pod_spec: &Value, mut env: BTreeMap<String, String>) -> String {
    let c = container(pod_spec);
    let args: Vec<String> = c["args"]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_else(|| vec!["serve".into()]);
    assert_eq!(
        args.first().map(String::as_str),
        Some("serve"),
        "{what}: args {args:?}"
    );
    let set: Vec<String> = env.keys().cloned().collect();
    env.extend(pod_env(c));
    let (code, out, err) = check_config(&args, &env);
    assert_eq!(
        code, 0,
        "{what}: wasmbox refused the manifest's configuration:\n{err}{out}"
    );
    let read: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "environment read:")
        .skip(1)
        .filter_map(|l| l.trim().split_once('=').map(|(k, _)| k))
        .collect();
    for name in pod_env(c).keys().chain(&set) {
        assert!(
            read.contains(&name.as_str()),
            "{what}: wasmbox does not read {name}:\n{out}"
        );
    }
    // The serving port is the container port, and the functions directory
    // is where the volume is mounted.
    let port = c["ports"][0]["containerPort"]
        .as_u64()
        .expect("containerPort");
    assert!(
        setting(&out, "listen").ends_with(&format!(":{port}")),
        "{what}: wasmbox would listen on {}, the container port is {port}",
        setting(&out, "listen")
    );
    let functions = env
        .get("WASMBOX_FUNCTIONS")
        .unwrap_or_else(|| panic!("{what}: WASMBOX_FUNCTIONS is not set"));
    let mounted = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["mountPath"].as_str() == Some(functions.as_str()));
    assert!(
        mounted,
        "{what}: no volume is mounted at WASMBOX_FUNCTIONS={functions}"
    );
    assert!(
        !out.contains(SECRET_STAND_IN) && !err.contains(SECRET_STAND_IN),
        "{what}: --check-config shows a Secret's value:\n{err}{out}"
    );
    out
}

/// Checks that Prometheus, as the pod's annotations tell it, scrapes
/// /-/metrics on wasmbox's admin listener (`report` from
/// [`assert_env_accepted`]): its port is the admin port, not the serving
/// port and none a Knative pod reserves; metrics need no token (annotation
/// scraping sends none); the listing's token comes from a Secret. Returns
/// the admin port.
fn assert_scraped_on_admin_port(
    what: &str,
    report: &str,
    pod_spec: &Value,
    annotations: &Value,
) -> u16 {
    let admin: u16 = setting(report, "admin-listen")
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no admin listener:\n{report}"));
    let serving = container(pod_spec)["ports"][0]["containerPort"]
        .as_u64()
        .unwrap();
    assert_ne!(
        u64::from(admin),
        serving,
        "{what}: admin port = serving port"
    );
    assert!(
        !POD_RESERVED_PORTS.contains(&admin),
        "{what}: admin port {admin} is one a Knative pod already uses"
    );
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{what}");
    assert_eq!(annotations["prometheus.io/path"], "/-/metrics", "{what}");
    assert_eq!(
        annotations["prometheus.io/port"],
        admin.to_string(),
        "{what}: Prometheus must scrape the admin port"
    );
    assert_eq!(
        setting(report, "admin-metrics-auth"),
        "false",
        "{what}: annotation-based scraping sends no token"
    );
    assert_eq!(
        setting(report, "admin-token"),
        "set, from WASMBOX_ADMIN_TOKEN (value not shown)",
        "{what}"
    );
    admin
}

mod image;
mod knative;
mod manifests;
mod scaling;
