//! `usePodCidr`: one conflist for every node.
//!
//! host-local allocates from the ranges its configuration names, and every node has a
//! PodCIDR of its own, so a literal range ties a conflist to one node. Like Calico's
//! plugin, kxdp-cni accepts the literal `"usePodCidr"` as a host-local subnet, either as
//! `ipam.subnet` (host-local's one-range form) or as the one range of a range set
//! (`ipam.ranges: [[{"subnet": "usePodCidr"}]]`), and hands host-local a copy of the
//! configuration in which that range became the node's PodCIDRs as the agent reports them:
//! one range set per family, IPv4 first, host-local's default gateway (the first address,
//! which is the node's pod gateway). Everything else in `ipam` is passed on untouched.

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::spec::{CniError, code};

/// The literal that stands for the node's PodCIDRs.
pub const USE_POD_CIDR: &str = "usePodCidr";

/// The only IPAM plugin whose ranges kxdp-cni rewrites; others get the configuration as is.
pub const HOST_LOCAL: &str = "host-local";

/// Stands in for the PodCIDR when host-local must only release (DEL, GC) and the agent
/// cannot say what the PodCIDR is. host-local's DEL parses its ranges (an unparsable or
/// missing range fails it) but then releases every address recorded for (container id,
/// ifname) anywhere in `<dataDir>/<network>`, whatever the range, so any valid range
/// releases the same leases. TEST-NET-1 (RFC 5737) is nobody's PodCIDR, so it cannot
/// overlap a literal range set next to it.
pub const RELEASE_STAND_IN: &str = "192.0.2.0/24";

/// Where the configuration asks for the node's PodCIDRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// `ipam.subnet` (host-local's one-range form).
    Subnet,
    /// `ipam.ranges[i]`, a range set holding the one range `{"subnet": "usePodCidr"}`.
    RangeSet(usize),
}

/// Where the configuration `config` says `usePodCidr`, if it does and its IPAM is
/// host-local; code 7 for a `usePodCidr` that cannot be filled in the same way on every
/// node (fixed range bounds or gateway, other ranges in its set, more than one).
pub fn find(config: &Value) -> Result<Option<Site>, CniError> {
    let Some(ipam) = config.get("ipam").and_then(Value::as_object) else {
        return Ok(None);
    };
    if ipam.get("type").and_then(Value::as_str) != Some(HOST_LOCAL) {
        return Ok(None);
    }
    let mut sites = Vec::new();
    if is_use_pod_cidr(ipam.get("subnet")) {
        // The one-range form's bounds and gateway are inside one node's PodCIDR.
        for key in ["rangeStart", "rangeEnd", "gateway"] {
            if ipam.contains_key(key) {
                return Err(invalid(format!(
                    "ipam.{key} cannot go with ipam.subnet {USE_POD_CIDR:?}: \
                     it would lie inside one node's PodCIDR only"
                )));
            }
        }
        sites.push(Site::Subnet);
    }
    if let Some(sets) = ipam.get("ranges").and_then(Value::as_array) {
        for (i, set) in sets.iter().enumerate() {
            let Some(ranges) = set.as_array() else {
                continue;
            };
            let asks = ranges
                .iter()
                .filter(|r| is_use_pod_cidr(r.get("subnet")))
                .count();
            if asks == 0 {
                continue;
            }
            if ranges.len() != 1 {
                return Err(invalid(format!(
                    "ipam.ranges[{i}] holds {} ranges; a range with subnet {USE_POD_CIDR:?} \
                     must be the only one of its range set (it becomes one set per family)",
                    ranges.len()
                )));
            }
            if let Some(extra) = ranges[0]
                .as_object()
                .and_then(|r| r.keys().find(|k| *k != "subnet"))
            {
                return Err(invalid(format!(
                    "ipam.ranges[{i}][0].{extra} cannot go with subnet {USE_POD_CIDR:?}: \
                     it would fit one node's PodCIDR only"
                )));
            }
            sites.push(Site::RangeSet(i));
        }
    }
    match sites.as_slice() {
        [] => Ok(None),
        [site] => Ok(Some(*site)),
        _ => Err(invalid(format!(
            "{USE_POD_CIDR:?} appears {} times in ipam; once stands for every PodCIDR of the node",
            sites.len()
        ))),
    }
}

fn is_use_pod_cidr(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str) == Some(USE_POD_CIDR)
}

/// `config` (the network configuration as received) with the `usePodCidr` at `site`
/// replaced by range sets over `cidrs`, which must not be empty.
pub fn fill(config: &[u8], site: Site, cidrs: &[IpNet]) -> Result<Vec<u8>, CniError> {
    let decode = |e: serde_json::Error| {
        CniError::new(
            code::DECODE,
            "cannot decode the network configuration",
            e.to_string(),
        )
    };
    let mut value: Value = serde_json::from_slice(config).map_err(decode)?;
    let sets = range_sets(cidrs);
    let ipam = value
        .get_mut("ipam")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| invalid("ipam is not an object".to_string()))?;
    match site {
        Site::Subnet => {
            ipam.remove("subnet");
            // host-local puts the one-range form's range set before `ranges`; so do we.
            let mut all = sets;
            if let Some(Value::Array(rest)) = ipam.remove("ranges") {
                all.extend(rest);
            }
            ipam.insert("ranges".to_string(), Value::Array(all));
        }
        Site::RangeSet(i) => {
            let ranges = ipam
                .get_mut("ranges")
                .and_then(Value::as_array_mut)
                .filter(|r| i < r.len())
                .ok_or_else(|| invalid(format!("ipam.ranges[{i}] is gone")))?;
            ranges.splice(i..=i, sets);
        }
    }
    serde_json::to_vec(&value).map_err(decode)
}

/// One range set per family, IPv4 first, each CIDR a range of its family's set.
pub fn range_sets(cidrs: &[IpNet]) -> Vec<Value> {
    let family = |v4: bool| -> Vec<Value> {
        cidrs
            .iter()
            .filter(|c| matches!(c, IpNet::V4(_)) == v4)
            .map(|c| {
                let mut range = Map::new();
                range.insert("subnet".to_string(), Value::String(c.to_string()));
                Value::Object(range)
            })
            .collect()
    };
    [family(true), family(false)]
        .into_iter()
        .filter(|set| !set.is_empty())
        .map(Value::Array)
        .collect()
}

fn invalid(details: String) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        "invalid network configuration",
        details,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cidrs(texts: &[&str]) -> Vec<IpNet> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn filled(config: Value, pod_cidrs: &[&str]) -> Value {
        let site = find(&config).unwrap().expect("asks for the PodCIDR");
        let out = fill(
            &serde_json::to_vec(&config).unwrap(),
            site,
            &cidrs(pod_cidrs),
        )
        .unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn ranges_form_becomes_one_set_per_family_ipv4_first() {
        let conf = json!({"cniVersion": "1.0.0", "name": "k", "mtu": 1400,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "usePodCidr"}]],
                     "dataDir": "/var/lib/x", "routes": [{"dst": "10.96.0.0/12"}]}});
        let out = filled(conf.clone(), &["fd00:10:244:1::/64", "10.244.1.0/24"]);
        let mut want = conf;
        want["ipam"]["ranges"] =
            json!([[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]]);
        assert_eq!(out, want);
    }

    #[test]
    fn subnet_form_goes_before_other_range_sets() {
        let conf = json!({"cniVersion": "1.0.0", "name": "k",
            "ipam": {"type": "host-local", "subnet": "usePodCidr",
                     "ranges": [[{"subnet": "fd00:99::/64"}]]}});
        let out = filled(conf, &["10.244.2.0/24"]);
        assert_eq!(
            out["ipam"],
            json!({"type": "host-local",
                   "ranges": [[{"subnet": "10.244.2.0/24"}], [{"subnet": "fd00:99::/64"}]]})
        );
    }

    #[test]
    fn a_range_set_in_the_middle_is_replaced_in_place() {
        let conf = json!({"cniVersion": "1.0.0", "name": "k",
            "ipam": {"type": "host-local", "ranges": [
                [{"subnet": "fd00:1::/64"}], [{"subnet": "usePodCidr"}], [{"subnet": "fd00:2::/64"}]]}});
        assert_eq!(find(&conf).unwrap(), Some(Site::RangeSet(1)));
        let out = filled(conf, &["10.244.3.0/24", "10.245.3.0/24"]);
        assert_eq!(
            out["ipam"]["ranges"],
            json!([[{"subnet": "fd00:1::/64"}],
                   [{"subnet": "10.244.3.0/24"}, {"subnet": "10.245.3.0/24"}],
                   [{"subnet": "fd00:2::/64"}]])
        );
    }

    #[test]
    fn literal_ranges_and_other_ipam_plugins_are_left_alone() {
        let literal =
            json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}]]}});
        assert_eq!(find(&literal).unwrap(), None);
        let other = json!({"ipam": {"type": "whereabouts", "subnet": "usePodCidr"}});
        assert_eq!(find(&other).unwrap(), None);
        assert_eq!(find(&json!({"name": "no ipam"})).unwrap(), None);
    }

    #[test]
    fn pod_cidr_ranges_that_fit_one_node_only_are_refused() {
        for (conf, names) in [
            (
                json!({"ipam": {"type": "host-local", "subnet": "usePodCidr", "gateway": "10.244.1.1"}}),
                "ipam.gateway",
            ),
            (
                json!({"ipam": {"type": "host-local",
                    "ranges": [[{"subnet": "usePodCidr", "rangeStart": "10.244.1.10"}]]}}),
                "rangeStart",
            ),
            (
                json!({"ipam": {"type": "host-local",
                    "ranges": [[{"subnet": "usePodCidr"}, {"subnet": "10.9.0.0/24"}]]}}),
                "ipam.ranges[0] holds 2 ranges",
            ),
            (
                json!({"ipam": {"type": "host-local", "subnet": "usePodCidr",
                    "ranges": [[{"subnet": "usePodCidr"}]]}}),
                "appears 2 times",
            ),
        ] {
            let err = find(&conf).unwrap_err();
            assert_eq!(err.code, code::INVALID_CONFIG, "{conf}");
            assert!(err.details.contains(names), "{names}: {}", err.details);
        }
    }

    #[test]
    fn the_release_stand_in_is_a_cidr() {
        let c: IpNet = RELEASE_STAND_IN.parse().unwrap();
        assert_eq!(
            range_sets(&[c]),
            vec![json!([{"subnet": RELEASE_STAND_IN}])]
        );
    }
}
