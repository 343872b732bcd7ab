//! Reading a sandbox's network namespace out of the runtime's verbose status.

use crate::api::PodSandboxStatusResponse;

/// The path of the sandbox's network namespace, from the `info` containerd puts into a
/// verbose PodSandboxStatus (a JSON document under the key "info": `netNamespacePath`, or
/// the OCI spec's network namespace). None for a sandbox on the host's network, or when the
/// runtime does not say.
pub fn netns_path(status: &PodSandboxStatusResponse) -> Option<String> {
    let info: serde_json::Value = serde_json::from_str(status.info.get("info")?).ok()?;
    let direct = info["netNamespacePath"].as_str().filter(|p| !p.is_empty());
    let from_spec = || {
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()?
            .iter()
            .find(|ns| ns["type"] == "network")?["path"]
            .as_str()
            .filter(|p| !p.is_empty())
    };
    direct.or_else(from_spec).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(info: &str) -> PodSandboxStatusResponse {
        PodSandboxStatusResponse {
            info: [("info".to_string(), info.to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn netns_path_comes_from_the_verbose_info() {
        let s = status(r#"{"netNamespacePath": "/state/netns/cni-1234"}"#);
        assert_eq!(netns_path(&s).as_deref(), Some("/state/netns/cni-1234"));
        let s = status(
            r#"{"netNamespacePath": "", "runtimeSpec": {"linux": {"namespaces": [
                {"type": "pid"}, {"type": "network", "path": "/state/netns/cni-9"}]}}}"#,
        );
        assert_eq!(netns_path(&s).as_deref(), Some("/state/netns/cni-9"));
        // Host network: no path anywhere.
        let s = status(r#"{"runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}]}}}"#);
        assert_eq!(netns_path(&s), None);
        assert_eq!(netns_path(&status("not json")), None);
        assert_eq!(netns_path(&PodSandboxStatusResponse::default()), None);
    }
}
