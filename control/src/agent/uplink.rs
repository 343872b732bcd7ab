//! Which interface is this node's uplink, when no flag names it: as Flannel and Calico find
//! theirs, the interface holding the Node's InternalIP, else the one the IPv4 default route
//! leaves by. `--uplink` wins, then kxdp.yaml (a `nodes:` entry matching the node, then the
//! top-level `uplink:`).
//!
//! Whatever named it, the interface must be one kxdp can serve: an Ethernet NIC (no link
//! kind) or a veth (labs, VMs wired with veths). A bond, a VLAN device or a bridge is
//! refused with the reason (see [`unsupported`]): attached there, the XDP programs would
//! miss or misread the traffic instead of failing loudly.
//!
//! [`choose`] is pure (the interfaces as read); [`find`] reads them from the kernel.

use std::fmt;
use std::net::Ipv4Addr;

use ::netdev::{NetdevError, Netlink};
use ipnet::IpNet;

/// What named the uplink, for the log, `kxdp status` and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundBy {
    Flag,
    /// kxdp.yaml: `nodes[i]` when an entry matched, else the top-level `uplink:`.
    Config {
        entry: Option<usize>,
    },
    /// It holds this InternalIP of the Node.
    InternalIp(Ipv4Addr),
    DefaultRoute,
}

impl fmt::Display for FoundBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FoundBy::Flag => write!(f, "--uplink"),
            FoundBy::Config { entry: Some(i) } => write!(f, "kxdp.yaml nodes[{i}]"),
            FoundBy::Config { entry: None } => write!(f, "kxdp.yaml uplink"),
            FoundBy::InternalIp(ip) => write!(f, "holds the Node's InternalIP {ip}"),
            FoundBy::DefaultRoute => write!(f, "the IPv4 default route's interface"),
        }
    }
}

/// The uplink and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub name: String,
    pub found_by: FoundBy,
}

/// Why no uplink could be chosen. The agent stays unready with this as its reason and
/// tries again, since addresses, routes and interfaces may still come (DHCP, a NIC driver).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChooseUplinkError {
    #[error(
        "no uplink: no interface holds the Node's InternalIP ({}) and there is no IPv4 default route; name it with --uplink or `uplink:` in kxdp.yaml",
        list(internal_ips)
    )]
    NotFound { internal_ips: Vec<Ipv4Addr> },
    #[error("uplink {name} ({found_by}) does not exist in this network namespace")]
    Missing { name: String, found_by: FoundBy },
    #[error("uplink {name} ({found_by}) is a {kind} device, which kxdp does not serve: {why}")]
    Unsupported {
        name: String,
        found_by: FoundBy,
        kind: String,
        why: &'static str,
    },
    #[error("reading the node's interfaces: {0}")]
    Kernel(String),
}

fn list(ips: &[Ipv4Addr]) -> String {
    if ips.is_empty() {
        "it has none".to_string()
    } else {
        ips.iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One interface as [`choose`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    /// The link kind (`veth`, `bond`, ...); None for a NIC.
    pub kind: Option<String>,
    pub ipv4: Vec<Ipv4Addr>,
}

/// What named candidates there are before looking at the interfaces.
#[derive(Debug, Clone, Default)]
pub struct Wanted<'a> {
    /// `--uplink`.
    pub flag: Option<&'a str>,
    /// kxdp.yaml's uplink for this node and the `nodes` entry it came from, if any.
    pub configured: Option<(&'a str, Option<usize>)>,
    /// The Node's InternalIP addresses (IPv4).
    pub internal_ips: Vec<Ipv4Addr>,
}

/// Why an interface of link kind `kind` cannot be the uplink; None when it can.
pub fn unsupported(kind: Option<&str>, name: &str) -> Option<&'static str> {
    match kind {
        None if name == "lo" => Some("the loopback carries no traffic from other nodes"),
        None | Some("veth") => None,
        Some("bond") => Some(
            "the XDP programs would run on each bond port, under the port's own interface \
             index and queues, which the agent does not serve; put the address on a NIC or \
             name one with --uplink",
        ),
        Some("vlan") => Some(
            "the XDP programs read untagged frames, and a VLAN device sees its frames only \
             after the kernel has stripped the tag, past XDP; use an untagged NIC",
        ),
        Some("bridge") => Some(
            "traffic reaches a bridge through its ports, and XDP on the bridge sees it only \
             after bridging; put the address on the NIC",
        ),
        Some(_) => Some("not an Ethernet NIC the XDP programs can be attached to"),
    }
}

/// The uplink among `interfaces`: the flag's, kxdp.yaml's, the one holding an InternalIP
/// (in the Node's order), or the one `default_route` (an ifindex) leaves by.
pub fn choose(
    wanted: &Wanted<'_>,
    interfaces: &[Interface],
    default_route: Option<u32>,
) -> Result<Uplink, ChooseUplinkError> {
    let named = match (wanted.flag, wanted.configured) {
        (Some(name), _) => Some((name, FoundBy::Flag)),
        (None, Some((name, entry))) => Some((name, FoundBy::Config { entry })),
        (None, None) => None,
    };
    let (interface, found_by) = match named {
        Some((name, found_by)) => match interfaces.iter().find(|i| i.name == name) {
            Some(i) => (i, found_by),
            None => {
                return Err(ChooseUplinkError::Missing {
                    name: name.to_string(),
                    found_by,
                });
            }
        },
        None => wanted
            .internal_ips
            .iter()
            .find_map(|ip| {
                interfaces
                    .iter()
                    .find(|i| i.ipv4.contains(ip))
                    .map(|i| (i, FoundBy::InternalIp(*ip)))
            })
            .or_else(|| {
                let index = default_route?;
                interfaces
                    .iter()
                    .find(|i| i.index == index)
                    .map(|i| (i, FoundBy::DefaultRoute))
            })
            .ok_or_else(|| ChooseUplinkError::NotFound {
                internal_ips: wanted.internal_ips.clone(),
            })?,
    };
    if let Some(why) = unsupported(interface.kind.as_deref(), &interface.name) {
        return Err(ChooseUplinkError::Unsupported {
            name: interface.name.clone(),
            found_by,
            kind: interface.kind.clone().unwrap_or_else(|| "loopback".into()),
            why,
        });
    }
    Ok(Uplink {
        name: interface.name.clone(),
        found_by,
    })
}

/// [`choose`] over the interfaces and IPv4 default route of this network namespace.
pub fn find(wanted: &Wanted<'_>) -> Result<Uplink, ChooseUplinkError> {
    let kernel = |e: NetdevError| ChooseUplinkError::Kernel(e.to_string());
    let nl = Netlink::open().map_err(kernel)?;
    let addresses = nl.all_addresses().map_err(kernel)?;
    let interfaces: Vec<Interface> = nl
        .links()
        .map_err(kernel)?
        .into_iter()
        .map(|link| Interface {
            ipv4: addresses
                .iter()
                .filter(|(index, _)| *index == link.index)
                .filter_map(|(_, a)| match a.net {
                    IpNet::V4(v4) => Some(v4.addr()),
                    IpNet::V6(_) => None,
                })
                .collect(),
            index: link.index,
            name: link.name,
            kind: link.kind,
        })
        .collect();
    let default_route = nl
        .routes(false)
        .map_err(kernel)?
        .into_iter()
        .find(|r| r.dst.prefix_len() == 0)
        .and_then(|r| r.oif);
    choose(wanted, &interfaces, default_route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(index: u32, name: &str, kind: Option<&str>, ipv4: &[[u8; 4]]) -> Interface {
        Interface {
            index,
            name: name.into(),
            kind: kind.map(str::to_string),
            ipv4: ipv4.iter().map(|&o| Ipv4Addr::from(o)).collect(),
        }
    }

    fn node() -> Vec<Interface> {
        vec![
            iface(1, "lo", None, &[[127, 0, 0, 1]]),
            iface(2, "eth0", None, &[[10, 0, 0, 5]]),
            iface(3, "eth1", None, &[[192, 168, 7, 5]]),
            iface(4, "bond0", Some("bond"), &[[172, 16, 0, 5]]),
            iface(5, "eth0.100", Some("vlan"), &[[172, 17, 0, 5]]),
            iface(6, "br0", Some("bridge"), &[[172, 18, 0, 5]]),
        ]
    }

    fn internal(ip: [u8; 4]) -> Wanted<'static> {
        Wanted {
            internal_ips: vec![Ipv4Addr::from(ip)],
            ..Wanted::default()
        }
    }

    #[test]
    fn the_interface_holding_the_internal_ip_is_the_uplink() {
        let found = choose(&internal([192, 168, 7, 5]), &node(), Some(2)).unwrap();
        assert_eq!(
            found,
            Uplink {
                name: "eth1".into(),
                found_by: FoundBy::InternalIp(Ipv4Addr::new(192, 168, 7, 5)),
            }
        );
        assert_eq!(
            found.found_by.to_string(),
            "holds the Node's InternalIP 192.168.7.5"
        );
    }

    #[test]
    fn without_a_holder_the_default_route_decides() {
        let found = choose(&internal([198, 51, 100, 1]), &node(), Some(2)).unwrap();
        assert_eq!(
            (found.name.as_str(), found.found_by),
            ("eth0", FoundBy::DefaultRoute)
        );
        let none = choose(&internal([198, 51, 100, 1]), &node(), None).unwrap_err();
        assert_eq!(
            none.to_string(),
            "no uplink: no interface holds the Node's InternalIP (198.51.100.1) and there is \
             no IPv4 default route; name it with --uplink or `uplink:` in kxdp.yaml"
        );
    }

    #[test]
    fn the_flag_then_the_config_win_over_finding() {
        let mut wanted = internal([10, 0, 0, 5]);
        wanted.configured = Some(("eth1", Some(2)));
        let found = choose(&wanted, &node(), None).unwrap();
        assert_eq!(
            (found.name.as_str(), found.found_by.to_string()),
            ("eth1", "kxdp.yaml nodes[2]".to_string())
        );
        wanted.flag = Some("eth0");
        assert_eq!(
            choose(&wanted, &node(), None).unwrap().found_by,
            FoundBy::Flag
        );
        wanted.flag = Some("eth9");
        assert_eq!(
            choose(&wanted, &node(), None).unwrap_err().to_string(),
            "uplink eth9 (--uplink) does not exist in this network namespace"
        );
    }

    #[test]
    fn bonds_vlans_bridges_and_loopback_are_refused_with_the_reason() {
        for (ip, kind) in [
            ([172, 16, 0, 5], "bond"),
            ([172, 17, 0, 5], "vlan"),
            ([172, 18, 0, 5], "bridge"),
            ([127, 0, 0, 1], "loopback"),
        ] {
            let err = choose(&internal(ip), &node(), None).unwrap_err();
            assert!(
                matches!(&err, ChooseUplinkError::Unsupported { kind: k, .. } if k == kind),
                "{err}"
            );
            assert!(
                err.to_string().contains(&format!("is a {kind} device")),
                "{err}"
            );
        }
        // A veth (labs) and a NIC are fine.
        assert_eq!(unsupported(Some("veth"), "up0"), None);
        assert_eq!(unsupported(None, "ens1f0"), None);
        assert!(unsupported(Some("wireguard"), "wg0").is_some());
    }
}
