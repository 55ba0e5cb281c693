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

mod common;
use common::free_port;

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

/// The container's environment as the pod would see it: plain values, and
/// the downward API's fields and resource limits filled in.
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
    out
}

#[test]
fn overlays_render_and_pass_strict_schema_validation() {
    let test = "overlays_render_and_pass_strict_schema_validation";
    let (Some(kubectl), Some(validator)) = (
        require("kubectl", test),
        require("kubernetes-validate", test),
    ) else {
        return;
    };
    for overlay in overlays() {
        let docs = render(&kubectl, &format!("deploy/overlays/{overlay}"));
        let (core, custom): (Vec<Value>, Vec<Value>) = docs.into_iter().partition(is_core);
        for d in &custom {
            assert_eq!(
                (d["apiVersion"].as_str(), kind(d)),
                (Some("keda.sh/v1alpha1"), "ScaledObject"),
                "{overlay}: a custom resource this test does not check"
            );
        }
        let (ok, report) = validate(&validator, &core);
        assert!(
            ok,
            "{overlay}: kubernetes-validate --strict failed:\n{report}"
        );
        let passed = report.matches("passed for resource").count();
        assert_eq!(
            passed,
            core.len(),
            "{overlay}: not every resource was validated:\n{report}"
        );
        eprintln!(
            "{overlay}: {passed} resources valid ({} custom)",
            custom.len()
        );
    }
}

#[test]
fn strict_validation_rejects_an_unknown_field() {
    // The control for the test above: the validator must fail a typo.
    let test = "strict_validation_rejects_an_unknown_field";
    let (Some(kubectl), Some(validator)) = (
        require("kubectl", test),
        require("kubernetes-validate", test),
    ) else {
        return;
    };
    let docs = render(&kubectl, "deploy/base");
    let mut deployment = find(&docs, "Deployment").clone();
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = json!({});
    let (ok, report) = validate(&validator, &[deployment]);
    assert!(!ok, "a misspelt field passed strict validation:\n{report}");
    assert!(report.contains("livenesProbe"), "{report}");
}

#[test]
fn overlays_wire_probes_metrics_volume_service_and_scaling_together() {
    let test = "overlays_wire_probes_metrics_volume_service_and_scaling_together";
    let Some(kubectl) = require("kubectl", test) else {
        return;
    };
    for overlay in overlays() {
        let docs = render(&kubectl, &format!("deploy/overlays/{overlay}"));
        let dep = find(&docs, "Deployment");
        let pod = &dep["spec"]["template"];
        let spec = &pod["spec"];
        let c = container(spec);
        let port = c["ports"][0]["containerPort"].as_u64().unwrap();
        let port_name = c["ports"][0]["name"].as_str().unwrap();
        // Probes on wasmbox's management endpoints, on its serving port.
        for (probe, path) in [("livenessProbe", "/-/live"), ("readinessProbe", "/-/ready")] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{overlay}: {probe}");
            assert_eq!(c[probe]["httpGet"]["port"], port_name, "{overlay}: {probe}");
        }
        // Prometheus scrapes /-/metrics on the container port.
        let ann = &pod["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true", "{overlay}");
        assert_eq!(ann["prometheus.io/path"], "/-/metrics", "{overlay}");
        assert_eq!(ann["prometheus.io/port"], port.to_string(), "{overlay}");
        // Resources set, so admission capacity and QoS are defined.
        for r in ["requests", "limits"] {
            for k in ["cpu", "memory"] {
                assert!(
                    c["resources"][r][k].is_string(),
                    "{overlay}: resources.{r}.{k}"
                );
            }
        }
        // The Service reaches the pods' named port; its selector matches them.
        let svc = find(&docs, "Service");
        assert_eq!(
            svc["spec"]["ports"][0]["targetPort"], port_name,
            "{overlay}"
        );
        let labels = pod["metadata"]["labels"].as_object().unwrap();
        for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
            assert_eq!(labels.get(k), Some(v), "{overlay}: Service selector {k}");
        }
        // The functions volume is the PVC the overlay creates.
        let pvc = find(&docs, "PersistentVolumeClaim");
        let claim = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|v| v.pointer("/persistentVolumeClaim/claimName"))
            .expect("a PVC volume");
        assert_eq!(claim, &pvc["metadata"]["name"], "{overlay}");
        // Exactly one scaler, aimed at this Deployment.
        let scalers: Vec<&Value> = docs
            .iter()
            .filter(|d| matches!(kind(d), "HorizontalPodAutoscaler" | "ScaledObject"))
            .collect();
        assert_eq!(scalers.len(), 1, "{overlay}: one HPA or ScaledObject");
        assert_eq!(
            scalers[0]["spec"]["scaleTargetRef"]["name"], dep["metadata"]["name"],
            "{overlay}"
        );
        // Privileges only where the isolation mode needs them.
        let mode = expected_isolation(&overlay);
        let sc = &c["securityContext"];
        let privileged = sc["privileged"].as_bool().unwrap_or(false);
        let host_paths = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.get("hostPath").is_some())
            .count();
        match mode {
            "throttle" => {
                assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{overlay}");
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay}");
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{overlay}");
                assert!(!privileged && host_paths == 0, "{overlay}");
            }
            "cgroup-v2" => {
                assert_eq!(
                    spec["hostUsers"], false,
                    "{overlay}: needs a user namespace"
                );
                assert!(!privileged && host_paths == 0, "{overlay}");
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{overlay}");
            }
            _ => {
                assert!(
                    privileged && host_paths == 1,
                    "{overlay}: the reference's set-up"
                );
            }
        }
    }
}

#[test]
fn overlay_environments_are_accepted_by_wasmbox() {
    let test = "overlay_environments_are_accepted_by_wasmbox";
    let Some(kubectl) = require("kubectl", test) else {
        return;
    };
    for overlay in overlays() {
        let docs = render(&kubectl, &format!("deploy/overlays/{overlay}"));
        let spec = &find(&docs, "Deployment")["spec"]["template"]["spec"];
        let report = assert_env_accepted(&overlay, spec, BTreeMap::new());
        assert_eq!(
            setting(&report, "cpu-isolation"),
            expected_isolation(&overlay),
            "{overlay}"
        );
        // The downward API hands wasmbox the container's limits as capacity.
        let c = container(spec);
        assert_eq!(
            setting(&report, "capacity-memory-mb"),
            quantity(c["resources"]["limits"]["memory"].as_str().unwrap(), "1Mi").to_string(),
            "{overlay}"
        );
    }
}

/// What Knative (stock or the fork) requires of a Service, and what it
/// reserves; returns the revision's pod spec.
fn assert_knative_service(file: &str, doc: &Value) -> Value {
    assert_eq!(doc["apiVersion"], "serving.knative.dev/v1", "{file}");
    assert_eq!(kind(doc), "Service", "{file}");
    assert!(
        doc["metadata"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty()),
        "{file}: metadata.name"
    );
    let tmpl = &doc["spec"]["template"];
    let spec = &tmpl["spec"];
    let c = container(spec);
    assert!(
        c["image"].as_str().is_some_and(|i| !i.is_empty()),
        "{file}: image"
    );
    let ports = c["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1, "{file}: Knative allows one port");
    assert!(
        matches!(
            ports[0]["name"].as_str(),
            None | Some("http1") | Some("h2c")
        ),
        "{file}: port name"
    );
    let port = ports[0]["containerPort"].as_u64().unwrap();
    // Knative sets these itself and rejects them in the spec.
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap();
        assert!(
            !["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"].contains(&name),
            "{file}: {name} is reserved by Knative"
        );
    }
    for (probe, path) in [("livenessProbe", "/-/live"), ("readinessProbe", "/-/ready")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{file}: {probe}");
        assert!(
            get.get("port").is_none() || get["port"] == json!(port),
            "{file}: {probe} must use the serving port"
        );
    }
    let cc = spec["containerConcurrency"]
        .as_u64()
        .unwrap_or_else(|| panic!("{file}: containerConcurrency"));
    assert!(
        cc <= 1000,
        "{file}: containerConcurrency {cc} above Knative's 1000"
    );
    if let Some(t) = spec.get("timeoutSeconds") {
        assert!(
            t.as_u64().is_some_and(|t| (1..=600).contains(&t)),
            "{file}: timeoutSeconds"
        );
    }
    let ann = tmpl["metadata"]["annotations"]
        .as_object()
        .expect("annotations");
    for (k, v) in ann {
        assert!(
            v.is_string(),
            "{file}: annotation {k} must be a string, is {v}"
        );
    }
    let get = |k: &str| ann.get(k).and_then(Value::as_str);
    if let Some(class) = get("autoscaling.knative.dev/class") {
        assert!(
            ["kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"].contains(&class),
            "{file}: class {class}"
        );
    }
    let scale = |k: &str| {
        get(k).map(|v| {
            v.parse::<u32>()
                .unwrap_or_else(|_| panic!("{file}: {k}={v}"))
        })
    };
    if let (Some(min), Some(max)) = (
        scale("autoscaling.knative.dev/min-scale"),
        scale("autoscaling.knative.dev/max-scale"),
    ) {
        assert!(min <= max, "{file}: min-scale {min} > max-scale {max}");
    }
    for k in [
        "autoscaling.knative.dev/target",
        "autoscaling.knative.dev/target-utilization-percentage",
    ] {
        if let Some(v) = get(k) {
            assert!(v.parse::<f64>().is_ok_and(|x| x > 0.0), "{file}: {k}={v}");
        }
    }
    assert_eq!(get("prometheus.io/path"), Some("/-/metrics"), "{file}");
    assert_eq!(
        get("prometheus.io/port"),
        Some(port.to_string().as_str()),
        "{file}"
    );
    spec.clone()
}

const FORK_FIELDS: [&str; 3] = [
    "concurrentResourceRequest",
    "queueDepthResourceUnits",
    "resourceUtilizationThreshold",
];

/// Knative's PORT as the queue-proxy hands it to the user container.
fn knative_env(spec: &Value) -> BTreeMap<String, String> {
    let port = container(spec)["ports"][0]["containerPort"]
        .as_u64()
        .unwrap();
    BTreeMap::from([("PORT".to_string(), port.to_string())])
}

#[test]
fn knative_standalone_service_is_stock_knative_and_wasmbox_accepts_it() {
    let file = "deploy/knative/ksvc-standalone.yaml";
    let docs = read_yaml(file);
    assert_eq!(docs.len(), 1, "{file}: one document");
    let spec = assert_knative_service(file, &docs[0]);
    for f in FORK_FIELDS {
        assert!(
            spec.get(f).is_none(),
            "{file}: {f} is a field of the fork only"
        );
    }
    let ann = &docs[0]["spec"]["template"]["metadata"]["annotations"];
    assert!(ann.get("features.knative.dev/superpod").is_none(), "{file}");
    assert!(
        matches!(
            ann["autoscaling.knative.dev/metric"].as_str(),
            Some("concurrency" | "rps")
        ),
        "{file}: stock KPA metrics are concurrency and rps"
    );
    let report = assert_env_accepted(file, &spec, knative_env(&spec));
    assert_eq!(
        setting(&report, "qp-report"),
        "off",
        "{file}: no fork queue-proxy to report to"
    );
}

#[test]
fn knative_fork_service_has_the_superpod_fields_and_wasmbox_accepts_it() {
    let file = "deploy/knative/ksvc.yaml";
    let docs = read_yaml(file);
    assert_eq!(docs.len(), 1, "{file}: one document");
    let spec = assert_knative_service(file, &docs[0]);
    let ann = &docs[0]["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["features.knative.dev/superpod"], "Enabled", "{file}");
    assert_eq!(ann["autoscaling.knative.dev/metric"], "memory", "{file}");
    let crr = spec["concurrentResourceRequest"]
        .as_u64()
        .expect("concurrentResourceRequest");
    let qd = spec["queueDepthResourceUnits"]
        .as_u64()
        .expect("queueDepthResourceUnits");
    let rut = spec["resourceUtilizationThreshold"]
        .as_f64()
        .expect("resourceUtilizationThreshold");
    assert!(
        crr > 0 && qd >= crr,
        "{file}: queueDepthResourceUnits {qd} < concurrentResourceRequest {crr}"
    );

    let report = assert_env_accepted(file, &spec, knative_env(&spec));
    // The reporter reaches the fork's queue-proxy in the same pod.
    assert_eq!(
        setting(&report, "qp-report"),
        "ws://127.0.0.1:9096",
        "{file}"
    );
    assert_eq!(setting(&report, "reporting-period"), "50ms", "{file}");
    // wasmbox's capacity is the container's, and its own admission limit does
    // not hold back what the queue-proxy admits (requests queue once).
    let c = container(&spec);
    let limit_mb = quantity(c["resources"]["limits"]["memory"].as_str().unwrap(), "1Mi");
    let capacity: f64 = setting(&report, "capacity-memory-mb").parse().unwrap();
    assert_eq!(
        capacity, limit_mb as f64,
        "{file}: MEMORY_LIMIT vs limits.memory"
    );
    let overbook: f64 = setting(&report, "memory-overbook").parse().unwrap();
    assert!(
        capacity * overbook >= crr as f64,
        "{file}: wasmbox admits {} MB, the queue-proxy {crr}",
        capacity * overbook
    );
    let cores = quantity(c["resources"]["limits"]["cpu"].as_str().unwrap(), "1m") as f64 / 1000.0;
    assert!(
        rut > 0.0 && rut <= cores,
        "{file}: resourceUtilizationThreshold {rut} vs {cores} cores"
    );
}

#[test]
fn knative_pod_specs_pass_strict_schema_validation() {
    // kubernetes-validate has no schema for Knative's Service; its revision
    // template is a Kubernetes PodSpec plus Knative's own fields, so the
    // PodSpec part is validated inside a Deployment.
    let test = "knative_pod_specs_pass_strict_schema_validation";
    let Some(validator) = require("kubernetes-validate", test) else {
        return;
    };
    let knative_only = [
        "containerConcurrency",
        "timeoutSeconds",
        "responseStartTimeoutSeconds",
        "idleTimeoutSeconds",
    ];
    for file in [
        "deploy/knative/ksvc-standalone.yaml",
        "deploy/knative/ksvc.yaml",
    ] {
        let mut spec = read_yaml(file)[0]["spec"]["template"]["spec"].clone();
        for f in knative_only.iter().chain(FORK_FIELDS.iter()) {
            spec.as_object_mut().unwrap().remove(*f);
        }
        // Knative fills in a probe's port with the serving port.
        let c = &mut spec["containers"][0];
        let port = c["ports"][0]["containerPort"].clone();
        for probe in ["livenessProbe", "readinessProbe"] {
            if let Some(get) = c[probe]["httpGet"].as_object_mut() {
                get.entry("port").or_insert(port.clone());
            }
        }
        let deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "wasmbox"},
            "spec": {
                "selector": {"matchLabels": {"app": "wasmbox"}},
                "template": {"metadata": {"labels": {"app": "wasmbox"}}, "spec": spec},
            },
        });
        let (ok, report) = validate(&validator, &[deployment]);
        assert!(
            ok,
            "{file}: the pod spec fails kubernetes-validate --strict:\n{report}"
        );
    }
}

#[test]
fn check_config_reports_bad_environment_precisely() {
    let base = BTreeMap::from([("PORT".to_string(), "8080".to_string())]);
    let with = |k: &str, v: &str| {
        let mut env = base.clone();
        env.insert(k.into(), v.into());
        check_config(&["serve".into()], &env)
    };
    let (code, out, err) = with("WASMBOX_CPU_ISOLATION", "cgroup-v2");
    assert_eq!(code, 0, "{err}");
    assert_eq!(setting(&out, "cpu-isolation"), "cgroup-v2");
    assert!(
        out.contains("  WASMBOX_CPU_ISOLATION=cgroup-v2 (--cpu-isolation)"),
        "{out}"
    );

    let (code, _, err) = with("WASMBOX_CPU_ISOLATION", "cgroups");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid value 'cgroups'"), "{err}");
    assert!(
        err.contains("environment variable WASMBOX_CPU_ISOLATION"),
        "{err}"
    );

    let (code, _, err) = with("WASMBOX_TIMEOUT", "5y");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown unit 'y'") && err.contains("WASMBOX_TIMEOUT"),
        "{err}"
    );

    let (code, _, err) = with("WASMBOX_CPU_ISOLATON", "throttle");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("WASMBOX_CPU_ISOLATON is not an environment variable wasmbox reads (did you mean WASMBOX_CPU_ISOLATION?)"), "{err}");

    let (code, _, err) = with("WASM_RUNTIME", "wasmedge");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "WASM_RUNTIME is a setting of the reference prototype that wasmbox does not read"
        ),
        "{err}"
    );

    let (code, _, err) = with("READINESS_UTILIZATION_TRESHOLD", "1.5");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--readiness-threshold 1.5 must be in (0, 1]"),
        "{err}"
    );

    let mut env = base.clone();
    env.insert("PORT".into(), "http".into());
    let (code, _, err) = check_config(&["serve".into()], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("PORT=http is not a port number"), "{err}");
}

/// One HTTP/1.1 request; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\ncpu_quota: 500\r\nMemory-Request: 64\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {resp:?}")))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Bodies are small here; undo chunked encoding if the server used it.
    let body = if resp
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body
    };
    Ok((status, body))
}

/// Polls `GET path` until it answers 200, up to `deadline`.
fn wait_ready(port: u16, path: &str, deadline: Duration, what: impl Fn() -> String) {
    let start = Instant::now();
    loop {
        match http(port, "GET", path, "") {
            Ok((200, _)) => return,
            r if start.elapsed() > deadline => {
                panic!(
                    "{path} not 200 after {deadline:?} (last: {r:?}):\n{}",
                    what()
                )
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn scaling_rules_use_metrics_wasmbox_serves() {
    // The HPA's and KEDA's metric names against a real wasmbox's /-/metrics.
    let hpa = read_yaml("deploy/base/hpa.yaml");
    let keda = read_yaml("deploy/overlays/keda/scaledobject.yaml");
    let mut names = vec![hpa[0]["spec"]["metrics"][0]["pods"]["metric"]["name"]
        .as_str()
        .expect("HPA pods metric")
        .to_string()];
    let query = keda[0]["spec"]["triggers"][0]["metadata"]["query"]
        .as_str()
        .unwrap();
    let mut rest = query;
    while let Some(i) = rest.find("wasmbox_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.push(name);
    }
    assert!(names.len() >= 3, "metric names found: {names:?}");

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let port = free_port();
    let _server = Kill(
        Command::new(env!("CARGO_BIN_EXE_wasmbox"))
            .env_clear()
            .args([
                "serve",
                "--cpu-isolation",
                "throttle",
                "--host",
                "127.0.0.1",
            ])
            .arg("--port")
            .arg(port.to_string())
            .arg("--functions")
            .arg(repo().join("functions"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(port, "/-/ready", Duration::from_secs(30), String::new);
    let (status, metrics) = http(port, "GET", "/-/metrics", "").unwrap();
    assert_eq!(status, 200);
    for name in &names {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
            "metric {name} (used for scaling) is not served:\n{metrics}"
        );
    }
}

/// True when the ELF file has no program interpreter (PT_INTERP), i.e. it is
/// statically linked and runs on `scratch`.
fn is_static_elf(bytes: &[u8]) -> bool {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let p = phoff + i * phentsize;
        u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap()) != 3
    })
}

/// Removes the test's container and image however the test ends.
struct Podman {
    bin: PathBuf,
    container: String,
    image: String,
}

impl Podman {
    fn cmd(&self) -> Command {
        Command::new(&self.bin)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rm", "-f", "-t", "0", &self.container])
            .output();
        let _ = self.cmd().args(["rmi", "-f", &self.image]).output();
    }
}

#[test]
fn image_builds_and_serves_bundled_functions_from_a_container() {
    let test = "image_builds_and_serves_bundled_functions_from_a_container";
    let (Some(podman), Some(_runc)) = (require("podman", test), require("runc", test)) else {
        return;
    };
    let Some(_) = require("musl-gcc", test) else {
        return;
    };
    let sysroot = run_ok(Command::new("rustc").args(["--print", "sysroot"]));
    let musl = Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-musl");
    if !musl.is_dir() {
        let msg = format!(
            "{test}: the x86_64-unknown-linux-musl target is not installed (scripts/setup-deploy.sh adds it)"
        );
        assert_ne!(
            std::env::var("WASMBOX_REQUIRE_DEPLOY").as_deref(),
            Ok("1"),
            "{msg}"
        );
        let _ = writeln!(std::io::stderr(), "SKIPPED {msg}");
        return;
    }
    let repo = repo();
    let bundled = ["hello.wat", "echo.wasm", "wc.wasm"];
    for f in bundled {
        assert!(
            repo.join("functions").join(f).is_file(),
            "functions/{f} is missing: run ./functions/build.sh first (scripts/test.sh does)"
        );
    }

    // The static binary the Containerfile copies.
    let started = Instant::now();
    // Stripped, as scripts/deploy-image.sh builds it (the release profile
    // keeps line tables: 127 MB instead of 20).
    run_ok(
        Command::new(env!("CARGO"))
            .current_dir(&repo)
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
            .args([
                "build",
                "--release",
                "--target",
                "x86_64-unknown-linux-musl",
                "-p",
                "wasmbox",
            ]),
    );
    let binary = repo.join("target/x86_64-unknown-linux-musl/release/wasmbox");
    assert!(
        is_static_elf(&std::fs::read(&binary).unwrap()),
        "{} is not static",
        binary.display()
    );
    eprintln!("musl build: {:.1?}", started.elapsed());

    let unique = format!(
        "wasmbox-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let p = Podman {
        bin: podman,
        container: unique.clone(),
        image: format!("localhost/{unique}:test"),
    };
    let started = Instant::now();
    run_ok(p.cmd().current_dir(&repo).args([
        "build",
        "-q",
        "-f",
        "Containerfile",
        "-t",
        &p.image,
        ".",
    ]));
    let inspect = run_ok(p.cmd().args(["image", "inspect", &p.image]));
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    let img = &inspect[0];
    let size = img["Size"].as_u64().unwrap();
    eprintln!(
        "image built in {:.1?}: {:.1} MiB ({size} bytes)",
        started.elapsed(),
        size as f64 / (1 << 20) as f64
    );
    assert_eq!(img["Config"]["User"], "65532:65532");
    assert!(
        img["Config"]["ExposedPorts"].get("8080/tcp").is_some(),
        "{}",
        img["Config"]
    );
    assert_eq!(
        img["Config"]["Entrypoint"],
        json!(["/usr/local/bin/wasmbox"])
    );
    assert_eq!(img["Config"]["Cmd"], json!(["serve"]));
    // Only the binary and the functions: scratch adds nothing, so the image
    // is the binary plus the functions, give or take the layer metadata.
    let functions: u64 = std::fs::read_dir(repo.join("functions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") || p.ends_with("hello.wat"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let payload = std::fs::metadata(&binary).unwrap().len() + functions;
    assert!(
        size >= payload && size < payload + (1 << 20),
        "image {size} bytes, binary + functions {payload}"
    );

    // Run it as Knative would: PORT set, nothing else.
    let host_port = free_port();
    run_ok(p.cmd().args([
        "run",
        "-d",
        "--name",
        &p.container,
        "--runtime=runc",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1000:1000",
        "-e",
        "PORT=8080",
        "-p",
        &format!("127.0.0.1:{host_port}:8080"),
        &p.image,
    ]));
    let logs = || {
        let out = run(p.cmd().args(["logs", &p.container]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    wait_ready(host_port, "/-/ready", Duration::from_secs(60), logs);

    let (status, body) = http(host_port, "GET", "/hello", "").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello from wasmbox!\n"),
        "{}",
        logs()
    );
    let (status, body) = http(
        host_port,
        "POST",
        "/echo?arg=--upper&arg=hi",
        "from outside",
    )
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "hi\nFROM OUTSIDE"),
        "{}",
        logs()
    );
    let (status, body) = http(host_port, "POST", "/wc", "one two\nthree\n").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.split_whitespace().take(3).collect::<Vec<_>>(),
        ["2", "3", "14"],
        "{body}"
    );
    let (_, listed) = http(host_port, "GET", "/-/functions", "").unwrap();
    for f in bundled {
        assert!(listed.contains(f), "{f} not in /-/functions: {listed}");
    }

    // Non-root inside the container, so auto isolation settled on throttle.
    let top = run_ok(p.cmd().args(["top", &p.container, "huser", "comm"]));
    assert!(
        top.lines()
            .any(|l| l.split_whitespace().eq(["65532", "wasmbox"])),
        "{top}"
    );
    let log = logs();
    assert!(
        log.contains("mode=throttle"),
        "isolation not throttle as non-root:\n{log}"
    );

    // SIGTERM drains and exits 0.
    run_ok(p.cmd().args(["stop", "-t", "20", &p.container]));
    let code = run_ok(
        p.cmd()
            .args(["inspect", "--format", "{{.State.ExitCode}}", &p.container]),
    );
    assert_eq!(code.trim(), "0", "exit status after SIGTERM:\n{}", logs());
}
