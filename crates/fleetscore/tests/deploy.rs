//! The Kubernetes assets as a cluster would take them: every document of
//! deploy/kubernetes/*.yaml and of `fleetscore schedule export
//! --kubernetes` is read into the Kubernetes API types (k8s-openapi) and
//! must keep every field it has (a misspelt field would be dropped by the
//! API server), KEDA's objects into local structs; then the wiring: one
//! image, real subcommands and flags, Indexed Jobs with one pod per shard,
//! the Service on the server's pods and port, the ScaledObject on the
//! workers, every Secret, ConfigMap and volume reference resolvable. The
//! exported CronJob's container is then run for real, shard by shard,
//! against a store.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{bin, text};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolumeClaim, PodSpec, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::Value;

fn kube_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// KEDA's ScaledObject (keda.sh/v1alpha1), the fields used here; unknown
/// spec fields are refused, as KEDA's CRD schema would.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScaledObject {
    metadata: Meta,
    spec: ScaledObjectSpec,
}

#[derive(Debug, Deserialize)]
struct Meta {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScaledObjectSpec {
    scale_target_ref: ScaleTargetRef,
    min_replica_count: Option<i32>,
    max_replica_count: Option<i32>,
    polling_interval: Option<i32>,
    cooldown_period: Option<i32>,
    triggers: Vec<Trigger>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScaleTargetRef {
    api_version: Option<String>,
    kind: Option<String>,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Trigger {
    #[serde(rename = "type")]
    kind: String,
    metadata: BTreeMap<String, String>,
    authentication_ref: Option<AuthenticationRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthenticationRef {
    name: String,
}

/// KEDA's TriggerAuthentication, the secretTargetRef form.
#[derive(Debug, Deserialize)]
struct TriggerAuthentication {
    metadata: Meta,
    spec: TriggerAuthenticationSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TriggerAuthenticationSpec {
    secret_target_ref: Vec<SecretTargetRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretTargetRef {
    parameter: String,
    name: String,
    key: String,
}

/// Every object of a set of YAML files, by kind.
#[derive(Default)]
struct Objects {
    deployments: Vec<Deployment>,
    cronjobs: Vec<(String, CronJob)>,
    services: Vec<Service>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    pvcs: Vec<PersistentVolumeClaim>,
    scaled_objects: Vec<ScaledObject>,
    trigger_auths: Vec<TriggerAuthentication>,
    kustomization: Option<Value>,
}

/// The YAML documents of `text` as JSON values (empty ones left out).
fn documents(text: &str, source: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{source}: not YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// Fields of `a` that `b` lacks (paths), recursively.
fn lost_fields(a: &Value, b: &Value, path: &str) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .flat_map(|(k, v)| match y.get(k) {
                None => vec![format!("{path}.{k}")],
                Some(w) => lost_fields(v, w, &format!("{path}.{k}")),
            })
            .collect(),
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .enumerate()
            .flat_map(|(i, (v, w))| lost_fields(v, w, &format!("{path}[{i}]")))
            .collect(),
        _ => Vec::new(),
    }
}

/// `v` as the API type `T`, refusing fields that `T` does not have (they
/// would be dropped silently by `kubectl apply`).
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
    source: &str,
) -> Result<T, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| format!("{source}: {e}"))?;
    let back = serde_json::to_value(&t).map_err(|e| e.to_string())?;
    let lost = lost_fields(v, &back, "");
    if lost.is_empty() {
        Ok(t)
    } else {
        Err(format!(
            "{source}: fields the Kubernetes API does not have (misspelt or misplaced): {lost:?}"
        ))
    }
}

fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

impl Objects {
    fn add(&mut self, text: &str, source: &str) {
        for v in documents(text, source) {
            let api = v["apiVersion"].as_str().unwrap_or_default().to_string();
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            let at = format!("{source}: {kind} {}", v["metadata"]["name"]);
            match (api.as_str(), kind.as_str()) {
                ("apps/v1", "Deployment") => self.deployments.push(must(typed(&v, &at))),
                ("batch/v1", "CronJob") => self
                    .cronjobs
                    .push((source.to_string(), must(typed(&v, &at)))),
                ("v1", "Service") => self.services.push(must(typed(&v, &at))),
                ("v1", "ConfigMap") => self.config_maps.push(must(typed(&v, &at))),
                ("v1", "Secret") => self.secrets.push(must(typed(&v, &at))),
                ("v1", "PersistentVolumeClaim") => self.pvcs.push(must(typed(&v, &at))),
                ("keda.sh/v1alpha1", "ScaledObject") => self.scaled_objects.push(
                    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{at}: {e}")),
                ),
                ("keda.sh/v1alpha1", "TriggerAuthentication") => self.trigger_auths.push(
                    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{at}: {e}")),
                ),
                ("kustomize.config.k8s.io/v1beta1", "Kustomization") => {
                    self.kustomization = Some(v);
                }
                _ => panic!("{at}: unexpected object {api} {kind}; teach deploy.rs to check it"),
            }
        }
    }

    fn secret_keys(&self, name: &str) -> Option<BTreeSet<String>> {
        self.secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .map(|s| {
                let mut keys: BTreeSet<String> = BTreeSet::new();
                keys.extend(s.string_data.iter().flat_map(|m| m.keys().cloned()));
                keys.extend(s.data.iter().flat_map(|m| m.keys().cloned()));
                keys
            })
    }

    fn config_map(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .and_then(|c| c.data.as_ref())
    }

    /// Pod specs of Deployments and CronJobs, with where they came from.
    fn pods(&self) -> Vec<(String, &PodSpec)> {
        let mut out = Vec::new();
        for d in &self.deployments {
            let spec = d.spec.template.spec.as_ref();
            out.push((
                format!("Deployment {:?}", d.metadata.name),
                spec.expect("deployment pod spec"),
            ));
        }
        for (src, c) in &self.cronjobs {
            out.push((format!("{src}: CronJob {:?}", c.metadata.name), cron_pod(c)));
        }
        out
    }
}

fn cron_pod(c: &CronJob) -> &PodSpec {
    c.spec
        .job_template
        .spec
        .as_ref()
        .and_then(|j| j.template.spec.as_ref())
        .expect("CronJob pod spec")
}

fn load_dir() -> (Objects, Vec<String>) {
    let mut objects = Objects::default();
    let mut files = Vec::new();
    for e in std::fs::read_dir(kube_dir()).expect("deploy/kubernetes") {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            objects.add(&std::fs::read_to_string(&p).unwrap(), &name);
            files.push(name);
        }
    }
    files.sort();
    (objects, files)
}

/// `fleetscore --config CONFIG config` succeeds (unknown keys and bad
/// schedules fail it).
fn config_loads(config: &Path, what: &str) {
    let o = bin()
        .arg("--config")
        .arg(config)
        .arg("config")
        .output()
        .unwrap();
    assert!(o.status.success(), "{what}: {}", text(&o));
}

/// The ConfigMap's config file, written to `dir`.
fn config_file(objects: &Objects, dir: &Path) -> PathBuf {
    let data = objects
        .config_map("fleetscore-config")
        .expect("ConfigMap fleetscore-config");
    let path = dir.join("fleetscore.toml");
    std::fs::write(&path, &data["fleetscore.toml"]).unwrap();
    path
}

/// `fleetscore --config CONFIG schedule export --kubernetes ARGS…`.
fn export(config: &Path, args: &[&str]) -> String {
    let o = bin()
        .arg("--config")
        .arg(config)
        .args(["schedule", "export", "--kubernetes"])
        .args(args)
        .env_remove("FLEETSCORE_STORE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// The `--flags` that `fleetscore SUB --help` lists, or `None` when this
/// build has no such subcommand.
fn accepted_flags(sub: &str) -> Option<BTreeSet<String>> {
    let o = bin().args([sub, "--help"]).output().unwrap();
    if !o.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&o.stdout)
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| {
                w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                    .to_string()
            })
            .collect(),
    )
}

/// Flags the manifests use that are being added on another branch
/// (`serve --no-workers`, `fleetscore worker`): accepted here when this
/// build lacks them, checked against `--help` once it has them.
fn pending_flags(sub: &str) -> &'static [&'static str] {
    match sub {
        "serve" => &["--no-workers"],
        "worker" => &["--slots", "--lease", "--grace"],
        _ => &[],
    }
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn container_args(c: &Container) -> Vec<String> {
    c.args.clone().unwrap_or_default()
}

/// Seconds of a `30s` / `2m` duration flag.
fn seconds(d: &str) -> i64 {
    let (n, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len()));
    let n: i64 = n.parse().unwrap_or_else(|_| panic!("duration {d:?}"));
    match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => panic!("duration {d:?}: unit"),
    }
}

/// A misspelt field is caught, not dropped: the check below can fail.
#[test]
fn misspelt_fields_are_refused() {
    let doc = documents(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n        - name: x\n          image: i\n          imagePullPolicyy: Always\n",
        "test",
    );
    let e = typed::<Deployment>(&doc[0], "test").unwrap_err();
    assert!(e.contains("imagePullPolicyy"), "{e}");
    // The wrong kind is refused too.
    assert!(typed::<Service>(&doc[0], "test").is_err());
}

#[test]
fn manifests_are_valid_kubernetes_objects_and_wired_together() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut objects, files) = load_dir();
    let config = config_file(&objects, tmp.path());

    // The config of the ConfigMap loads (unknown keys, bad schedules fail).
    config_loads(&config, "the ConfigMap's fleetscore.toml");

    // kustomization.yaml: every manifest but the example Secret and the
    // alternative CronJob; nothing missing.
    let k = objects.kustomization.clone().expect("kustomization.yaml");
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = files
        .iter()
        .filter(|f| {
            ![
                "kustomization.yaml",
                "secret.example.yaml",
                "scoring-cronjob.yaml",
            ]
            .contains(&f.as_str())
        })
        .cloned()
        .collect();
    assert_eq!(listed, expected, "kustomization.yaml resources");

    // The committed CronJob is what `schedule export` renders for the
    // ConfigMap's config, with its image and shard count.
    assert_eq!(objects.cronjobs.len(), 1, "scoring-cronjob.yaml");
    let committed = &objects.cronjobs[0].1;
    let pod = cron_pod(committed);
    let image = pod.containers[0].image.clone().expect("image");
    let n = flag_value(&container_args(&pod.containers[0]), "--shard")
        .and_then(|s| s.strip_prefix("auto/"))
        .expect("--shard auto/N")
        .to_string();
    let exported = export(&config, &["--image", &image, "--shards", &n]);
    let want: Vec<Value> = documents(
        &std::fs::read_to_string(kube_dir().join("scoring-cronjob.yaml")).unwrap(),
        "f",
    );
    assert_eq!(
        documents(&exported, "export"),
        want,
        "scoring-cronjob.yaml is stale: regenerate it as its header says"
    );
    // And an export with other settings, checked like the files.
    let other = export(
        &config,
        &["--image", &image, "--shards", "7", "--namespace", "scoring"],
    );
    objects.add(&other, "export --shards 7");
    assert_eq!(
        objects.cronjobs[1].1.metadata.namespace.as_deref(),
        Some("scoring")
    );

    // One image everywhere, and the one kustomize sets.
    let images: BTreeSet<String> = objects
        .pods()
        .iter()
        .flat_map(|(_, p)| {
            p.containers
                .iter()
                .map(|c| c.image.clone().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        images.len(),
        1,
        "containers use different images: {images:?}"
    );
    let kimg = &k["images"][0];
    assert_eq!(
        format!(
            "{}:{}",
            kimg["newName"].as_str().unwrap(),
            kimg["newTag"].as_str().unwrap()
        ),
        image
    );
    assert!(image.starts_with(&format!("{}:", kimg["name"].as_str().unwrap())));

    check_wiring(&objects, &config);
}

/// The wiring of a set of objects (the Kustomize files, or the Helm
/// chart rendered): real subcommands and flags, resolvable references,
/// Deployments on their own pods, the server's probes and Service, the
/// workers under KEDA, CronJobs of Indexed Jobs over configured schedules.
fn check_wiring(objects: &Objects, config: &Path) {
    // Every container: a real subcommand with flags the CLI accepts, and
    // references that resolve.
    let globals = accepted_flags("score").expect("score --help");
    for (at, pod) in objects.pods() {
        let mounts: BTreeMap<String, String> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| {
                if let Some(cm) = &v.config_map {
                    assert!(
                        objects.config_map(&cm.name).is_some(),
                        "{at}: volume {}: no ConfigMap {}",
                        v.name,
                        cm.name
                    );
                }
                if let Some(pvc) = &v.persistent_volume_claim {
                    assert!(
                        objects
                            .pvcs
                            .iter()
                            .any(|p| p.metadata.name.as_deref() == Some(&pvc.claim_name)),
                        "{at}: no PersistentVolumeClaim {}",
                        pvc.claim_name
                    );
                }
                let source = v
                    .config_map
                    .as_ref()
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                (v.name.clone(), source)
            })
            .collect();
        for c in &pod.containers {
            let args = container_args(c);
            let sub = args.first().map(String::as_str).unwrap_or_default();
            assert!(
                ["serve", "worker", "score"].contains(&sub),
                "{at}: container {}: args must start with serve, worker or score: {args:?}",
                c.name
            );
            // This build's flags of SUB (the global ones if it has no
            // SUB yet), plus the pending ones until it has any of them.
            let pending = pending_flags(sub).iter().map(|p| p.to_string());
            let allowed: BTreeSet<String> = match accepted_flags(sub) {
                Some(a) if pending_flags(sub).iter().any(|p| a.contains(*p)) => a,
                Some(a) => a.into_iter().chain(pending).collect(),
                None => globals.iter().cloned().chain(pending).collect(),
            };
            for flag in args.iter().filter(|a| a.starts_with("--")) {
                assert!(
                    allowed.contains(flag),
                    "{at}: `fleetscore {sub}` does not accept {flag}"
                );
            }
            for m in c.volume_mounts.iter().flatten() {
                assert!(mounts.contains_key(&m.name), "{at}: no volume {}", m.name);
            }
            for e in c.env.iter().flatten() {
                if let Some(r) = e
                    .value_from
                    .as_ref()
                    .and_then(|f| f.secret_key_ref.as_ref())
                {
                    let keys = objects
                        .secret_keys(&r.name)
                        .unwrap_or_else(|| panic!("{at}: env {}: no Secret {}", e.name, r.name));
                    assert!(
                        keys.contains(&r.key),
                        "{at}: env {}: Secret {} has no key {}",
                        e.name,
                        r.name,
                        r.key
                    );
                }
                if let Some(r) = e
                    .value_from
                    .as_ref()
                    .and_then(|f| f.config_map_key_ref.as_ref())
                {
                    let data = objects
                        .config_map(&r.name)
                        .unwrap_or_else(|| panic!("{at}: env {}: no ConfigMap {}", e.name, r.name));
                    assert!(
                        data.contains_key(&r.key),
                        "{at}: env {}: no key {}",
                        e.name,
                        r.key
                    );
                }
                if e.name == "FLEETSCORE_CONFIG" {
                    // A file of a mounted ConfigMap.
                    let path = e.value.as_deref().unwrap_or_default();
                    let found = c.volume_mounts.iter().flatten().any(|m| {
                        path.strip_prefix(&format!("{}/", m.mount_path))
                            .is_some_and(|file| {
                                objects
                                    .config_map(&mounts[&m.name])
                                    .is_some_and(|d| d.contains_key(file))
                            })
                    });
                    assert!(
                        found,
                        "{at}: FLEETSCORE_CONFIG={path} is no mounted ConfigMap key"
                    );
                }
            }
            for f in c.env_from.iter().flatten() {
                if let Some(s) = &f.secret_ref {
                    assert!(
                        objects.secret_keys(&s.name).is_some(),
                        "{at}: envFrom: no Secret {}",
                        s.name
                    );
                }
                if let Some(m) = &f.config_map_ref {
                    assert!(
                        objects.config_map(&m.name).is_some(),
                        "{at}: envFrom: no ConfigMap {}",
                        m.name
                    );
                }
            }
        }
    }

    // Deployments select their own pods.
    let labels_of = |d: &Deployment| -> BTreeMap<String, String> {
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    };
    let subset = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
        !a.is_empty() && a.iter().all(|(k, v)| b.get(k) == Some(v))
    };
    for d in &objects.deployments {
        let sel = d.spec.selector.match_labels.clone().unwrap_or_default();
        assert!(
            subset(&sel, &labels_of(d)),
            "Deployment {:?}: selector does not match its pods",
            d.metadata.name
        );
    }
    let by_sub = |sub: &str| -> Vec<&Deployment> {
        objects
            .deployments
            .iter()
            .filter(|d| {
                let pod = d.spec.template.spec.as_ref().unwrap();
                container_args(&pod.containers[0])
                    .first()
                    .map(String::as_str)
                    == Some(sub)
            })
            .collect()
    };
    let servers = by_sub("serve");
    let workers = by_sub("worker");
    assert_eq!(
        (servers.len(), workers.len()),
        (1, 1),
        "one server and one worker Deployment"
    );
    let (server, worker) = (servers[0], workers[0]);
    let server_pod = server.spec.template.spec.as_ref().unwrap();
    let sc = &server_pod.containers[0];
    let ports = sc.ports.clone().unwrap_or_default();

    // The server listens on its container port; probes hit /readyz and
    // /healthz on it.
    let sargs = container_args(sc);
    let listen = flag_value(&sargs, "--listen").expect("serve --listen");
    let port: i32 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        listen.starts_with("0.0.0.0:"),
        "serve must listen on all interfaces, not {listen}"
    );
    assert!(
        ports.iter().any(|p| p.container_port == port),
        "--listen {listen}: no such containerPort"
    );
    let port_ok = |p: &IntOrString| match p {
        IntOrString::Int(n) => ports.iter().any(|c| c.container_port == *n),
        IntOrString::String(s) => ports.iter().any(|c| c.name.as_deref() == Some(s)),
    };
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("an httpGet probe");
        assert!(
            port_ok(&get.port),
            "probe port {:?} is not a container port",
            get.port
        );
        get.path.clone().unwrap_or_default()
    };
    assert_eq!(probe_path(&sc.readiness_probe), "/readyz");
    assert_eq!(probe_path(&sc.liveness_probe), "/healthz");

    // The Service selects the server's pods (and not the workers') and
    // targets its port.
    assert_eq!(objects.services.len(), 1);
    let svc = objects.services[0].spec.as_ref().unwrap();
    let sel = svc.selector.clone().unwrap_or_default();
    assert!(
        subset(&sel, &labels_of(server)),
        "Service selector {sel:?} misses the server pods"
    );
    assert!(
        !subset(&sel, &labels_of(worker)),
        "Service selector {sel:?} also selects the workers"
    );
    for p in svc.ports.iter().flatten() {
        let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
        assert!(
            port_ok(&target),
            "Service port {}: target {target:?} is no server container port",
            p.port
        );
    }

    // Workers: KEDA owns the replica count; SIGTERM grace covers --grace.
    let wspec = &worker.spec;
    assert_eq!(wspec.replicas, None, "leave replicas to KEDA");
    let wpod = wspec.template.spec.as_ref().unwrap();
    let grace =
        seconds(flag_value(&container_args(&wpod.containers[0]), "--grace").expect("--grace"));
    let lease =
        seconds(flag_value(&container_args(&wpod.containers[0]), "--lease").expect("--lease"));
    assert!(lease > 0);
    assert!(
        wpod.termination_grace_period_seconds.unwrap_or(30) > grace,
        "terminationGracePeriodSeconds must exceed the worker's --grace {grace}s"
    );

    // The ScaledObject scales the workers on the job store's pending work.
    assert_eq!(objects.scaled_objects.len(), 1);
    let so = &objects.scaled_objects[0];
    assert_eq!(
        Some(so.spec.scale_target_ref.name.as_str()),
        worker.metadata.name.as_deref(),
        "{}",
        so.metadata.name
    );
    assert_eq!(
        so.spec
            .scale_target_ref
            .kind
            .as_deref()
            .unwrap_or("Deployment"),
        "Deployment"
    );
    assert_eq!(
        so.spec
            .scale_target_ref
            .api_version
            .as_deref()
            .unwrap_or("apps/v1"),
        "apps/v1"
    );
    assert_eq!(
        so.spec.min_replica_count,
        Some(0),
        "workers scale to zero between runs"
    );
    assert!(so.spec.max_replica_count.unwrap_or(100) >= 1);
    assert!(
        so.spec.polling_interval.unwrap_or(30) > 0 && so.spec.cooldown_period.unwrap_or(300) >= 0
    );
    assert_eq!(so.spec.triggers.len(), 1);
    let t = &so.spec.triggers[0];
    assert_eq!(t.kind, "postgresql");
    let q = t.metadata["query"].to_lowercase();
    for part in [
        "from tasks",
        "from jobs",
        "'queued'",
        "'running'",
        "lease_until",
    ] {
        assert!(q.contains(part), "trigger query lacks {part}: {q}");
    }
    assert!(t.metadata["targetQueryValue"].parse::<f64>().unwrap() > 0.0);
    let auth = t.authentication_ref.as_ref().expect("authenticationRef");
    let ta = objects
        .trigger_auths
        .iter()
        .find(|a| a.metadata.name == auth.name)
        .unwrap_or_else(|| panic!("no TriggerAuthentication {}", auth.name));
    for r in &ta.spec.secret_target_ref {
        assert_eq!(r.parameter, "connection");
        let keys = objects
            .secret_keys(&r.name)
            .unwrap_or_else(|| panic!("no Secret {}", r.name));
        assert!(
            keys.contains(&r.key),
            "Secret {} has no key {}",
            r.name,
            r.key
        );
    }
    // The workers read the same job store as the scaler.
    let db_ref = wpod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "FLEETSCORE_DB")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|f| f.secret_key_ref.as_ref())
        .expect("workers: FLEETSCORE_DB from a Secret");
    assert!(ta
        .spec
        .secret_target_ref
        .iter()
        .any(|r| r.name == db_ref.name && r.key == db_ref.key));

    // CronJobs: in UTC, an Indexed Job of N pods each taking shard auto/N
    // of a configured schedule, never restarted in place.
    let cfg = std::fs::read_to_string(config).unwrap();
    for (src, c) in &objects.cronjobs {
        let spec = &c.spec;
        assert_eq!(spec.time_zone.as_deref(), Some("Etc/UTC"), "{src}");
        assert!(
            matches!(spec.concurrency_policy.as_deref(), Some("Forbid" | "Allow")),
            "{src}"
        );
        let job = spec.job_template.spec.as_ref().unwrap();
        let pod = cron_pod(c);
        let args = container_args(&pod.containers[0]);
        assert_eq!(args[0], "score", "{src}");
        let n: i32 = flag_value(&args, "--shard")
            .and_then(|s| s.strip_prefix("auto/"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{src}: --shard auto/N"));
        assert_eq!(job.completion_mode.as_deref(), Some("Indexed"), "{src}");
        assert_eq!(
            (job.completions, job.parallelism),
            (Some(n), Some(n)),
            "{src}"
        );
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"), "{src}");
        let name = flag_value(&args, "--schedule").expect("--schedule");
        assert!(
            cfg.contains(&format!("name = \"{name}\"")),
            "{src}: schedule {name} is not in the ConfigMap"
        );
        assert!(
            args.iter().any(|a| a == "--write-store"),
            "{src}: a pod's output must go to the store"
        );
    }
}

/// The exported CronJob's container, run as its Indexed Job would run it
/// (JOB_COMPLETION_INDEX 0..N, the ConfigMap's config, a store), scores
/// the window due at the pod's start, shard by shard, into the store; the
/// shards add up to one unsharded run.
#[test]
fn exported_cronjob_pods_score_the_due_window_shard_by_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::small_fleet(&data);
    let (objects, _) = load_dir();
    let config = config_file(&objects, tmp.path());
    let mut exported = Objects::default();
    exported.add(&export(&config, &["--shards", "3"]), "export");
    let c = &exported.cronjobs[0].1;
    assert_eq!(
        &c.spec.schedule, "5 * * * *",
        "hourly, due 5 minutes after the hour"
    );
    let container = &cron_pod(c).containers[0];
    let store = data.join("store");
    let mut rows = 0;
    let mut anomalies = 0;
    for i in 0..3 {
        let mut cmd = bin();
        for e in container.env.iter().flatten() {
            // As the pod would see them, with local stand-ins for the
            // Secret and the mounts.
            let value = match e.name.as_str() {
                "FLEETSCORE_CONFIG" => config.to_string_lossy().into_owned(),
                "FLEETSCORE_STORE" => store.to_string_lossy().into_owned(),
                "FLEETSCORE_DATA" => data.to_string_lossy().into_owned(),
                other => panic!("unexpected env {other}"),
            };
            cmd.env(&e.name, value);
        }
        let o = cmd
            .env("JOB_COMPLETION_INDEX", i.to_string())
            .args(container_args(container))
            // 10:07: two minutes after the 10:05 run, so 09:00-10:00.
            .args(["--now", "2024-05-01T10:07:00Z", "--json", "--quiet"])
            .output()
            .unwrap();
        assert!(o.status.success(), "shard {i}: {}", text(&o));
        let s: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s["failed_models"], 0);
        rows += s["rows"].as_u64().unwrap();
        anomalies += s["anomalies"].as_u64().unwrap();
        let hour = store.join("predictions/date=2024-05-01/hour=09");
        assert!(hour
            .join(format!("part-raw-1h-shard-{i}-of-3.parquet"))
            .is_file());
        let m: Value = serde_json::from_slice(
            &std::fs::read(hour.join(format!("manifest-raw-1h-shard-{i}-of-3.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(m["window_start"], "2024-05-01T09:00:00.000Z");
        assert_eq!(m["rows"], s["rows"]);
    }
    let o = common::run(
        &data,
        &[
            "score",
            "--from",
            "2024-05-01 09:00:00",
            "--to",
            "2024-05-01 10:00:00",
            "--out",
            tmp.path().join("whole").to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let whole: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows, whole["rows"].as_u64().unwrap());
    assert_eq!(rows, 12 * 120);
    assert_eq!(anomalies, whole["anomalies"].as_u64().unwrap());
}

/// What a CronJob cannot express is refused, saying what to change.
#[test]
fn export_refuses_what_kubernetes_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("c.toml");
    let try_export = |toml: &str, args: &[&str]| {
        std::fs::write(&config, toml).unwrap();
        let o = bin()
            .arg("--config")
            .arg(&config)
            .args(["schedule", "export", "--kubernetes"])
            .args(args)
            .output()
            .unwrap();
        (o.status.success(), text(&o))
    };
    let hourly = |delay: &str| {
        format!("[[schedules]]\nname = \"h\"\ncron = \"0 * * * *\"\nwindow = \"1h\"\ndelay = \"{delay}\"\n")
    };
    let (ok, out) = try_export(&hourly("30s"), &[]);
    assert!(!ok && out.contains("whole minutes"), "{out}");
    let (ok, out) = try_export(&hourly("5m"), &["--shards", "0"]);
    assert!(!ok && out.contains("--shards 0"), "{out}");
    let (ok, out) = try_export("schedules = []\n", &[]);
    assert!(!ok && out.contains("no [[schedules]]"), "{out}");
    // A delay past midnight with free day fields moves the hour too.
    let daily =
        "[[schedules]]\nname = \"d\"\ncron = \"30 23 * * *\"\nwindow = \"1d\"\ndelay = \"45m\"\n";
    let (ok, out) = try_export(daily, &[]);
    assert!(ok, "{out}");
    let docs = documents(&out, "export");
    assert_eq!(docs[0]["spec"]["schedule"], "15 0 * * *");
    assert_eq!(docs[0]["metadata"]["name"], "fleetscore-score-d");
}

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/fleetscore")
}

/// `helm template fleetscore deploy/helm/fleetscore ARGS…`.
fn helm_template(args: &[&str]) -> String {
    let helm = std::env::var("FLEETSCORE_TEST_HELM")
        .expect("FLEETSCORE_TEST_HELM names a helm binary (.ci/run installs one)");
    let o = std::process::Command::new(helm)
        .arg("template")
        .arg("fleetscore")
        .arg(chart_dir())
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "helm template {args:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// The monitoring objects of a rendering (the Prometheus Operator's kinds
/// and the dashboard's ConfigMap), and the rest as [`Objects`].
fn split_rendering(text: &str, source: &str) -> (Objects, Vec<Value>) {
    let mut objects = Objects::default();
    let mut monitoring = Vec::new();
    for v in documents(text, source) {
        let kind = v["kind"].as_str().unwrap_or_default();
        let dashboard = v["metadata"]["labels"]["grafana_dashboard"] == "1";
        if matches!(kind, "ServiceMonitor" | "PodMonitor" | "PrometheusRule") || dashboard {
            monitoring.push(v);
        } else {
            objects.add(&serde_yaml_ng::to_string(&v).unwrap(), source);
        }
    }
    // The Secret the chart expects to exist (values' secretName).
    let secret = kube_dir().join("secret.example.yaml");
    objects.add(
        &std::fs::read_to_string(secret).unwrap(),
        "secret.example.yaml",
    );
    (objects, monitoring)
}

/// (kind, name) of every object.
fn kinds_and_names(objects: &Objects) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut add = |kind: &str, name: Option<&String>| {
        out.insert((kind.to_string(), name.cloned().unwrap_or_default()));
    };
    for d in &objects.deployments {
        add("Deployment", d.metadata.name.as_ref());
    }
    for s in &objects.services {
        add("Service", s.metadata.name.as_ref());
    }
    for c in &objects.config_maps {
        add("ConfigMap", c.metadata.name.as_ref());
    }
    for p in &objects.pvcs {
        add("PersistentVolumeClaim", p.metadata.name.as_ref());
    }
    for (_, c) in &objects.cronjobs {
        add("CronJob", c.metadata.name.as_ref());
    }
    for s in &objects.scaled_objects {
        add("ScaledObject", Some(&s.metadata.name));
    }
    for t in &objects.trigger_auths {
        add("TriggerAuthentication", Some(&t.metadata.name));
    }
    out
}

/// The Helm chart (issue 21) renders the service of the Kustomize files,
/// checked the same way: with its defaults (the same objects, the same
/// containers and arguments, and the wiring of `check_wiring`); with
/// scheduled scoring (each CronJob what `schedule export` renders for the
/// same schedule and shards); with monitoring (the very objects of
/// deploy/kubernetes/monitoring and the Grafana dashboard); and without
/// KEDA, with extra environment.
#[test]
#[ignore = "needs helm (FLEETSCORE_TEST_HELM); .ci/run installs it"]
fn helm_chart_renders_the_same_service_wired_together() {
    let tmp = tempfile::tempdir().unwrap();

    // Defaults: the objects of deploy/kubernetes (but its Secret example
    // and the CronJob alternative), with the same containers.
    let (objects, monitoring) = split_rendering(&helm_template(&[]), "helm template");
    assert!(monitoring.is_empty(), "monitoring is off by default");
    let config = config_file(&objects, tmp.path());
    config_loads(&config, "the chart's fleetscore.toml");
    check_wiring(&objects, &config);
    let (kustomize, _) = load_dir();
    let mut want = kinds_and_names(&kustomize);
    want.retain(|(k, _)| k != "CronJob");
    assert_eq!(kinds_and_names(&objects), want, "the chart's objects");
    let containers = |o: &Objects| -> BTreeMap<String, (Option<String>, Vec<String>)> {
        o.deployments
            .iter()
            .map(|d| {
                let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
                (
                    d.metadata.name.clone().unwrap(),
                    (c.image.clone(), container_args(c)),
                )
            })
            .collect()
    };
    assert_eq!(containers(&objects), containers(&kustomize));
    assert_eq!(
        objects.config_map("fleetscore-config").unwrap()["fleetscore.toml"]
            .replace("by the CronJobs\n# of scheduledScoring below", "")
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>(),
        kustomize.config_map("fleetscore-config").unwrap()["fleetscore.toml"]
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>(),
        "the chart's config is the ConfigMap's"
    );

    // Scheduled scoring: each CronJob is the exported one.
    let rendered = helm_template(&[
        "--set",
        "scheduledScoring[0].name=hourly,scheduledScoring[0].cron=5 * * * *,scheduledScoring[0].shards=4",
        "--set",
        "image.tag=1.2.3",
    ]);
    let (objects, _) = split_rendering(&rendered, "helm template (scheduled scoring)");
    check_wiring(&objects, &config);
    assert_eq!(objects.cronjobs.len(), 1);
    let exported = export(&config, &["--image", "fleetscore:1.2.3", "--shards", "4"]);
    let exported = documents(&exported, "export");
    let mut chart = serde_json::to_value(&objects.cronjobs[0].1).unwrap();
    // The chart names the pull policy; export leaves Kubernetes' default.
    chart["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("imagePullPolicy");
    let want: CronJob = serde_json::from_value(exported[0].clone()).unwrap();
    let want = serde_json::to_value(&want).unwrap();
    assert_eq!(
        chart["spec"], want["spec"],
        "the chart's CronJob differs from `schedule export`"
    );
    assert_eq!(chart["metadata"]["name"], want["metadata"]["name"]);

    // Monitoring: the files of deploy/kubernetes/monitoring, as they are.
    let (_, monitoring) = split_rendering(
        &helm_template(&["--set", "monitoring.enabled=true"]),
        "helm (monitoring)",
    );
    let mon = kube_dir().join("monitoring");
    let mut files = documents(
        &std::fs::read_to_string(mon.join("servicemonitor.yaml")).unwrap(),
        "servicemonitor.yaml",
    );
    files.extend(documents(
        &std::fs::read_to_string(mon.join("prometheusrule.yaml")).unwrap(),
        "prometheusrule.yaml",
    ));
    let (dashboards, mut operator): (Vec<Value>, Vec<Value>) = monitoring
        .into_iter()
        .partition(|v| v["kind"] == "ConfigMap");
    // Helm orders objects by kind.
    let by_kind = |v: &Value| (v["kind"].to_string(), v["metadata"]["name"].to_string());
    operator.sort_by_key(by_kind);
    files.sort_by_key(by_kind);
    assert_eq!(operator, files, "the chart's monitoring objects");
    assert_eq!(dashboards.len(), 1);
    let json = dashboards[0]["data"]["fleetscore.json"].as_str().unwrap();
    let file = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/fleetscore.json"),
    )
    .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(json).unwrap(),
        serde_json::from_str::<Value>(&file).unwrap(),
        "the dashboard"
    );

    // Without KEDA: a fixed replica count; extra environment everywhere.
    let (objects, _) = split_rendering(
        &helm_template(&[
            "--set",
            "workers.keda.enabled=false,workers.replicas=3",
            "--set",
            "extraEnv[0].name=OTEL_EXPORTER_OTLP_ENDPOINT,extraEnv[0].value=http://collector:4318",
        ]),
        "helm (no KEDA)",
    );
    assert!(objects.scaled_objects.is_empty() && objects.trigger_auths.is_empty());
    for d in &objects.deployments {
        let spec = &d.spec;
        if d.metadata.name.as_deref() == Some("fleetscore-worker") {
            assert_eq!(spec.replicas, Some(3));
        }
        let env = spec.template.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap_or_default();
        assert!(
            env.iter().any(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{:?}",
            d.metadata.name
        );
    }
}
