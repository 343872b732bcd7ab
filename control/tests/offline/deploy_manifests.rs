//! Offline checks of `deploy/kxdp.yaml`, the manifests that run kxdp on a cluster.
//!
//! No API server is involved: every document is decoded into its k8s-openapi type and must
//! re-encode to exactly what was written (k8s-openapi ignores unknown fields, so a misspelt
//! `hostNetwrk` would otherwise pass silently and the pod would run without host networking).
//! Then the parts kxdp depends on are checked against kxdp's own parsers: the agent's
//! arguments with the real command line, `kxdp.yaml` with the agent's config parser, the
//! CNI configuration list the agent would install with those arguments with kxdp-cni's,
//! and the init container's command is run (the real `kxdp install-cni-plugins`) against
//! directories standing in for the node's. `deploy/kustomization.yaml` must set the image
//! of every container.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, ServiceAccount, Volume};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kxdp.yaml");
const KUSTOMIZATION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kustomization.yaml");
/// The image name the DaemonSet's containers use and the kustomization sets.
const IMAGE_NAME: &str = "kxdp";
/// What the image holds for the init container to install (deploy/image/Containerfile).
const IMAGE_KXDP_CNI: &str = "/usr/local/bin/kxdp-cni";
const IMAGE_PLUGIN_DIR: &str = "/usr/local/lib/kxdp/cni";
const NAMESPACE: &str = "kube-system";
const HEALTHZ_PORT: i32 = 10256;

/// Every kind deploy/kxdp.yaml may hold; anything else fails the test.
#[derive(Debug)]
enum Object {
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    ConfigMap(Box<ConfigMap>),
    DaemonSet(Box<DaemonSet>),
}

/// The manifests, one of each kind (the file holds exactly one of each).
#[derive(Debug)]
struct Manifests {
    service_account: ServiceAccount,
    cluster_role: ClusterRole,
    binding: ClusterRoleBinding,
    config: ConfigMap,
    daemon_set: DaemonSet,
}

/// Decodes into `T` and requires the typed value to re-encode to the same JSON: a field the
/// type does not know (a typo, a wrong nesting level) is dropped by the decode and shows up here.
fn strict<T: DeserializeOwned + Serialize>(doc: &serde_json::Value) -> Result<Box<T>, String> {
    let typed: Box<T> = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    if &back != doc {
        let mut diffs = Vec::new();
        diff("", doc, &back, &mut diffs);
        return Err(format!(
            "fields lost or changed by the typed decode: {}",
            diffs.join("; ")
        ));
    }
    Ok(typed)
}

/// Paths where `written` and `decoded` differ, for a message that names the culprit.
fn diff(
    path: &str,
    written: &serde_json::Value,
    decoded: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (written, decoded) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => diff(&p, v, w, out),
                    None => out.push(format!("{p} (unknown field)")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k} (added by the decode)"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        _ if written != decoded => out.push(format!("{path}: {written} became {decoded}")),
        _ => {}
    }
}

fn decode(doc: &serde_json::Value) -> Result<Object, String> {
    let field = |name: &str| doc.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let name = doc
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    let what = format!("{api_version} {kind} {name}");
    let with_name = |e: String| format!("{what}: {e}");
    Ok(match (api_version, kind) {
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(doc).map_err(with_name)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            Object::ClusterRole(strict(doc).map_err(with_name)?)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(strict(doc).map_err(with_name)?)
        }
        ("v1", "ConfigMap") => Object::ConfigMap(strict(doc).map_err(with_name)?),
        ("apps/v1", "DaemonSet") => Object::DaemonSet(strict(doc).map_err(with_name)?),
        _ => return Err(with_name("a kind deploy/ is not expected to hold".into())),
    })
}

/// Every non-empty YAML document of `text`, as JSON (what the API server would receive).
fn documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(de).map_err(|e| format!("document {i}: {e}"))?;
        if value.is_null() {
            continue; // the comment block before the first `---`
        }
        docs.push(serde_json::to_value(&value).map_err(|e| format!("document {i}: {e}"))?);
    }
    Ok(docs)
}

fn parse_manifests(text: &str) -> Result<Manifests, String> {
    let mut service_account = None;
    let mut cluster_role = None;
    let mut binding = None;
    let mut config = None;
    let mut daemon_set = None;
    fn once<T>(slot: &mut Option<T>, value: T, kind: &str) -> Result<(), String> {
        if slot.replace(value).is_some() {
            return Err(format!("more than one {kind}"));
        }
        Ok(())
    }
    for doc in documents(text)? {
        match decode(&doc)? {
            Object::ServiceAccount(o) => once(&mut service_account, *o, "ServiceAccount")?,
            Object::ClusterRole(o) => once(&mut cluster_role, *o, "ClusterRole")?,
            Object::ClusterRoleBinding(o) => once(&mut binding, *o, "ClusterRoleBinding")?,
            Object::ConfigMap(o) => once(&mut config, *o, "ConfigMap")?,
            Object::DaemonSet(o) => once(&mut daemon_set, *o, "DaemonSet")?,
        }
    }
    let missing = |kind: &str| format!("no {kind}");
    Ok(Manifests {
        service_account: service_account.ok_or_else(|| missing("ServiceAccount"))?,
        cluster_role: cluster_role.ok_or_else(|| missing("ClusterRole"))?,
        binding: binding.ok_or_else(|| missing("ClusterRoleBinding"))?,
        config: config.ok_or_else(|| missing("ConfigMap"))?,
        daemon_set: daemon_set.ok_or_else(|| missing("DaemonSet"))?,
    })
}

fn manifests() -> Manifests {
    let text = std::fs::read_to_string(MANIFEST).expect("read deploy/kxdp.yaml");
    parse_manifests(&text).unwrap_or_else(|e| panic!("deploy/kxdp.yaml: {e}"))
}

fn pod_spec(m: &Manifests) -> &PodSpec {
    let spec = m.daemon_set.spec.as_ref().expect("DaemonSet spec");
    spec.template.spec.as_ref().expect("pod template spec")
}

fn agent_container(m: &Manifests) -> &Container {
    pod_spec(m)
        .containers
        .iter()
        .find(|c| c.name == "agent")
        .expect("a container named agent")
}

fn init_container(m: &Manifests) -> &Container {
    let inits = pod_spec(m)
        .init_containers
        .as_ref()
        .expect("init containers");
    assert_eq!(
        inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["install-cni-plugins", "node-sysctls"],
        "the CNI installer, then the one privileged step"
    );
    &inits[0]
}

/// The capabilities the agent runs with, each found necessary by running the agent without
/// it (deploy/kxdp.yaml names the error each one's absence gives).
const AGENT_CAPABILITIES: [&str; 5] = ["BPF", "PERFMON", "NET_ADMIN", "NET_RAW", "IPC_LOCK"];

fn volume<'a>(m: &'a Manifests, name: &str) -> &'a Volume {
    pod_spec(m)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn config_data<'a>(m: &'a Manifests, key: &str) -> &'a str {
    m.config
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("ConfigMap kxdp-config has no key {key}"))
}

/// The hostPath behind the mount at `mount_path` of `container`, with the mount's propagation.
fn host_mount(m: &Manifests, container: &Container, mount_path: &str) -> (String, Option<String>) {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|vm| vm.mount_path == mount_path)
        .unwrap_or_else(|| panic!("{} mounts nothing at {mount_path}", container.name));
    let host = volume(m, &mount.name)
        .host_path
        .as_ref()
        .unwrap_or_else(|| panic!("volume {} is not a hostPath", mount.name));
    (host.path.clone(), mount.mount_propagation.clone())
}

/// Expands `$(VAR)` the way the kubelet does, from the container's env: a field reference
/// gets `node_name`, a ConfigMap key reference the key's value in our ConfigMap. A reference
/// to a variable the container does not define is an error (the kubelet would pass it on
/// literally, and the agent would get a node called "$(NODE_NAME)").
fn expand(m: &Manifests, container: &Container, node_name: &str, arg: &str) -> String {
    let mut vars = BTreeMap::new();
    for env in container.env.iter().flatten() {
        let value = if let Some(v) = &env.value {
            v.clone()
        } else {
            let from = env.value_from.as_ref().expect("env value or valueFrom");
            if let Some(field) = &from.field_ref {
                assert_eq!(field.field_path, "spec.nodeName", "{}", env.name);
                node_name.to_string()
            } else if let Some(key) = &from.config_map_key_ref {
                assert_eq!(
                    key.name, "kxdp-config",
                    "{} reads another ConfigMap",
                    env.name
                );
                config_data(m, &key.key).to_string()
            } else {
                panic!("{}: unexpected valueFrom", env.name)
            }
        };
        vars.insert(env.name.clone(), value);
    }
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find(')').expect("closed $(") + start;
        let name = &rest[start + 2..end];
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("{arg}: $({name}) is not in the container's env"));
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn agent_args(m: &Manifests, node_name: &str) -> control::cli::AgentArgs {
    let c = agent_container(m);
    let argv: Vec<String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(|a| expand(m, c, node_name, a))
        .collect();
    assert_eq!(
        argv.first().map(String::as_str),
        Some("/usr/local/bin/kxdp"),
        "the agent runs the kxdp binary"
    );
    let cli = control::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{argv:?} does not parse with kxdp's CLI: {e}"));
    match cli.command {
        control::cli::Command::Agent(a) => *a,
        other => panic!("{argv:?} is not `kxdp agent`: {other:?}"),
    }
}

/// The list the agent installs with the DaemonSet's arguments, declaring both versions.
fn agent_conflist(m: &Manifests) -> serde_json::Value {
    let opts: control::agent::AgentOptions = agent_args(m, "worker-7").into();
    control::agent::cni_conflist(&opts, &agent_api::conflist::CNI_VERSIONS)
}

#[test]
fn every_document_is_a_known_kind_and_fully_typed() {
    let m = manifests();
    for (kind, ns) in [
        ("ServiceAccount", &m.service_account.metadata.namespace),
        ("ConfigMap", &m.config.metadata.namespace),
        ("DaemonSet", &m.daemon_set.metadata.namespace),
    ] {
        assert_eq!(ns.as_deref(), Some(NAMESPACE), "{kind} namespace");
    }
}

#[test]
fn a_misspelt_field_or_unknown_kind_is_refused() {
    let text = std::fs::read_to_string(MANIFEST).expect("read deploy/kxdp.yaml");
    let typo = text.replacen("hostNetwork: true", "hostNetwrk: true", 1);
    assert_ne!(typo, text, "the manifest sets hostNetwork: true");
    let err = parse_manifests(&typo).expect_err("a misspelt field must fail");
    assert!(err.contains("hostNetwrk (unknown field)"), "{err}");

    let wrong_type = text.replacen("maxUnavailable: 1", "maxUnavailable: [1]", 1);
    assert!(
        parse_manifests(&wrong_type).is_err(),
        "a list where a number belongs"
    );

    let kind = text.replacen("kind: DaemonSet", "kind: DaemonSett", 1);
    let err = parse_manifests(&kind).expect_err("an unknown kind must fail");
    assert!(err.contains("DaemonSett"), "{err}");
}

#[test]
fn cluster_role_grants_exactly_what_the_agent_reads_and_patches() {
    let m = manifests();
    let read = ["get", "list", "watch"];
    let mut want = BTreeSet::new();
    for (group, resource) in [
        ("", "nodes"),
        ("", "namespaces"),
        ("", "pods"),
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "networkpolicies"),
        // Optional: an API server without it answers 404, and the agent goes on.
        ("networking.k8s.io", "servicecidrs"),
    ] {
        for verb in read {
            want.insert((group.to_string(), resource.to_string(), verb.to_string()));
        }
    }
    want.insert(("".into(), "nodes".into(), "patch".into()));

    let mut got = BTreeSet::new();
    for rule in m.cluster_role.rules.iter().flatten() {
        assert!(rule.non_resource_urls.is_none(), "no non-resource URLs");
        assert!(
            rule.resource_names.is_none(),
            "rules are not per object name"
        );
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        for g in &groups {
            for r in &resources {
                for v in &rule.verbs {
                    for word in [g, r, v] {
                        assert!(!word.contains('*'), "wildcard in {rule:?}");
                    }
                    got.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    assert!(m.cluster_role.aggregation_rule.is_none());
    assert_eq!(got, want, "ClusterRole kxdp grants");

    let b = &m.binding;
    assert_eq!(b.role_ref.kind, "ClusterRole");
    assert_eq!(
        b.role_ref.name,
        m.cluster_role.metadata.name.clone().unwrap_or_default()
    );
    let subjects = b.subjects.as_ref().expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(
        Some(&subjects[0].name),
        m.service_account.metadata.name.as_ref()
    );
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(
        pod_spec(&m).service_account_name,
        m.service_account.metadata.name,
        "the DaemonSet runs as the bound ServiceAccount"
    );
}

#[test]
fn daemon_set_runs_with_named_capabilities_on_the_host_network_of_every_linux_node() {
    let m = manifests();
    let ds = m.daemon_set.spec.as_ref().expect("spec");
    let pod = pod_spec(&m);
    assert_eq!(pod.host_network, Some(true));
    let selector = pod.node_selector.as_ref().expect("nodeSelector");
    assert_eq!(
        selector.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let tolerations = pod.tolerations.as_ref().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "a toleration of every taint: {tolerations:?}"
    );
    let update = ds.update_strategy.as_ref().expect("updateStrategy");
    assert_eq!(update.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        update
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone()),
        Some(IntOrString::Int(1))
    );
    let labels = ds
        .template
        .metadata
        .as_ref()
        .and_then(|md| md.labels.clone());
    let selector = ds.selector.match_labels.clone().expect("matchLabels");
    let labels = labels.expect("template labels");
    for (k, v) in &selector {
        assert_eq!(labels.get(k), Some(v), "the selector matches the template");
    }

    let agent = agent_container(&m);
    let sc = agent.security_context.as_ref().expect("securityContext");
    assert_ne!(sc.privileged, Some(true), "the agent is not privileged");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(
        caps.add.as_deref(),
        Some(&AGENT_CAPABILITIES.map(String::from)[..]),
        "exactly the capabilities the agent was found to need"
    );
    let resources = agent.resources.as_ref().expect("resources");
    let requests = resources.requests.as_ref().expect("resource requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    let limits = resources.limits.as_ref().expect("resource limits");
    assert!(limits.contains_key("memory"));
    // A CFS quota would throttle workers that busy-poll their queues on pinned CPUs.
    assert!(!limits.contains_key("cpu"), "no CPU limit on the agent");
    // Neither mount a container that is not privileged could use: Bidirectional is for
    // privileged containers only, and the agent enters no pod network namespace.
    for path in ["/sys/fs/bpf", "/run/netns"] {
        assert!(
            !agent
                .volume_mounts
                .iter()
                .flatten()
                .any(|vm| vm.mount_path == path),
            "{path}"
        );
    }

    let inits = pod.init_containers.iter().flatten();
    for init in inits {
        let sc = init
            .security_context
            .as_ref()
            .expect("init securityContext");
        let privileged = sc.privileged == Some(true);
        assert_eq!(privileged, init.name == "node-sysctls", "{}", init.name);
        if !privileged {
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", init.name);
            let drop = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
            assert_eq!(drop, Some(vec!["ALL".to_string()]), "{}", init.name);
        }
        let limits = init.resources.as_ref().and_then(|r| r.limits.as_ref());
        assert!(
            limits.is_some_and(|l| l.contains_key("memory")),
            "{}",
            init.name
        );
    }
    let sysctls = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "node-sysctls");
    let sysctls = sysctls.expect("the node-sysctls init container");
    assert_eq!(
        sysctls.command.as_deref(),
        Some(&["/usr/local/bin/kxdp", "sysctl", "net.ipv4.ip_forward=1"].map(String::from)[..])
    );

    assert_eq!(host_mount(&m, agent, "/run/kxdp").0, "/run/kxdp");
    assert_eq!(host_mount(&m, agent, "/lib/modules").0, "/lib/modules");
    let modules = agent.volume_mounts.iter().flatten();
    let modules = modules.filter(|vm| vm.mount_path == "/lib/modules");
    assert!(modules.clone().count() == 1 && modules.clone().all(|vm| vm.read_only == Some(true)));

    // Liveness on /livez (kube-proxy's: healthy through the first sync), not /healthz
    // (which fails on a Node being deleted: that must drain, not restart, the agent).
    for (probe, path) in [
        (&agent.startup_probe, "/livez"),
        (&agent.liveness_probe, "/livez"),
        (&agent.readiness_probe, "/readyz"),
    ] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref());
        let get = get.unwrap_or_else(|| panic!("an HTTP probe on {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::Int(HEALTHZ_PORT), "{path} port");
    }
}

#[test]
fn agent_arguments_parse_with_the_real_cli() {
    let m = manifests();
    let args = agent_args(&m, "worker-7");
    assert_eq!(args.node, "worker-7", "--node is the pod's spec.nodeName");
    // No --uplink and no --workers: each node's agent finds its uplink (kxdp.yaml, else the
    // interface holding its InternalIP) and serves every queue of it.
    assert_eq!((args.uplink, args.workers), (None, None));
    let config = model::config::AgentConfig::from_yaml(config_data(&m, "kxdp.yaml")).unwrap();
    assert!(
        config.uplink.is_none() && config.nodes.is_empty() && !config.underlay_mtu_explicit,
        "the shipped kxdp.yaml leaves uplink and MTU to each node"
    );

    // --state is the directory the ConfigMap's kxdp.yaml (and only it) is mounted at.
    let agent = agent_container(&m);
    let state_mount = agent
        .volume_mounts
        .iter()
        .flatten()
        .find(|vm| Some(Path::new(&vm.mount_path)) == args.state.as_deref())
        .unwrap_or_else(|| panic!("nothing mounted at --state {:?}", args.state));
    assert!(
        args.in_cluster,
        "the agent reads the cluster from the API (--in-cluster)"
    );
    let cm = volume(&m, &state_mount.name).config_map.as_ref();
    let cm = cm.expect("--state is a ConfigMap volume");
    assert_eq!(cm.name, "kxdp-config");
    let items: Vec<(&str, &str)> = cm
        .items
        .iter()
        .flatten()
        .map(|i| (i.key.as_str(), i.path.as_str()))
        .collect();
    assert_eq!(
        items,
        [("kxdp.yaml", model::state::CONFIG_FILE)],
        "only kxdp.yaml in the state directory (any other *.yaml would be read as manifests)"
    );

    // kxdp-cni runs on the host: the paths the list gives it are the agent's, mounted
    // at the same paths from the host.
    let list = agent_conflist(&m);
    let plugin = &list["plugins"][0];
    let socket_dir = args.api_socket.parent().expect("socket in a directory");
    let (host_dir, _) = host_mount(&m, agent, &socket_dir.display().to_string());
    let on_host = PathBuf::from(host_dir).join(args.api_socket.file_name().expect("file"));
    assert_eq!(
        plugin["agentSocket"].as_str().map(PathBuf::from),
        Some(on_host),
        "kxdp-cni connects where the agent listens"
    );
    let state = args.cni_state_dir.display().to_string();
    assert_eq!(
        host_mount(&m, agent, &state).0,
        state,
        "the agent re-adopts pods from the records kxdp-cni writes on the host"
    );
    assert_eq!(plugin["stateDir"], state.as_str());

    // The list goes where the runtime reads, the versions are asked of the plugins it runs,
    // which the init container installed.
    let conf_dir = args.cni_conf_dir.as_ref().expect("--cni-conf-dir");
    assert_eq!(
        host_mount(&m, agent, &conf_dir.display().to_string()).0,
        "/etc/cni/net.d"
    );
    assert_eq!(args.cni_path.len(), 1, "--cni-path {:?}", args.cni_path);
    let cni_path = args.cni_path[0].display().to_string();
    assert_eq!(host_mount(&m, agent, &cni_path).0, "/opt/cni/bin");
    let init = install_args(&m);
    assert_eq!(
        host_mount(&m, init_container(&m), &init.to.display().to_string()).0,
        "/opt/cni/bin",
        "the init container installs where the runtime (and the agent's probe) looks"
    );
}

#[test]
fn agent_config_is_the_documented_defaults_but_maglev_sizing() {
    let m = manifests();
    let parsed = model::config::AgentConfig::from_yaml(config_data(&m, "kxdp.yaml"))
        .unwrap_or_else(|e| panic!("kxdp.yaml: {e}"));
    let mut want = model::config::AgentConfig::default();
    // Large clusters need tables sized by endpoint count (README "Services").
    want.maglev.by_backends = true;
    assert_eq!(parsed, want);
}

#[test]
fn conflist_parses_with_the_cni_plugin() {
    let m = manifests();
    let list = agent_conflist(&m);
    assert_eq!(list["name"], "kxdp");
    let chain: Vec<&str> = list["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(
        chain,
        ["kxdp-cni", "portmap"],
        "the plugins the init container installs; portmap so hostPort works"
    );
    // What a runtime before CNI 1.1 reads, and what a 1.1 runtime settles on.
    for runtime in [&["0.4.0", "1.0.0"][..], &["1.0.0", "1.1.0"][..]] {
        let plugin = agent_api::conflist::plugin_config(&list, 0, runtime).expect("kxdp-cni");
        let bytes = serde_json::to_vec(&plugin).expect("encode");
        let conf = cni::spec::NetConf::parse(&bytes)
            .unwrap_or_else(|e| panic!("kxdp-cni refuses its config: {}", e.to_json("1.0.0")));
        assert_eq!(conf.ipam_type().ok(), Some("host-local"));
        // One list for every node: host-local's range is the node's PodCIDR, which
        // kxdp-cni asks the agent for, not one node's literal subnet (nor a fixed gateway).
        assert_eq!(
            cni::pod_cidr::find(&plugin).unwrap_or_else(|e| panic!("{e}")),
            Some(cni::pod_cidr::Site::RangeSet(0)),
            "the list's range is usePodCidr: {}",
            plugin["ipam"]
        );
        let ten_two: ipnet::IpNet = "10.244.2.0/24".parse().expect("cidr");
        let filled = cni::pod_cidr::fill(&bytes, cni::pod_cidr::Site::RangeSet(0), &[ten_two])
            .unwrap_or_else(|e| panic!("{e}"));
        let filled: serde_json::Value = serde_json::from_slice(&filled).expect("filled JSON");
        assert_eq!(
            filled["ipam"]["ranges"],
            serde_json::json!([[{"subnet": "10.244.2.0/24"}]]),
            "what host-local gets on a node with PodCIDR 10.244.2.0/24"
        );
    }
}

/// The init container's `kxdp install-cni-plugins`, parsed with the real CLI.
fn install_args(m: &Manifests) -> control::cli::InstallCniPluginsArgs {
    let init = init_container(m);
    let argv: Vec<&String> = init
        .command
        .iter()
        .flatten()
        .chain(init.args.iter().flatten())
        .collect();
    assert_eq!(
        argv.first().map(|a| a.as_str()),
        Some("/usr/local/bin/kxdp"),
        "the image has no shell: the init container runs kxdp"
    );
    match control::cli::Cli::try_parse_from(&argv) {
        Ok(control::cli::Cli {
            command: control::cli::Command::InstallCniPlugins(a),
            ..
        }) => a,
        other => panic!("{argv:?} is not `kxdp install-cni-plugins`: {other:?}"),
    }
}

/// Runs the init container's command with the real `kxdp`, its mount replaced by a scratch
/// directory and the image's plugins by the built kxdp-cni and Debian's host-local, portmap
/// and loopback, then checks what landed where the runtime looks.
#[test]
fn init_container_installs_the_plugins() {
    let m = manifests();
    let init = init_container(&m);
    let args = install_args(&m);
    let root = std::env::temp_dir().join(format!("kxdp-deploy-test-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(root.clone());
    let bin_dir = root.join("opt-cni-bin");
    std::fs::create_dir_all(&bin_dir).expect("scratch dir");
    assert_eq!(
        host_mount(&m, init, &args.to.display().to_string()).0,
        "/opt/cni/bin"
    );

    let built = testkit::bins::workspace_binary("cni", "kxdp-cni");
    let local = |image_path: &Path| -> PathBuf {
        if image_path == Path::new(IMAGE_KXDP_CNI) {
            return built.clone();
        }
        let name = image_path
            .strip_prefix(IMAGE_PLUGIN_DIR)
            .unwrap_or_else(|_| {
                panic!(
                    "{} is not where the image keeps plugins",
                    image_path.display()
                )
            });
        Path::new(lab::pods::SYSTEM_CNI_DIR).join(name)
    };
    let names: BTreeSet<String> = args
        .files
        .iter()
        .map(|f| {
            f.file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let want: BTreeSet<String> = ["kxdp-cni", "host-local", "portmap", "loopback"]
        .map(String::from)
        .into();
    assert_eq!(
        names, want,
        "the plugin, its IPAM, the chained portmap and the loopback containerd runs per pod"
    );

    let kxdp = testkit::bins::workspace_binary("control", "kxdp");
    let out = Command::new(&kxdp)
        .arg("install-cni-plugins")
        .arg("--to")
        .arg(&bin_dir)
        .args(args.files.iter().map(|f| local(f)))
        .output()
        .expect("run kxdp install-cni-plugins");
    assert!(
        out.status.success(),
        "kxdp install-cni-plugins: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    for file in &args.files {
        let name = file.file_name().expect("a file");
        let installed = std::fs::read(bin_dir.join(name)).expect("installed");
        assert!(installed == std::fs::read(local(file)).expect("read the source"));
        let mode = std::fs::metadata(bin_dir.join(name))
            .expect("stat")
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{} is executable", file.display());
    }
    let left: BTreeSet<String> = std::fs::read_dir(&bin_dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, want, "no temporary files left");
}

/// `kubectl apply -k deploy/`: the kustomization applies kxdp.yaml and is the one place
/// that names the image, so it must rename every container's image, at this version.
#[test]
fn kustomization_sets_every_image() {
    let text = std::fs::read_to_string(KUSTOMIZATION).expect("read deploy/kustomization.yaml");
    let k: serde_yaml::Value = serde_yaml::from_str(&text).expect("kustomization is YAML");
    assert_eq!(k["kind"].as_str(), Some("Kustomization"));
    let resources: Vec<&str> = k["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(resources, ["kxdp.yaml"]);
    let images = k["images"].as_sequence().expect("images");
    assert_eq!(images.len(), 1, "one image: {images:?}");
    assert_eq!(images[0]["name"].as_str(), Some(IMAGE_NAME));
    assert_eq!(
        images[0]["newTag"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "the release tag is the workspace version"
    );

    let m = manifests();
    let pod = pod_spec(&m);
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    for c in containers {
        assert_eq!(
            c.image.as_deref(),
            Some(IMAGE_NAME),
            "{}: the kustomization's image transformer matches the bare name only",
            c.name
        );
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const METRICS_PORT: i32 = 10249;
const MONITORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/monitoring");

/// The part of a monitoring.coreos.com/v1 ServiceMonitor deploy/monitoring/ uses; any
/// other field is refused (no CRD types here to decode it strictly otherwise).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    namespace_selector: NamespaceSelector,
    endpoints: Vec<ScrapeEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamespaceSelector {
    match_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ScrapeEndpoint {
    port: String,
    path: String,
    interval: String,
    relabelings: Vec<Relabeling>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Relabeling {
    source_labels: Vec<String>,
    target_label: String,
}

/// Prometheus reaches every agent's /metrics: the agent binds it on the node's addresses
/// (the pod has the host's network), the container declares the port, the pod template
/// carries the scrape annotations, and deploy/monitoring/ has a headless Service over the
/// agent pods with a ServiceMonitor selecting it.
#[test]
fn metrics_are_served_where_prometheus_reaches_them() {
    let m = manifests();
    let args = agent_args(&m, "worker-7");
    assert_eq!(
        args.metrics_bind_address,
        std::net::SocketAddr::from(([0, 0, 0, 0], METRICS_PORT as u16))
    );
    let agent = agent_container(&m);
    let port = agent
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("a container port named metrics");
    assert_eq!(port.container_port, METRICS_PORT);
    assert_eq!(port.protocol.as_deref(), Some("TCP"));

    let template = m.daemon_set.spec.as_ref().expect("spec").template.clone();
    let template_meta = template.metadata.expect("template metadata");
    let annotations = template_meta.annotations.clone().unwrap_or_default();
    let want = [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "10249"),
        ("prometheus.io/path", "/metrics"),
    ];
    for (k, v) in want {
        assert_eq!(annotations.get(k).map(String::as_str), Some(v), "{k}");
    }
    let pod_labels = template_meta.labels.expect("template labels");

    let k: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{MONITORING}/kustomization.yaml"))
            .expect("read deploy/monitoring/kustomization.yaml"),
    )
    .expect("kustomization is YAML");
    assert_eq!(k["kind"].as_str(), Some("Kustomization"));
    assert_eq!(k["resources"][0].as_str(), Some("monitoring.yaml"));
    assert_eq!(k["resources"].as_sequence().map(Vec::len), Some(1));

    let docs = documents(
        &std::fs::read_to_string(format!("{MONITORING}/monitoring.yaml"))
            .expect("read deploy/monitoring/monitoring.yaml"),
    )
    .expect("monitoring.yaml is YAML");
    assert_eq!(docs.len(), 2, "a Service and a ServiceMonitor");
    let service: Box<k8s_openapi::api::core::v1::Service> =
        strict(&docs[0]).unwrap_or_else(|e| panic!("the Service: {e}"));
    assert_eq!(docs[0]["kind"], "Service");
    let service_meta = &service.metadata;
    assert_eq!(service_meta.namespace.as_deref(), Some(NAMESPACE));
    let spec = service.spec.as_ref().expect("Service spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless");
    for (k, v) in spec.selector.as_ref().expect("a selector") {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "the Service selects the agent pods"
        );
    }
    let service_port = &spec.ports.as_ref().expect("ports")[0];
    assert_eq!(service_port.port, METRICS_PORT);
    assert_eq!(
        service_port.target_port,
        Some(IntOrString::String("metrics".into())),
        "the container's named port"
    );

    let monitor: ServiceMonitor = serde_json::from_value(docs[1].clone())
        .unwrap_or_else(|e| panic!("the ServiceMonitor: {e}"));
    assert_eq!(monitor.api_version, "monitoring.coreos.com/v1");
    assert_eq!(monitor.kind, "ServiceMonitor");
    assert_eq!(monitor.metadata.namespace.as_deref(), Some(NAMESPACE));
    let service_labels = service_meta.labels.clone().unwrap_or_default();
    let selector = monitor.spec.selector.match_labels.expect("matchLabels");
    for (k, v) in &selector {
        assert_eq!(
            service_labels.get(k),
            Some(v),
            "the ServiceMonitor selects the Service"
        );
    }
    assert_eq!(monitor.spec.namespace_selector.match_names, [NAMESPACE]);
    let endpoint = &monitor.spec.endpoints[0];
    assert_eq!(Some(&endpoint.port), service_port.name.as_ref());
    assert_eq!(endpoint.path, "/metrics");
    assert!(endpoint.interval.ends_with('s'), "{}", endpoint.interval);
    assert!(endpoint.relabelings.iter().any(|r| r.source_labels
        == ["__meta_kubernetes_pod_node_name"]
        && r.target_label == "node"));
}
