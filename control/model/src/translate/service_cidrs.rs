//! The Service CIDRs in effect: where ClusterIPs are accepted from, and what the node
//! routes into the host port (walk 8).
//!
//! A cluster with the ServiceCIDR API (networking.k8s.io/v1, GA in 1.33) allocates
//! ClusterIPs from the union of its ServiceCIDR objects' `spec.cidrs`; the API server
//! itself keeps one (`kubernetes`) for its `--service-cluster-ip-range`. A ServiceCIDR being
//! deleted still counts: the API server keeps it (behind a finalizer) until no Service
//! holds an address from it, and those Services must keep working until they are gone.
//! kxdp.yaml's `serviceCIDR` is the fallback for a cluster (or a state directory) without
//! any usable ServiceCIDR object.

use std::collections::BTreeSet;

use datapath::Cidr;
use k8s_openapi::api::networking::v1::ServiceCIDR;

use crate::config::AgentConfig;
use crate::k8s::{name_of, parse_cidr};

/// The Service CIDRs in effect and what was left out on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveServiceCidrs {
    /// Sorted and without duplicates (so an equal set compares equal whatever the order
    /// objects came in): IPv4 before IPv6, then by network and prefix length. A CIDR is
    /// kept with its host bits cleared, so `10.96.0.1/12` and `10.96.0.0/12` are one entry.
    pub cidrs: Vec<Cidr>,
    /// Whether these are kxdp.yaml's `serviceCIDR` (no usable ServiceCIDR object).
    pub from_config: bool,
    /// One line per entry left out, naming the object.
    pub warnings: Vec<String>,
}

/// The union of every ServiceCIDR's `spec.cidrs`, or `config.service_cidrs` when no object
/// contributes one. Entries that do not parse are left out with a warning (the API server
/// would not admit them; a state directory's loader refuses them up front).
pub fn effective_service_cidrs(
    objects: &[ServiceCIDR],
    config: &AgentConfig,
) -> EffectiveServiceCidrs {
    let mut set = BTreeSet::new();
    let mut warnings = Vec::new();
    let mut sorted: Vec<&ServiceCIDR> = objects.iter().collect();
    sorted.sort_by_key(|o| name_of(&o.metadata));
    for object in sorted {
        let name = name_of(&object.metadata);
        let entries = object
            .spec
            .as_ref()
            .and_then(|s| s.cidrs.as_deref())
            .unwrap_or_default();
        for (i, text) in entries.iter().enumerate() {
            match parse_cidr(text) {
                // Family first: IPv4 before IPv6 (`Cidr`'s own order would put `::1/128`
                // before every IPv4-mapped key).
                Ok(cidr) => {
                    set.insert((!cidr.addr.is_v4(), cidr));
                }
                Err(e) => warnings.push(format!(
                    "ServiceCIDR {name}: spec.cidrs[{i}] {text:?}: {e}: left out"
                )),
            }
        }
    }
    if set.is_empty() {
        if !objects.is_empty() {
            warnings.push(format!(
                "ServiceCIDR: no object has a usable CIDR: using kxdp.yaml's serviceCIDR {}",
                list(&config.service_cidrs)
            ));
        }
        return EffectiveServiceCidrs {
            cidrs: config.service_cidrs.clone(),
            from_config: true,
            warnings,
        };
    }
    EffectiveServiceCidrs {
        cidrs: set.into_iter().map(|(_, cidr)| cidr).collect(),
        from_config: false,
        warnings,
    }
}

/// `a,b` for messages.
pub(crate) fn list(cidrs: &[Cidr]) -> String {
    cidrs
        .iter()
        .map(Cidr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, cidrs: &[&str]) -> ServiceCIDR {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"cidrs": cidrs},
        }))
        .unwrap()
    }

    fn texts(e: &EffectiveServiceCidrs) -> Vec<String> {
        e.cidrs.iter().map(Cidr::to_string).collect()
    }

    #[test]
    fn the_union_of_every_object_else_kxdp_yaml() {
        let config = AgentConfig::default();
        let none = effective_service_cidrs(&[], &config);
        assert!(none.from_config && none.warnings.is_empty());
        assert_eq!(none.cidrs, config.service_cidrs);

        let objects = [
            object("second", &["fd00:20::/112", "10.200.0.0/24"]),
            object("kubernetes", &["10.96.0.0/12"]),
            // The same range twice, once with host bits: one entry.
            object("again", &["10.96.0.1/12"]),
        ];
        let all = effective_service_cidrs(&objects, &config);
        assert!(!all.from_config);
        assert!(all.warnings.is_empty(), "{:?}", all.warnings);
        assert_eq!(
            texts(&all),
            ["10.96.0.0/12", "10.200.0.0/24", "fd00:20::/112"]
        );
        // Pure: the order objects came in does not matter.
        let mut reversed = objects.to_vec();
        reversed.reverse();
        assert_eq!(effective_service_cidrs(&reversed, &config), all);
    }

    #[test]
    fn bad_entries_are_left_out_with_a_warning() {
        let config = AgentConfig::default();
        let some = effective_service_cidrs(
            &[object("bad", &["10.300.0.0/24", "10.200.0.0/24"])],
            &config,
        );
        assert_eq!(texts(&some), ["10.200.0.0/24"]);
        assert_eq!(some.warnings.len(), 1, "{:?}", some.warnings);
        assert!(
            some.warnings[0].starts_with("ServiceCIDR bad: spec.cidrs[0] \"10.300.0.0/24\": "),
            "{:?}",
            some.warnings
        );

        // Nothing usable at all: kxdp.yaml's, said so.
        let empty = [object("bad", &["nonsense"]), object("blank", &[])];
        let fallback = effective_service_cidrs(&empty, &config);
        assert!(fallback.from_config);
        assert_eq!(fallback.cidrs, config.service_cidrs);
        assert_eq!(fallback.warnings.len(), 2, "{:?}", fallback.warnings);
    }
}
