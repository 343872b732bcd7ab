//! The CNI network configuration list that puts kxdp-cni on a node: written by the agent
//! (once it is ready to answer the plugin), read by the container runtime.
//!
//! It lives here, with the rest of the agent/plugin contract, because its values are the
//! agent's own options (`agentSocket` is where the agent listens, `stateDir` is where it
//! re-adopts pods from): generating it from them means the two cannot drift apart.
//!
//! Runtimes (containerd, CRI-O) use the first configuration file of `/etc/cni/net.d` in
//! lexical order, so the file is named to sort before the `10-<plugin>.conflist` files
//! that Calico, Flannel, Weave, kindnet and Antrea install: a leftover from the CNI kxdp
//! replaces must not win.

use std::path::Path;

use serde_json::{Value, json};

/// The file name: `05-` sorts before every `10-*` another plugin leaves behind.
pub const CONFLIST_NAME: &str = "05-kxdp.conflist";
/// The network's name (the runtime passes it to every plugin; host-local keys its leases
/// by it).
pub const NETWORK_NAME: &str = "kxdp";
/// The plugin's `type`: the executable the runtime looks for in its CNI bin directories.
pub const PLUGIN_TYPE: &str = "kxdp-cni";
/// Where host-local keeps its leases unless told otherwise (its own default).
pub const DEFAULT_IPAM_DATA_DIR: &str = "/var/lib/cni/networks";
/// `ipam.ranges[][].subnet` standing for the node's PodCIDRs, which kxdp-cni asks the agent
/// for: the same file serves every node.
pub const USE_POD_CIDR: &str = "usePodCidr";

/// The versions kxdp-cni speaks, oldest first. A list declares those of them that every
/// plugin in it speaks: `cniVersions` (a CNI 1.1 runtime runs the whole chain at the highest
/// one it knows, and only then sends GC and STATUS) and, for runtimes that predate 1.1,
/// `cniVersion` (the highest of them up to 1.0.0). Declaring 1.1.0 beside a `portmap` that
/// only knows 1.0.0 (Debian 12's containernetworking-plugins 1.1.1) would make a 1.1 runtime
/// fail every ADD at portmap's version check.
pub const CNI_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];
/// The plugins of the list, in chain order.
pub const CHAIN: [&str; 2] = [PLUGIN_TYPE, PORTMAP_TYPE];
/// hostPort forwarding (iptables DNAT on the host).
pub const PORTMAP_TYPE: &str = "portmap";

/// What differs between nodes' (or labs') lists: paths, and the versions the installed
/// plugins speak.
#[derive(Debug, Clone, Copy)]
pub struct ConflistParams<'a> {
    /// The agent's local API socket, as a path on the host (kxdp-cni runs on the host).
    pub agent_socket: &'a Path,
    /// kxdp-cni's attachment records.
    pub state_dir: &'a Path,
    /// host-local's leases.
    pub ipam_data_dir: &'a Path,
    /// The entries of [`CNI_VERSIONS`] every plugin of [`CHAIN`] speaks ([`common_versions`]).
    pub versions: &'a [&'a str],
}

/// The list: kxdp-cni (host-local IPAM over the node's PodCIDRs), then `portmap`, so a
/// pod's `hostPort`s are forwarded (the runtime passes them as `runtimeConfig.portMappings`
/// to plugins declaring the `portMappings` capability; without a plugin declaring it they
/// are silently ignored).
pub fn conflist(params: ConflistParams<'_>) -> Value {
    let legacy = params
        .versions
        .iter()
        .copied()
        .filter(|v| version_key(v) <= version_key("1.0.0"))
        .max_by_key(|v| version_key(v))
        .unwrap_or("1.0.0");
    json!({
        "cniVersion": legacy,
        "cniVersions": params.versions,
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": PLUGIN_TYPE,
                "agentSocket": params.agent_socket.display().to_string(),
                "stateDir": params.state_dir.display().to_string(),
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": USE_POD_CIDR}]],
                    "dataDir": params.ipam_data_dir.display().to_string(),
                },
            },
            {
                "type": PORTMAP_TYPE,
                "capabilities": {"portMappings": true},
            },
        ],
    })
}

/// Whether a runtime reads the file `name` of its conf dir as a network configuration:
/// `.conf`, `.conflist` and `.json` files; hidden ones are half-written temporaries.
pub fn is_config_file_name(name: &str) -> bool {
    !name.starts_with('.')
        && [".conf", ".conflist", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// Whether a CNI configuration file's text is kxdp's (a single plugin or a list with
/// kxdp-cni in it): such files are the agent's to replace.
pub fn is_kxdp_config(text: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let is_ours = |p: &Value| p["type"] == PLUGIN_TYPE;
    is_ours(&v)
        || v["plugins"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(is_ours))
}

/// What a runtime hands plugin `index` of `list`: its object with the list's `name` and
/// the version the runtime settled on (the highest of `cniVersions` it supports, else
/// `cniVersion`) merged in.
pub fn plugin_config(list: &Value, index: usize, supported: &[&str]) -> Option<Value> {
    let mut plugin = list["plugins"].get(index)?.clone();
    let version = negotiated_version(list, supported)?;
    let obj = plugin.as_object_mut()?;
    obj.insert("cniVersion".into(), Value::from(version));
    obj.insert("name".into(), list["name"].clone());
    Some(plugin)
}

/// The entries of [`CNI_VERSIONS`] that every plugin speaks, given each plugin's
/// `supportedVersions` (its answer to CNI_COMMAND=VERSION).
pub fn common_versions(supported: &[Vec<String>]) -> Vec<&'static str> {
    CNI_VERSIONS
        .into_iter()
        .filter(|v| supported.iter().all(|s| s.iter().any(|x| x == v)))
        .collect()
}

/// The spec-1.1 choice: the highest entry of `cniVersions` the runtime supports; a list
/// without `cniVersions` (or with none supported) is read at its `cniVersion`.
pub fn negotiated_version(list: &Value, supported: &[&str]) -> Option<String> {
    let best = list["cniVersions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|v| supported.contains(v))
        .max_by_key(|v| version_key(v))
        .map(str::to_string);
    best.or_else(|| list["cniVersion"].as_str().map(str::to_string))
}

/// `major.minor.patch` as numbers (so 1.10.0 sorts after 1.9.0); anything else sorts first.
fn version_key(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Value {
        conflist(ConflistParams {
            agent_socket: Path::new("/run/kxdp/agent.sock"),
            state_dir: Path::new("/var/lib/kxdp-cni"),
            ipam_data_dir: Path::new(DEFAULT_IPAM_DATA_DIR),
            versions: &CNI_VERSIONS,
        })
    }

    #[test]
    fn declares_only_what_every_plugin_speaks() {
        let s = |vs: &[&str]| vs.iter().map(|v| v.to_string()).collect::<Vec<_>>();
        let kxdp = s(&["0.4.0", "1.0.0", "1.1.0"]);
        // Debian 12's portmap: up to 1.0.0.
        let old_portmap = s(&["0.3.1", "0.4.0", "1.0.0"]);
        let common = common_versions(&[kxdp.clone(), old_portmap]);
        assert_eq!(common, ["1.0.0"]);
        let l = conflist(ConflistParams {
            agent_socket: Path::new("/s"),
            state_dir: Path::new("/d"),
            ipam_data_dir: Path::new("/i"),
            versions: &common,
        });
        assert_eq!(l["cniVersion"], "1.0.0");
        assert_eq!(l["cniVersions"], json!(["1.0.0"]));
        assert_eq!(
            negotiated_version(&l, &["1.0.0", "1.1.0"]).as_deref(),
            Some("1.0.0")
        );
        let new_portmap = s(&["1.0.0", "1.1.0"]);
        assert_eq!(common_versions(&[kxdp, new_portmap]), ["1.0.0", "1.1.0"]);
        assert!(common_versions(&[s(&["0.4.0"])]).is_empty());
    }

    #[test]
    fn sorts_before_other_plugins_files() {
        for other in [
            "10-calico.conflist",
            "10-flannel.conflist",
            "10-weave.conflist",
            "10-kindnet.conflist",
            "10-antrea.conflist",
            "10-kxdp.conflist",
        ] {
            assert!(CONFLIST_NAME < other, "{other}");
        }
    }

    #[test]
    fn config_file_names_are_those_runtimes_read() {
        for yes in ["05-kxdp.conflist", "10-flannel.conf", "99-x.json"] {
            assert!(is_config_file_name(yes), "{yes}");
        }
        for no in [".05-kxdp.conflist.kxdp-tmp-1", "README", "x.conflist.bak"] {
            assert!(!is_config_file_name(no), "{no}");
        }
    }

    #[test]
    fn recognises_its_own_files_only() {
        assert!(is_kxdp_config(&list().to_string()));
        assert!(is_kxdp_config(
            r#"{"cniVersion":"0.4.0","type":"kxdp-cni"}"#
        ));
        assert!(!is_kxdp_config(
            r#"{"name":"cbr0","plugins":[{"type":"flannel"},{"type":"portmap"}]}"#
        ));
        assert!(!is_kxdp_config("not json"));
    }

    #[test]
    fn runtimes_negotiate_the_version() {
        let l = list();
        // A CNI 1.1 runtime takes the highest it knows; an older one reads cniVersion.
        assert_eq!(
            negotiated_version(&l, &["0.4.0", "1.0.0", "1.1.0"]).as_deref(),
            Some("1.1.0")
        );
        assert_eq!(
            negotiated_version(&l, &["0.4.0", "1.0.0"]).as_deref(),
            Some("1.0.0")
        );
        let old = json!({"cniVersion": "1.0.0", "name": "n", "plugins": []});
        assert_eq!(
            negotiated_version(&old, &["1.1.0"]).as_deref(),
            Some("1.0.0")
        );
    }

    #[test]
    fn plugins_get_name_and_version() {
        let p = plugin_config(&list(), 1, &["1.1.0"]).expect("portmap");
        assert_eq!(p["type"], "portmap");
        assert_eq!(p["name"], NETWORK_NAME);
        assert_eq!(p["cniVersion"], "1.1.0");
        assert_eq!(p["capabilities"]["portMappings"], true);
        assert!(plugin_config(&list(), 2, &["1.1.0"]).is_none());
    }
}
