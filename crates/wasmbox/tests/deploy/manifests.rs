//! The Kubernetes overlays: rendered, strictly validated, wired together, and their environments accepted by wasmbox.

use super::*;

fn labels_of(pod: &Value) -> &serde_json::Map<String, Value> {
    pod["metadata"]["labels"].as_object().unwrap()
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
        // Prometheus scrapes /-/metrics on the admin port, which is not
        // the serving port.
        let ann = &pod["metadata"]["annotations"];
        let admin = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "admin")
            .unwrap_or_else(|| panic!("{overlay}: no container port named admin"));
        let admin_port = admin["containerPort"].as_u64().unwrap();
        assert_ne!(admin_port, port, "{overlay}");
        assert_eq!(ann["prometheus.io/scrape"], "true", "{overlay}");
        assert_eq!(ann["prometheus.io/path"], "/-/metrics", "{overlay}");
        assert_eq!(
            ann["prometheus.io/port"],
            admin_port.to_string(),
            "{overlay}"
        );
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
        // ... and only that port: the admin port is not behind the Service.
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert!(
                p["targetPort"] != "admin" && p["targetPort"] != json!(admin_port),
                "{overlay}: the Service exposes the admin port"
            );
        }
        // The NetworkPolicy selects these pods, opens the serving port and
        // admits only a namespace selector to the admin port.
        let np = find(&docs, "NetworkPolicy");
        for (k, v) in np["spec"]["podSelector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                labels_of(pod).get(k),
                Some(v),
                "{overlay}: NetworkPolicy selector {k}"
            );
        }
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]), "{overlay}");
        let rules = np["spec"]["ingress"].as_array().unwrap();
        let rule_for = |name: &str| {
            rules
                .iter()
                .find(|r| {
                    r["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["port"] == name)
                })
                .unwrap_or_else(|| panic!("{overlay}: no ingress rule for port {name}"))
        };
        assert!(
            rule_for(port_name).get("from").is_none(),
            "{overlay}: serving port open"
        );
        let admin_from = rule_for("admin")["from"]
            .as_array()
            .expect("admin port restricted");
        assert!(
            !admin_from.is_empty()
                && admin_from
                    .iter()
                    .all(|f| f.get("namespaceSelector").is_some()),
            "{overlay}: the admin port admits only selected namespaces"
        );
        for r in rules {
            let ports = r["ports"].as_array().unwrap();
            assert!(
                !(ports.iter().any(|p| p["port"] == "admin") && r.get("from").is_none()),
                "{overlay}: a rule opens the admin port to everyone"
            );
        }
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
        let pod = &find(&docs, "Deployment")["spec"]["template"];
        let report = assert_env_accepted(&overlay, spec, BTreeMap::new());
        let admin =
            assert_scraped_on_admin_port(&overlay, &report, spec, &pod["metadata"]["annotations"]);
        let declared = container(spec)["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "admin")
            .map(|p| p["containerPort"].as_u64().unwrap());
        assert_eq!(
            declared,
            Some(u64::from(admin)),
            "{overlay}: the admin container port"
        );
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
