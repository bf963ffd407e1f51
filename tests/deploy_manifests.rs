//! The Kubernetes manifests in deploy/kubernetes/, deploy/Dockerfile and
//! deploy/iam-policy.json agree with each other and with the gateway config
//! the ConfigMap ships, which is loaded through the real config loader: the
//! ports, the probes, the mounted paths, the shutdown budget, the replica
//! bounds and the Redis the replicas share cannot drift apart unnoticed.
//! The overlays in deploy/overlays/ build on the base, and the config each
//! one ships loads too.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use partner_events_gateway::{
    config::{AuthMode, Config, RawConfig, UpstreamKind},
    server::SERVICE_NAME,
};
use serde::Deserialize;
use serde_yaml::Value;

/// The ConfigMap key holding the gateway's TOML file.
const CONFIG_KEY: &str = "gateway.toml";

/// The gateway's Deployment, and the `app.kubernetes.io/name` of its
/// objects (the in-cluster Redis has objects of the same kinds).
const GATEWAY: &str = "partner-events-gateway";

/// EventBridge's default PutPartnerEvents quota per account and region
/// (calls per second), as `quotas.upstream_calls_per_second` documents it.
const ACCOUNT_CALLS_PER_SECOND: f64 = 1_400.0;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn k8s_dir() -> PathBuf {
    deploy_dir().join("kubernetes")
}

fn overlays_dir() -> PathBuf {
    deploy_dir().join("overlays")
}

/// Every YAML document of every file in deploy/kubernetes/, with its file name.
struct Manifests {
    docs: Vec<(String, Value)>,
}

impl Manifests {
    fn load() -> Self {
        let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
            .expect("deploy/kubernetes/ exists")
            .map(|e| e.unwrap().path())
            .filter(|p| is_yaml(p))
            .collect();
        files.sort();
        let mut docs = Vec::new();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let mut in_file = 0;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value =
                    Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
                // `---` followed by nothing is an empty document, not an object.
                if value.is_null() {
                    continue;
                }
                docs.push((name.clone(), value));
                in_file += 1;
            }
            assert!(in_file > 0, "{name}: holds no YAML document");
        }
        Self { docs }
    }

    /// The one object of `kind` (and `name`, when given).
    fn one(&self, kind: &str, name: Option<&str>) -> &Value {
        let found: Vec<&Value> = self
            .docs
            .iter()
            .map(|(_, v)| v)
            .filter(|v| v.get("kind").and_then(Value::as_str) == Some(kind))
            .filter(|v| name.is_none() || Some(s(v, &["metadata", "name"])) == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected exactly one {kind} {name:?} in deploy/kubernetes/, found {}",
            found.len()
        );
        found[0]
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs
            .iter()
            .map(|(_, v)| v)
            .filter(|v| v.get("kind").and_then(Value::as_str) == Some(kind))
            .collect()
    }

    /// The gateway's Deployment.
    fn deployment(&self) -> &Value {
        self.one("Deployment", Some(GATEWAY))
    }

    /// The gateway Deployment's only container.
    fn container(&self) -> &Value {
        let containers = seq(
            self.deployment(),
            &["spec", "template", "spec", "containers"],
        );
        assert_eq!(containers.len(), 1, "the gateway pod has one container");
        &containers[0]
    }

    /// The objects of `kind` that belong to the gateway itself (by their
    /// `app.kubernetes.io/name` label), not to the Redis beside it.
    fn gateway_objects(&self, kind: &str) -> Vec<&Value> {
        self.all(kind)
            .into_iter()
            .filter(|v| {
                at(v, &["metadata", "labels", "app.kubernetes.io/name"]).and_then(Value::as_str)
                    == Some(GATEWAY)
            })
            .collect()
    }
}

fn is_yaml(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    at(v, path).unwrap_or_else(|| panic!("missing `{}`", path.join(".")))
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{}` is not a string", path.join(".")))
}

fn u(v: &Value, path: &[&str]) -> u64 {
    get(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("`{}` is not a non-negative integer", path.join(".")))
}

fn seq<'a>(v: &'a Value, path: &[&str]) -> &'a Vec<Value> {
    get(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("`{}` is not a list", path.join(".")))
}

fn string_map(v: &Value, path: &[&str]) -> BTreeMap<String, String> {
    get(v, path)
        .as_mapping()
        .unwrap_or_else(|| panic!("`{}` is not a map", path.join(".")))
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().expect("string key").to_string(),
                v.as_str()
                    .unwrap_or_else(|| panic!("`{}`: {k:?} is not a string", path.join(".")))
                    .to_string(),
            )
        })
        .collect()
}

fn port_of(addr: &str, field: &str) -> u16 {
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{field} = `{addr}` is not an address: {e}"))
        .port()
}

/// The gateway config the ConfigMap ships: validated by the real loader, and
/// as written (for the fields the validated `Config` does not carry).
struct Gateway {
    config: Config,
    raw: RawConfig,
}

impl Gateway {
    fn from(m: &Manifests) -> Self {
        let cm = m.one("ConfigMap", None);
        let text = s(cm, &["data", CONFIG_KEY]);
        let config = Config::from_toml(text, "configmap")
            .unwrap_or_else(|e| panic!("the ConfigMap's {CONFIG_KEY} does not load: {e}"));
        let raw: RawConfig = toml::from_str(text).unwrap();
        Self { config, raw }
    }

    fn grpc_port(&self) -> u16 {
        self.config.listen.port()
    }

    fn health_port(&self) -> u16 {
        port_of(&self.raw.server.health_listen, "server.health_listen")
    }

    fn metrics_port(&self) -> u16 {
        port_of(&self.raw.metrics.listen, "metrics.listen")
    }
}

/// Which object key a file in the container comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    ConfigMap { name: String, key: String },
    Secret { name: String, key: String },
}

/// Every file the Deployment's volumes put into the container, by absolute
/// path. ConfigMap volumes without `items` project all of the ConfigMap's
/// keys; Secret volumes must list their items (the Secret is not in the base).
fn mounted_files(m: &Manifests) -> BTreeMap<String, Source> {
    let pod = get(m.deployment(), &["spec", "template", "spec"]);
    let volumes: BTreeMap<&str, &Value> = seq(pod, &["volumes"])
        .iter()
        .map(|v| (s(v, &["name"]), v))
        .collect();
    let configmap_keys = |name: &str| -> Vec<String> {
        string_map(m.one("ConfigMap", Some(name)), &["data"])
            .into_keys()
            .collect()
    };
    // (path inside the volume, source)
    let items_of = |src: &Value, is_secret: bool| -> Vec<(String, Source)> {
        let name = if is_secret {
            at(src, &["secretName"])
                .or_else(|| at(src, &["name"]))
                .and_then(Value::as_str)
                .expect("a secret volume names its Secret")
                .to_string()
        } else {
            s(src, &["name"]).to_string()
        };
        let make = |key: String| {
            if is_secret {
                Source::Secret {
                    name: name.clone(),
                    key,
                }
            } else {
                Source::ConfigMap {
                    name: name.clone(),
                    key,
                }
            }
        };
        match at(src, &["items"]) {
            Some(items) => items
                .as_sequence()
                .expect("items is a list")
                .iter()
                .map(|i| {
                    (
                        s(i, &["path"]).to_string(),
                        make(s(i, &["key"]).to_string()),
                    )
                })
                .collect(),
            None => {
                assert!(!is_secret, "secret volume {name}: list its items");
                configmap_keys(&name)
                    .into_iter()
                    .map(|k| (k.clone(), make(k)))
                    .collect()
            }
        }
    };
    let mut files = BTreeMap::new();
    for mount in seq(m.container(), &["volumeMounts"]) {
        let volume = volumes
            .get(s(mount, &["name"]))
            .unwrap_or_else(|| panic!("volumeMount {:?} has no volume", mount));
        let mut inside = Vec::new();
        if let Some(cm) = at(volume, &["configMap"]) {
            inside.extend(items_of(cm, false));
        }
        if let Some(secret) = at(volume, &["secret"]) {
            inside.extend(items_of(secret, true));
        }
        if let Some(sources) = at(volume, &["projected", "sources"]) {
            for src in sources.as_sequence().expect("projected.sources is a list") {
                if let Some(cm) = at(src, &["configMap"]) {
                    inside.extend(items_of(cm, false));
                }
                if let Some(secret) = at(src, &["secret"]) {
                    inside.extend(items_of(secret, true));
                }
            }
        }
        let mount_path = s(mount, &["mountPath"]).trim_end_matches('/');
        let sub_path = at(mount, &["subPath"]).and_then(Value::as_str);
        for (path, source) in inside {
            match sub_path {
                Some(sub) if sub == path => {
                    files.insert(mount_path.to_string(), source);
                }
                Some(_) => {}
                None => {
                    files.insert(format!("{mount_path}/{path}"), source);
                }
            }
        }
    }
    files
}

/// The value after `--config` (or `--config=`) in an argument list.
fn config_flag(args: &[String]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" || a == "-c" {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix("--config=").map(str::to_string)
        }
    })
}

/// The instructions of the Dockerfile's final stage, keyword uppercased,
/// continuation lines joined, comments dropped.
fn dockerfile_final_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (kw, rest) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push((kw.to_ascii_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|(kw, _)| kw == "FROM")
        .expect("the Dockerfile has a FROM");
    instructions.split_off(last_from)
}

fn dockerfile_one(stage: &[(String, String)], keyword: &str) -> String {
    let found: Vec<&String> = stage
        .iter()
        .filter(|(kw, _)| kw == keyword)
        .map(|(_, rest)| rest)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "the final stage needs exactly one {keyword}"
    );
    found[0].clone()
}

fn exec_form(keyword: &str, rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|e| panic!("{keyword} must be in exec (JSON) form, got `{rest}`: {e}"))
}

/// `*` stands for any run of characters (IAM resource patterns).
fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (head.len()..=text.len()).any(|i| glob_match(tail, &text[i..]))
        }
    }
}

fn one_or_many(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().expect("a string").to_string())
            .collect(),
        other => panic!("expected a string or a list, got {other}"),
    }
}

#[test]
fn every_manifest_is_a_kubernetes_object() {
    let m = Manifests::load();
    assert!(!m.docs.is_empty(), "no manifests in deploy/kubernetes/");
    for (file, doc) in &m.docs {
        for path in [&["apiVersion"][..], &["kind"], &["metadata", "name"]] {
            let value = at(doc, path).and_then(Value::as_str).unwrap_or("");
            assert!(
                !value.is_empty(),
                "{file}: a document without `{}`",
                path.join(".")
            );
        }
    }
}

#[test]
fn kustomization_lists_every_manifest() {
    let k = std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).unwrap();
    let k: Value = serde_yaml::from_str(&k).unwrap();
    let listed: BTreeSet<String> = seq(&k, &["resources"])
        .iter()
        .map(|r| r.as_str().expect("a resource path").to_string())
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| is_yaml(p))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources vs files");

    let m = Manifests::load();
    let namespace = m.one("Namespace", None);
    assert_eq!(
        s(&k, &["namespace"]),
        s(namespace, &["metadata", "name"]),
        "kustomization.yaml puts everything in the namespace namespace.yaml creates"
    );
}

#[test]
fn the_configmap_config_loads_and_fits_a_cluster() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    assert_eq!(g.config.sdk.kind, UpstreamKind::Aws);
    assert!(
        !g.config.listen.ip().is_loopback(),
        "server.listen on loopback is unreachable from the Service"
    );
    assert!(
        g.raw.tls.is_some(),
        "the gRPC port is served with TLS in the cluster"
    );
    assert_eq!(g.raw.auth.mode, AuthMode::Required);
    assert!(!g.raw.auth.callers.is_empty(), "auth needs a caller");
    // The kubelet's gRPC probes speak no TLS: they need their own port.
    assert_ne!(
        g.health_port(),
        g.grpc_port(),
        "server.health_listen must be a separate plaintext port"
    );
    assert_ne!(g.metrics_port(), g.grpc_port());
    assert_ne!(g.metrics_port(), g.health_port());
    // Behind a ClusterIP Service, connections must be recycled to rebalance.
    assert!(
        g.raw.server.max_connection_age_ms > 0,
        "server.max_connection_age_ms must be set behind an L4 Service"
    );
}

#[test]
fn container_ports_are_the_configured_ports() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    let ports: BTreeMap<String, u64> = seq(m.container(), &["ports"])
        .iter()
        .map(|p| (s(p, &["name"]).to_string(), u(p, &["containerPort"])))
        .collect();
    let expected: BTreeMap<String, u64> = [
        ("grpc", g.grpc_port()),
        ("health", g.health_port()),
        ("metrics", g.metrics_port()),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_string(), u64::from(p)))
    .collect();
    assert_eq!(ports, expected, "container ports vs the ConfigMap's config");
}

#[test]
fn probes_ask_the_plaintext_health_port() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    let c = m.container();
    let health = u64::from(g.health_port());

    assert_eq!(u(c, &["readinessProbe", "grpc", "port"]), health);
    assert_eq!(
        s(c, &["readinessProbe", "grpc", "service"]),
        SERVICE_NAME,
        "readiness must follow the gateway's own service status"
    );
    assert_eq!(u(c, &["livenessProbe", "grpc", "port"]), health);
    let liveness_service = at(c, &["livenessProbe", "grpc", "service"])
        .map(|v| v.as_str().expect("a string"))
        .unwrap_or("");
    assert_eq!(
        liveness_service, "",
        "liveness asks for the server as a whole"
    );
}

#[test]
fn services_select_the_pods_and_target_the_grpc_port() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    let pod_labels = string_map(m.deployment(), &["spec", "template", "metadata", "labels"]);
    let container_ports: BTreeMap<String, u64> = seq(m.container(), &["ports"])
        .iter()
        .map(|p| (s(p, &["name"]).to_string(), u(p, &["containerPort"])))
        .collect();
    let target = |port: &Value| -> u64 {
        match get(port, &["targetPort"]) {
            Value::String(name) => *container_ports
                .get(name)
                .unwrap_or_else(|| panic!("targetPort {name} names no container port")),
            other => other.as_u64().expect("a port number or name"),
        }
    };

    let services = m.gateway_objects("Service");
    assert_eq!(services.len(), 2, "a ClusterIP and a headless Service");
    let mut headless = 0;
    for svc in services {
        let name = s(svc, &["metadata", "name"]);
        let selector = string_map(svc, &["spec", "selector"]);
        assert!(!selector.is_empty(), "{name}: no selector");
        for (k, v) in &selector {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "{name}: selector {k}={v} does not match the pod template"
            );
        }
        let ports = seq(svc, &["spec", "ports"]);
        let grpc = ports
            .iter()
            .find(|p| s(p, &["name"]) == "grpc")
            .unwrap_or_else(|| panic!("{name}: no port named grpc"));
        assert_eq!(
            target(grpc),
            u64::from(g.grpc_port()),
            "{name}: the grpc port must reach server.listen"
        );
        if let Some(metrics) = ports.iter().find(|p| s(p, &["name"]) == "metrics") {
            assert_eq!(target(metrics), u64::from(g.metrics_port()), "{name}");
        }
        if at(svc, &["spec", "clusterIP"]).and_then(Value::as_str) == Some("None") {
            headless += 1;
            // Clients dial pod IPs from DNS at this port: it must be the
            // container's own.
            assert_eq!(u(grpc, &["port"]), u64::from(g.grpc_port()), "{name}");
        }
    }
    assert_eq!(
        headless, 1,
        "one headless Service for client-side balancing"
    );
}

#[test]
fn shutdown_fits_in_the_termination_grace_period() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    let pod = get(m.deployment(), &["spec", "template", "spec"]);
    let termination_ms = u(pod, &["terminationGracePeriodSeconds"]) * 1000;
    // The kubelet's countdown starts before the preStop hook.
    let pre_stop_ms = at(m.container(), &["lifecycle", "preStop", "sleep", "seconds"])
        .map(|v| v.as_u64().expect("seconds") * 1000)
        .unwrap_or(0);
    let grace_ms = g.config.shutdown_grace.as_millis() as u64;
    assert!(
        termination_ms > pre_stop_ms + grace_ms,
        "terminationGracePeriodSeconds ({termination_ms} ms) must exceed the preStop sleep \
         ({pre_stop_ms} ms) plus server.shutdown_grace_ms ({grace_ms} ms)"
    );
}

#[test]
fn the_config_and_tls_files_are_mounted_where_they_are_read() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    let files = mounted_files(&m);
    let c = m.container();
    assert!(
        at(c, &["command"]).is_none(),
        "the image's ENTRYPOINT runs the gateway; do not override it"
    );
    let args: Vec<String> = match at(c, &["args"]) {
        Some(args) => args
            .as_sequence()
            .expect("args is a list")
            .iter()
            .map(|a| a.as_str().expect("a string").to_string())
            .collect(),
        None => exec_form("CMD", &dockerfile_one(&dockerfile_final_stage(), "CMD")),
    };
    let config_path = config_flag(&args).expect("the container passes --config");
    let configmap = m.one("ConfigMap", None);
    assert_eq!(
        files.get(&config_path),
        Some(&Source::ConfigMap {
            name: s(configmap, &["metadata", "name"]).to_string(),
            key: CONFIG_KEY.to_string(),
        }),
        "--config {config_path} is not the ConfigMap's {CONFIG_KEY} (mounted: {files:?})"
    );

    let tls = g.raw.tls.as_ref().expect("[tls]");
    let mut paths = vec![
        ("tls.cert_file", &tls.cert_file),
        ("tls.key_file", &tls.key_file),
    ];
    if let Some(ca) = &tls.client_ca_file {
        paths.push(("tls.client_ca_file", ca));
    }
    for (field, path) in paths {
        assert!(
            matches!(files.get(path.as_str()), Some(Source::Secret { .. })),
            "{field} = {path} is not mounted from a Secret (mounted: {files:?})"
        );
    }
}

#[test]
fn the_dockerfile_agrees_with_the_manifests() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    let stage = dockerfile_final_stage();

    let cmd = exec_form("CMD", &dockerfile_one(&stage, "CMD"));
    let cmd_config = config_flag(&cmd).expect("CMD passes --config");
    let files = mounted_files(&m);
    let configmap = m.one("ConfigMap", None);
    assert_eq!(
        files.get(&cmd_config),
        Some(&Source::ConfigMap {
            name: s(configmap, &["metadata", "name"]).to_string(),
            key: CONFIG_KEY.to_string(),
        }),
        "the image's CMD reads {cmd_config}, where the ConfigMap's {CONFIG_KEY} is not mounted"
    );
    assert_eq!(cmd.first().map(String::as_str), Some("serve"));

    let entrypoint = exec_form("ENTRYPOINT", &dockerfile_one(&stage, "ENTRYPOINT"));
    assert_eq!(entrypoint, ["/partner-events-gateway"]);

    let exposed: BTreeSet<u16> = stage
        .iter()
        .filter(|(kw, _)| kw == "EXPOSE")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .map(|p| {
            p.trim_end_matches("/tcp")
                .parse()
                .unwrap_or_else(|e| panic!("EXPOSE {p}: {e}"))
        })
        .collect();
    let expected = BTreeSet::from([g.grpc_port(), g.health_port(), g.metrics_port()]);
    assert_eq!(exposed, expected, "EXPOSE vs the ConfigMap's config");

    // runAsNonRoot can only check a numeric user.
    let user = dockerfile_one(&stage, "USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER `{user}` must be numeric for runAsNonRoot"));
    assert_ne!(uid, 0, "the image must not run as root");
    let pod_uid = u(
        m.deployment(),
        &["spec", "template", "spec", "securityContext", "runAsUser"],
    );
    assert_eq!(u64::from(uid), pod_uid, "image USER vs pod runAsUser");
}

/// Every pod of every Deployment (the gateway's and the Redis beside it)
/// meets the `restricted` Pod Security Standard that namespace.yaml
/// enforces, with a read-only root and bounded resources.
#[test]
fn every_pod_runs_locked_down() {
    let m = Manifests::load();
    let deployments = m.all("Deployment");
    assert!(deployments.len() >= 2, "the gateway and its Redis");
    for deployment in deployments {
        let name = s(deployment, &["metadata", "name"]);
        let pod = get(deployment, &["spec", "template", "spec"]);
        assert_eq!(
            at(pod, &["securityContext", "seccompProfile", "type"]).and_then(Value::as_str),
            Some("RuntimeDefault"),
            "{name}: seccompProfile"
        );
        for c in seq(pod, &["containers"]) {
            let container = s(c, &["name"]);
            let either = |path: &[&str]| {
                at(c, &[&["securityContext"], path].concat())
                    .or_else(|| at(pod, &[&["securityContext"], path].concat()))
            };
            let non_root = either(&["runAsNonRoot"]).and_then(Value::as_bool);
            assert_eq!(non_root, Some(true), "{name}/{container}: runAsNonRoot");
            // runAsNonRoot alone refuses an image whose USER is root or a
            // name (the Valkey image's): the user must be a number.
            let uid = either(&["runAsUser"]).and_then(Value::as_u64);
            assert!(
                uid.is_some_and(|u| u != 0),
                "{name}/{container}: runAsUser must be a non-root uid, is {uid:?}"
            );
            assert_eq!(
                get(c, &["securityContext", "readOnlyRootFilesystem"]).as_bool(),
                Some(true),
                "{name}/{container}: readOnlyRootFilesystem"
            );
            assert_eq!(
                get(c, &["securityContext", "allowPrivilegeEscalation"]).as_bool(),
                Some(false),
                "{name}/{container}: allowPrivilegeEscalation"
            );
            let dropped: Vec<&str> = seq(c, &["securityContext", "capabilities", "drop"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(
                dropped,
                ["ALL"],
                "{name}/{container}: drop every capability"
            );
            for kind in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        at(c, &["resources", kind, resource]).is_some(),
                        "{name}/{container}: resources.{kind}.{resource} is not set"
                    );
                }
            }
        }
    }
}

#[test]
fn scaling_objects_target_the_deployment() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    let deployment = m.deployment();
    let name = s(deployment, &["metadata", "name"]);
    let pod_labels = string_map(deployment, &["spec", "template", "metadata", "labels"]);
    let selector = string_map(deployment, &["spec", "selector", "matchLabels"]);
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "the Deployment's selector {k}={v} must match its pod template"
        );
    }

    let hpa = m.one("HorizontalPodAutoscaler", None);
    assert_eq!(s(hpa, &["spec", "scaleTargetRef", "kind"]), "Deployment");
    assert_eq!(s(hpa, &["spec", "scaleTargetRef", "name"]), name);
    let min = u(hpa, &["spec", "minReplicas"]);
    let max = u(hpa, &["spec", "maxReplicas"]);
    assert!(min >= 2, "at least two replicas (minReplicas = {min})");
    assert!(max >= min, "maxReplicas {max} < minReplicas {min}");
    // With an HPA, `replicas` in the manifest would undo its scaling on
    // every apply.
    assert!(
        at(deployment, &["spec", "replicas"]).is_none(),
        "the HPA owns the replica count: remove spec.replicas"
    );

    let rate = g.raw.quotas.upstream_calls_per_second;
    assert!(
        rate > 0.0 && rate <= ACCOUNT_CALLS_PER_SECOND,
        "quotas.upstream_calls_per_second ({rate}) must be positive and at most the account's \
         {ACCOUNT_CALLS_PER_SECOND}"
    );
    match &g.config.cluster {
        // The replicas share the rate through Redis; alone (Redis
        // unreachable), each paces at fallback_share of it, and all of them
        // together must still stay under the account's quota.
        Some(cluster) => {
            let alone = rate * cluster.fallback_share * max as f64;
            assert!(
                alone <= ACCOUNT_CALLS_PER_SECOND * (1.0 + 1e-9),
                "quotas.upstream_calls_per_second ({rate}) x cluster.fallback_share ({}) x \
                 maxReplicas ({max}) = {alone} is over the account's {ACCOUNT_CALLS_PER_SECOND} \
                 while Redis is unreachable",
                cluster.fallback_share
            );
        }
        // Every replica paces its own calls.
        None => assert!(
            rate * max as f64 <= ACCOUNT_CALLS_PER_SECOND,
            "without [cluster], quotas.upstream_calls_per_second ({rate}) x maxReplicas ({max}) \
             must be at most {ACCOUNT_CALLS_PER_SECOND}"
        ),
    }

    let pdb = m.one("PodDisruptionBudget", None);
    let selector = string_map(pdb, &["spec", "selector", "matchLabels"]);
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "PDB selector {k}={v}");
    }
    match (
        at(pdb, &["spec", "minAvailable"]).and_then(Value::as_u64),
        at(pdb, &["spec", "maxUnavailable"]).and_then(Value::as_u64),
    ) {
        (Some(n), None) => assert!(n >= 1 && n < min, "minAvailable {n} vs minReplicas {min}"),
        (None, Some(n)) => assert!(n >= 1 && n < min, "maxUnavailable {n} vs minReplicas {min}"),
        other => panic!("the PDB needs one integer minAvailable or maxUnavailable, got {other:?}"),
    }
}

#[test]
fn prometheus_annotations_name_the_metrics_port() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    let annotations = string_map(
        m.deployment(),
        &["spec", "template", "metadata", "annotations"],
    );
    assert_eq!(
        annotations.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        annotations.get("prometheus.io/port"),
        Some(&g.metrics_port().to_string()),
        "prometheus.io/port vs metrics.listen"
    );
    assert_eq!(
        annotations.get("prometheus.io/path").map(String::as_str),
        Some("/metrics")
    );
}

#[test]
fn the_iam_policy_covers_exactly_what_the_gateway_calls() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    let text = std::fs::read_to_string(deploy_dir().join("iam-policy.json")).unwrap();
    let policy: serde_json::Value = serde_json::from_str(&text).expect("iam-policy.json is JSON");
    let statements = policy["Statement"].as_array().expect("Statement is a list");
    assert!(!statements.is_empty());
    let mut resources = Vec::new();
    let mut actions = Vec::new();
    for st in statements {
        assert_eq!(st["Effect"], "Allow");
        assert!(
            st["Sid"].as_str().is_some_and(|s| !s.is_empty()),
            "every statement has a Sid"
        );
        actions.extend(one_or_many(&st["Action"]));
        resources.extend(one_or_many(&st["Resource"]));
    }
    actions.sort();
    actions.dedup();
    assert_eq!(
        actions,
        [
            "events:ListPartnerEventSourceAccounts",
            "events:PutPartnerEvents"
        ],
        "the gateway sends events and reads its sources' states, nothing more"
    );
    assert!(
        !resources.iter().any(|r| r == "*"),
        "narrow the resource to the partner's event sources"
    );
    // A tenant source the role cannot write to fails every entry with
    // AccessDeniedException.
    for (tenant, t) in &g.raw.tenants {
        for (key, source) in &t.sources {
            let arn = format!(
                "arn:aws:events:{}::event-source/{}",
                source.region, source.name
            );
            assert!(
                resources.iter().any(|r| glob_match(r, &arn)),
                "tenants.{tenant}.sources.{key}: {arn} is not allowed by iam-policy.json"
            );
        }
    }
}

#[test]
fn glob_match_is_a_real_matcher() {
    let pattern = "arn:aws:events:*::event-source/aws.partner/example.com/*";
    assert!(glob_match(
        pattern,
        "arn:aws:events:us-east-1::event-source/aws.partner/example.com/acme/billing"
    ));
    assert!(!glob_match(
        pattern,
        "arn:aws:events:us-east-1::event-source/aws.partner/other.com/acme/billing"
    ));
    assert!(!glob_match("a*b", "ac"));
    assert!(glob_match("a", "a") && !glob_match("a", "ab"));
}

/// The host and port of a `redis://` or `rediss://` URL (no user, password
/// or database).
fn redis_host_port(url: &str) -> (String, u16) {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .unwrap_or_else(|| panic!("`{url}` is not a Redis URL"));
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().expect("a port number")),
        None => (host_port.to_string(), 6379),
    }
}

/// Whether `selector` (matchLabels) selects pods labelled `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn the_cluster_url_reaches_the_in_cluster_redis() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    assert!(
        g.config.cluster.is_some(),
        "the base shares the quota between replicas: the ConfigMap needs [cluster]"
    );
    let (host, port) = redis_host_port(&g.raw.cluster.as_ref().unwrap().url);
    // `partner-events-redis` or `partner-events-redis.<namespace>.svc...`
    let service_name = host.split('.').next().unwrap();
    let service = m.one("Service", Some(service_name));
    let selector = string_map(service, &["spec", "selector"]);
    let redis = m
        .all("Deployment")
        .into_iter()
        .find(|d| {
            selects(
                &selector,
                &string_map(d, &["spec", "template", "metadata", "labels"]),
            )
        })
        .unwrap_or_else(|| panic!("Service {service_name} selects no Deployment's pods"));
    let redis_labels = string_map(redis, &["spec", "template", "metadata", "labels"]);
    let containers = seq(redis, &["spec", "template", "spec", "containers"]);
    let service_port = seq(service, &["spec", "ports"])
        .iter()
        .find(|p| u(p, &["port"]) == u64::from(port))
        .unwrap_or_else(|| panic!("Service {service_name} has no port {port} ([cluster] url)"));
    let target_found = containers.iter().any(|c| {
        seq(c, &["ports"])
            .iter()
            .any(|p| match get(service_port, &["targetPort"]) {
                Value::String(name) => s(p, &["name"]) == name,
                other => other.as_u64() == Some(u(p, &["containerPort"])),
            })
    });
    assert!(
        target_found,
        "Service {service_name}: its targetPort is no container port"
    );

    // Two Redis pods behind one Service would each hold half the state.
    assert_eq!(
        at(redis, &["spec", "replicas"]).and_then(Value::as_u64),
        Some(1)
    );
    assert_eq!(s(redis, &["spec", "strategy", "type"]), "Recreate");

    // A policy that let the gateway in nowhere would make every replica
    // fall back for good.
    let gateway_labels = string_map(m.deployment(), &["spec", "template", "metadata", "labels"]);
    let policies: Vec<&Value> = m
        .all("NetworkPolicy")
        .into_iter()
        .filter(|p| {
            selects(
                &string_map(p, &["spec", "podSelector", "matchLabels"]),
                &redis_labels,
            )
        })
        .collect();
    assert!(
        !policies.is_empty(),
        "the passwordless Redis needs a NetworkPolicy"
    );
    for policy in policies {
        let name = s(policy, &["metadata", "name"]);
        let admits = seq(policy, &["spec", "ingress"]).iter().any(|rule| {
            let from = seq(rule, &["from"]).iter().any(|peer| {
                at(peer, &["podSelector", "matchLabels"]).is_some()
                    && selects(
                        &string_map(peer, &["podSelector", "matchLabels"]),
                        &gateway_labels,
                    )
            });
            let on_port = seq(rule, &["ports"]).iter().any(|p| {
                get(p, &["port"]).as_u64() == Some(6379)
                    || get(p, &["port"]).as_str() == Some("redis")
            });
            from && on_port
        });
        assert!(
            admits,
            "NetworkPolicy {name} does not let the gateway pods reach Redis"
        );
    }
}

/// What each overlay changes in the base's config file (dotted paths):
/// the rest of the file must be the base's.
fn overlay_changes(overlay: &str) -> &'static [&'static str] {
    match overlay {
        "elasticache" => &["cluster"],
        "durable" => &["durable", "server.shutdown_grace_ms"],
        other => panic!("deploy/overlays/{other}: say in overlay_changes what it changes"),
    }
}

/// Removes the setting or table at a dotted path, if it is there.
fn remove_setting(table: &mut toml::Table, path: &str) {
    match path.split_once('.') {
        None => {
            table.remove(path);
        }
        Some((head, rest)) => {
            if let Some(toml::Value::Table(t)) = table.get_mut(head) {
                remove_setting(t, rest);
            }
        }
    }
}

/// What an overlay's kustomization.yaml patches with: every document of its
/// patch files and inline patches.
fn overlay_patches(dir: &Path, k: &Value) -> Vec<Value> {
    let mut docs = Vec::new();
    for patch in at(k, &["patches"])
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let text = match (at(patch, &["path"]), at(patch, &["patch"])) {
            (Some(path), None) => {
                let path = dir.join(path.as_str().expect("a patch path"));
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            }
            (None, Some(inline)) => inline.as_str().expect("an inline patch").to_string(),
            other => panic!(
                "{}: a patch needs one of path and patch: {other:?}",
                dir.display()
            ),
        };
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap();
            if !value.is_null() {
                docs.push(value);
            }
        }
    }
    docs
}

#[test]
fn every_overlay_builds_on_the_base_and_its_config_loads() {
    let base = Manifests::load();
    let base_gateway = Gateway::from(&base);
    let base_toml: toml::Table =
        toml::from_str(s(base.one("ConfigMap", None), &["data", CONFIG_KEY])).unwrap();
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(overlays_dir())
        .expect("deploy/overlays/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    overlays.sort();
    assert!(!overlays.is_empty(), "no overlays in deploy/overlays/");
    for dir in overlays {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let k: Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
                .unwrap_or_else(|e| panic!("{name}/kustomization.yaml: {e}"));
        let resources: Vec<PathBuf> = seq(&k, &["resources"])
            .iter()
            .map(|r| dir.join(r.as_str().expect("a resource path")))
            .collect();
        for r in &resources {
            assert!(
                r.is_file() || r.join("kustomization.yaml").is_file(),
                "{name}: resource {} is neither a file nor a kustomization",
                r.display()
            );
        }
        assert!(
            resources
                .iter()
                .any(|r| r.canonicalize().ok() == k8s_dir().canonicalize().ok()),
            "{name}: builds on the base, deploy/kubernetes"
        );

        let patches = overlay_patches(&dir, &k);
        let Some(configmap) = patches.iter().find(|p| {
            at(p, &["kind"]).and_then(Value::as_str) == Some("ConfigMap")
                && at(p, &["data", CONFIG_KEY]).is_some()
        }) else {
            continue;
        };
        assert_eq!(
            s(configmap, &["metadata", "name"]),
            s(base.one("ConfigMap", None), &["metadata", "name"]),
            "{name}: the ConfigMap patch names the base's ConfigMap"
        );
        let text = s(configmap, &["data", CONFIG_KEY]);
        let raw: RawConfig =
            toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {CONFIG_KEY}: {e}"));

        // The password's variable comes from a Secret through the gateway
        // container's env, and must be set for the config to load.
        let password_env = raw
            .cluster
            .as_ref()
            .map(|c| c.password_env.clone())
            .unwrap_or_default();
        if !password_env.is_empty() {
            let from_secret = patches
                .iter()
                .filter(|p| {
                    at(p, &["kind"]).and_then(Value::as_str) == Some("Deployment")
                        && at(p, &["metadata", "name"]).and_then(Value::as_str) == Some(GATEWAY)
                })
                .flat_map(|d| seq(d, &["spec", "template", "spec", "containers"]))
                .filter(|c| s(c, &["name"]) == s(base.container(), &["name"]))
                .flat_map(|c| seq(c, &["env"]))
                .any(|e| {
                    s(e, &["name"]) == password_env
                        && at(e, &["valueFrom", "secretKeyRef", "name"]).is_some()
                });
            assert!(
                from_secret,
                "{name}: cluster.password_env = {password_env:?}, which no secretKeyRef in the \
                 gateway container's env sets"
            );
            // The pod gets it from the Secret; this test stands in for it.
            // (No other test here reads this variable.)
            std::env::set_var(&password_env, "a-test-password");
        }
        let config = Config::from_toml(text, &name)
            .unwrap_or_else(|e| panic!("{name}: the ConfigMap's {CONFIG_KEY} does not load: {e}"));

        // A patch replaces the whole file: outside what the overlay is
        // for, it must stay the base's.
        let mut overlay_toml: toml::Table = toml::from_str(text).unwrap();
        let mut base_rest = base_toml.clone();
        let changes = overlay_changes(&name);
        for path in changes {
            remove_setting(&mut overlay_toml, path);
            remove_setting(&mut base_rest, path);
        }
        assert_eq!(
            overlay_toml, base_rest,
            "{name}: its {CONFIG_KEY} differs from the base's configmap.yaml outside {changes:?}"
        );

        // An overlay that points [cluster] elsewhere removes the base's Redis.
        let (base_host, _) = redis_host_port(&base_gateway.raw.cluster.as_ref().unwrap().url);
        let (host, _) = redis_host_port(&raw.cluster.as_ref().expect("[cluster]").url);
        assert!(config.cluster.is_some());
        if host != base_host {
            let deleted: BTreeSet<(String, String)> = patches
                .iter()
                .filter(|p| at(p, &["$patch"]).and_then(Value::as_str) == Some("delete"))
                .map(|p| {
                    (
                        s(p, &["kind"]).to_string(),
                        s(p, &["metadata", "name"]).to_string(),
                    )
                })
                .collect();
            for (file, doc) in base.docs.iter().filter(|(f, _)| f == "redis.yaml") {
                let id = (
                    s(doc, &["kind"]).to_string(),
                    s(doc, &["metadata", "name"]).to_string(),
                );
                assert!(
                    deleted.contains(&id),
                    "{name}: [cluster] no longer uses the in-cluster Redis, but {file}'s {id:?} \
                     is not deleted"
                );
            }
        }
    }
}

/// How much room a queue's volume needs beyond `[durable] max_bytes`: the
/// queue file holds free pages and the commit in progress besides the live
/// entries.
const QUEUE_HEADROOM: f64 = 1.25;

/// A Kubernetes quantity (`512Mi`, `10Gi`, `1G`, `1000`) in bytes.
fn quantity_bytes(q: &str) -> u64 {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, unit) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap_or_else(|e| panic!("`{q}`: {e}")) * unit;
        }
    }
    q.parse()
        .unwrap_or_else(|e| panic!("`{q}` is not a quantity: {e}"))
}

#[test]
fn quantities_parse() {
    assert_eq!(quantity_bytes("512Mi"), 512 << 20);
    assert_eq!(quantity_bytes("10Gi"), 10 << 30);
    assert_eq!(quantity_bytes("2G"), 2_000_000_000);
    assert_eq!(quantity_bytes("4096"), 4096);
}

/// The name of the volume `container` mounts read-write at `dir` (the
/// `[durable]` directory): the root filesystem is read-only.
fn queue_volume<'a>(container: &'a Value, dir: &std::path::Path) -> &'a str {
    let dir = dir.to_str().unwrap().trim_end_matches('/');
    let mount = seq(container, &["volumeMounts"])
        .iter()
        .find(|m| s(m, &["mountPath"]).trim_end_matches('/') == dir)
        .unwrap_or_else(|| {
            panic!("[durable] path = {dir:?} is no volume mount: the root filesystem is read-only")
        });
    assert_ne!(
        at(mount, &["readOnly"]).and_then(Value::as_bool),
        Some(true),
        "the queue's volume at {dir} must be writable"
    );
    assert!(
        at(mount, &["subPath"]).is_none(),
        "the whole volume is the queue's"
    );
    s(mount, &["name"])
}

#[test]
fn the_durable_queue_is_on_a_writable_volume_with_room_for_max_bytes() {
    let m = Manifests::load();
    let g = Gateway::from(&m);
    let name = queue_volume(m.container(), &g.config.durable.dir);
    let pod = get(m.deployment(), &["spec", "template", "spec"]);
    let volume = seq(pod, &["volumes"])
        .iter()
        .find(|v| s(v, &["name"]) == name)
        .unwrap_or_else(|| panic!("volume {name} is not in the pod"));
    let limit = quantity_bytes(s(volume, &["emptyDir", "sizeLimit"]));
    let max_bytes = g.config.durable.max_bytes;
    assert!(
        limit as f64 >= max_bytes as f64 * QUEUE_HEADROOM,
        "the `{name}` emptyDir's sizeLimit ({limit} bytes) must be at least {QUEUE_HEADROOM} x \
         durable.max_bytes ({max_bytes}): over it the kubelet evicts the pod"
    );
}

/// Every YAML document of the overlay's own resource files (not the base).
fn overlay_resources(dir: &Path, k: &Value) -> Vec<Value> {
    let mut docs = Vec::new();
    for r in seq(k, &["resources"]) {
        let path = dir.join(r.as_str().expect("a resource path"));
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap();
            if !value.is_null() {
                docs.push(value);
            }
        }
    }
    docs
}

fn kind_is(v: &Value, kind: &str) -> bool {
    at(v, &["kind"]).and_then(Value::as_str) == Some(kind)
}

fn remove_key(v: &mut Value, path: &[&str]) {
    let (last, parents) = path.split_last().unwrap();
    if let Some(m) = parents
        .iter()
        .try_fold(v, |v, k| v.get_mut(*k))
        .and_then(Value::as_mapping_mut)
    {
        m.remove(*last);
    }
}

#[test]
fn the_durable_overlay_keeps_each_replicas_queue_on_a_claim_of_its_own() {
    let base = Manifests::load();
    let dir = overlays_dir().join("durable");
    let k: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let patches = overlay_patches(&dir, &k);
    let docs = overlay_resources(&dir, &k);

    // The StatefulSet replaces the Deployment.
    assert!(
        patches.iter().any(|p| {
            at(p, &["$patch"]).and_then(Value::as_str) == Some("delete")
                && kind_is(p, "Deployment")
                && s(p, &["metadata", "name"]) == GATEWAY
        }),
        "the overlay deletes the base's Deployment"
    );
    let sets: Vec<&Value> = docs.iter().filter(|d| kind_is(d, "StatefulSet")).collect();
    assert_eq!(sets.len(), 1, "one StatefulSet");
    let sts = sets[0];
    assert_eq!(s(sts, &["metadata", "name"]), GATEWAY);
    assert!(
        at(sts, &["spec", "replicas"]).is_none(),
        "the HPA owns the replica count: remove spec.replicas"
    );
    assert_eq!(s(sts, &["spec", "podManagementPolicy"]), "Parallel");
    for when in ["whenScaled", "whenDeleted"] {
        assert_eq!(
            s(sts, &["spec", "persistentVolumeClaimRetentionPolicy", when]),
            "Retain",
            "a claim may hold entries not yet delivered: {when} must retain it"
        );
    }
    let pod_labels = string_map(sts, &["spec", "template", "metadata", "labels"]);
    assert!(selects(
        &string_map(sts, &["spec", "selector", "matchLabels"]),
        &pod_labels
    ));

    // The pod is the base's, but for what a StatefulSet's needs.
    let base_template = get(base.deployment(), &["spec", "template"]);
    let template = get(sts, &["spec", "template"]);
    let containers = seq(template, &["spec", "containers"]);
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let mut ours = template.clone();
    let mut theirs = base_template.clone();
    for v in [&mut ours, &mut theirs] {
        remove_key(v, &["spec", "terminationGracePeriodSeconds"]);
        remove_key(v, &["spec", "topologySpreadConstraints"]);
        remove_key(v, &["spec", "securityContext", "fsGroupChangePolicy"]);
        remove_key(v, &["spec", "volumes"]);
    }
    assert_eq!(
        ours, theirs,
        "statefulset.yaml's pod differs from deployment.yaml's beyond the grace period, the \
         spread, fsGroupChangePolicy and the queue's volume"
    );
    assert!(
        !seq(template, &["spec", "topologySpreadConstraints"]).is_empty(),
        "the replicas are still spread"
    );

    // The config: the base's with [durable] on the claim.
    let configmap = patches
        .iter()
        .find(|p| kind_is(p, "ConfigMap"))
        .expect("a ConfigMap patch");
    let config = Config::from_toml(s(configmap, &["data", CONFIG_KEY]), "durable")
        .unwrap_or_else(|e| panic!("durable: the ConfigMap's {CONFIG_KEY} does not load: {e}"));
    assert_eq!(
        config.durable.dir,
        Path::new("/var/lib/partner-events-gateway")
    );
    let claim_name = queue_volume(container, &config.durable.dir);
    let pod_volumes: Vec<&str> = seq(template, &["spec", "volumes"])
        .iter()
        .map(|v| s(v, &["name"]))
        .collect();
    assert!(
        !pod_volumes.contains(&claim_name),
        "the queue's volume `{claim_name}` must be the claim, not a pod volume"
    );
    let base_volumes: Vec<&Value> = seq(base_template, &["spec", "volumes"])
        .iter()
        .filter(|v| s(v, &["name"]) != claim_name)
        .collect();
    let volumes: Vec<&Value> = seq(template, &["spec", "volumes"]).iter().collect();
    assert_eq!(volumes, base_volumes, "the other volumes are the base's");
    let claim = seq(sts, &["spec", "volumeClaimTemplates"])
        .iter()
        .find(|c| s(c, &["metadata", "name"]) == claim_name)
        .unwrap_or_else(|| panic!("no volumeClaimTemplate `{claim_name}`"));
    let modes: Vec<&str> = seq(claim, &["spec", "accessModes"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(modes, ["ReadWriteOnce"]);
    let storage = s(claim, &["spec", "resources", "requests", "storage"]);
    assert_eq!(storage, "10Gi");
    assert!(
        quantity_bytes(storage) as f64 >= config.durable.max_bytes as f64 * QUEUE_HEADROOM,
        "the claim ({storage}) must be at least {QUEUE_HEADROOM} x durable.max_bytes ({})",
        config.durable.max_bytes
    );

    // On SIGTERM the gateway finishes its calls, then delivers its queue for
    // what is left of shutdown_grace_ms: all of it before SIGKILL.
    let termination_ms = u(template, &["spec", "terminationGracePeriodSeconds"]) * 1000;
    let pre_stop_ms = at(container, &["lifecycle", "preStop", "sleep", "seconds"])
        .map(|v| v.as_u64().expect("seconds") * 1000)
        .unwrap_or(0);
    let grace_ms = config.shutdown_grace.as_millis() as u64;
    assert!(
        termination_ms > pre_stop_ms + grace_ms,
        "terminationGracePeriodSeconds ({termination_ms} ms) must exceed the preStop sleep \
         ({pre_stop_ms} ms) plus server.shutdown_grace_ms ({grace_ms} ms)"
    );
    let base_grace = Gateway::from(&base).config.shutdown_grace;
    assert!(
        config.shutdown_grace > base_grace,
        "the queue's drain needs a longer grace than the base's calls alone"
    );

    // Each replica has a DNS name through the headless Service.
    let service_name = s(sts, &["spec", "serviceName"]);
    let service = docs
        .iter()
        .find(|d| kind_is(d, "Service") && s(d, &["metadata", "name"]) == service_name)
        .unwrap_or_else(|| panic!("serviceName {service_name}: no such Service in the overlay"));
    assert_eq!(s(service, &["spec", "clusterIP"]), "None");
    assert!(selects(
        &string_map(service, &["spec", "selector"]),
        &pod_labels
    ));
    let grpc = seq(service, &["spec", "ports"])
        .iter()
        .find(|p| s(p, &["name"]) == "grpc")
        .expect("a grpc port");
    assert_eq!(u(grpc, &["port"]), u64::from(config.listen.port()));
    assert_eq!(s(grpc, &["targetPort"]), "grpc");

    // The HPA scales the StatefulSet.
    let hpa = patches
        .iter()
        .find(|p| kind_is(p, "HorizontalPodAutoscaler"))
        .expect("the HPA is patched to the StatefulSet");
    assert_eq!(
        s(hpa, &["metadata", "name"]),
        s(
            base.one("HorizontalPodAutoscaler", None),
            &["metadata", "name"]
        )
    );
    assert_eq!(s(hpa, &["spec", "scaleTargetRef", "kind"]), "StatefulSet");
    assert_eq!(s(hpa, &["spec", "scaleTargetRef", "name"]), GATEWAY);
    assert_eq!(s(hpa, &["spec", "scaleTargetRef", "apiVersion"]), "apps/v1");
}
