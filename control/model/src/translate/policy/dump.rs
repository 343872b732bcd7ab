//! A canonical text rendering of [`PolicyTables`], for comparing tables built different
//! ways (full compile vs. updates, input orders) and for golden files.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use datapath::policy::PolicyTables;

/// A text rendering of `policy` with every map sorted: equal tables render identically.
pub fn canonical_dump(policy: &PolicyTables) -> String {
    let mut s = String::new();
    let ids: BTreeMap<_, _> = policy.identity_by_ip.iter().collect();
    for (ip, id) in ids {
        let _ = writeln!(s, "identity {ip} -> {}", id.0);
    }
    let named: BTreeMap<_, _> = policy.named_ports_by_ip.iter().collect();
    for (ip, ports) in named {
        let _ = writeln!(s, "named_ports {ip}: {ports:?}");
    }
    for (i, n) in policy.policy_names.iter().enumerate() {
        let _ = writeln!(s, "policy {i}: {n}");
    }
    for (i, e) in policy.endpoints.iter().enumerate() {
        for (dir, d) in [("ingress", &e.ingress), ("egress", &e.egress)] {
            let Some(d) = d else {
                let _ = writeln!(s, "endpoint {i} {dir}: open");
                continue;
            };
            let _ = writeln!(
                s,
                "endpoint {i} {dir}: selected_by {:?} any_peer {:?}",
                d.selected_by, d.any_peer
            );
            let by: BTreeMap<_, _> = d.by_identity.iter().collect();
            for (id, ports) in by {
                let _ = writeln!(s, "  identity {}: {ports:?}", id.0);
            }
            for c in &d.cidrs {
                let _ = writeln!(s, "  cidr {c:?}");
            }
        }
    }
    s
}
