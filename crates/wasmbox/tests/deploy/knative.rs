//! The Knative services (stock and the superpod fork) and `serve --check-config` on bad environments.

use super::*;

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
    // Prometheus scrapes the admin listener (assert_scraped_on_admin_port),
    // which Knative does not route: a second declared port is refused.
    assert_eq!(get("prometheus.io/path"), Some("/-/metrics"), "{file}");
    assert_ne!(
        get("prometheus.io/port"),
        Some(port.to_string().as_str()),
        "{file}: the serving port no longer serves /-/metrics"
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
    assert_scraped_on_admin_port(file, &report, &spec, ann);
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
    assert_scraped_on_admin_port(file, &report, &spec, ann);
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

    let (code, _, err) = with("WASMBOX_ADMIN_LISTEN", "9464");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("invalid value '9464'") && err.contains("WASMBOX_ADMIN_LISTEN"),
        "{err}"
    );

    let (code, _, err) = with("WASMBOX_ADMIN_TOKEN", "");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the admin token from WASMBOX_ADMIN_TOKEN is empty"),
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
