//! The Kubernetes overlays: rendered, strictly validated, wired together, and their environments accepted by wasmbox.

use super::*;

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
