//! kxdp-cni's side of the agent's local API: the calls it makes and how their failures map
//! to CNI error codes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_api::{self, AgentStatus, ApiError, Request};
use ipnet::IpNet;

use super::spec::{CniError, MAX_MTU, MAX_QUEUES, MIN_MTU, NetConf, code};

/// Status and check answers are immediate; opening a port attaches XDP and binds one socket
/// per worker, which takes longer on a busy node. Every call is bounded by these (connect
/// included: agent_api never blocks in connect), so kxdp-cni never hangs on an agent:
/// absent, refusing connections, stopping or silent, the runtime hears 11 (try again later).
const QUICK: Duration = Duration::from_secs(5);
const ADD_PORT: Duration = Duration::from_secs(20);

/// The agent socket named by the configuration.
#[derive(Debug, Clone)]
pub struct Agent {
    socket: PathBuf,
}

/// What `status` tells ADD and CHECK, checked for sense.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub node: String,
    pub workers: u32,
    pub pod_mtu: u32,
    pub gateway: Ipv4Addr,
    pub pod_cidrs: Vec<IpNet>,
}

impl Agent {
    pub fn from_conf(conf: &NetConf) -> Agent {
        Agent {
            socket: conf
                .agent_socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(agent_api::DEFAULT_SOCKET)),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The node facts; an absent or silent agent is "try again later" (11).
    pub fn status(&self) -> Result<NodeFacts, CniError> {
        let status = self.call(&Request::Status, QUICK)?;
        let status = status.ok_or_else(|| {
            protocol(format!(
                "{}: status answer without a status",
                self.socket.display()
            ))
        })?;
        facts(&status).map_err(|why| protocol(format!("{}: {why}", self.socket.display())))
    }

    pub fn add_port(
        &self,
        port: &str,
        ifname: &str,
        container_id: &str,
        ips: Vec<IpAddr>,
    ) -> Result<(), CniError> {
        let req = Request::AddPort {
            port: port.to_string(),
            ifname: ifname.to_string(),
            container_id: container_id.to_string(),
            ips,
        };
        self.call(&req, ADD_PORT).map(drop)
    }

    pub fn del_port(&self, port: &str, container_id: &str) -> Result<(), CniError> {
        let req = Request::DelPort {
            port: port.to_string(),
            container_id: container_id.to_string(),
        };
        self.call(&req, QUICK).map(drop)
    }

    pub fn check_port(&self, port: &str, container_id: &str) -> Result<(), CniError> {
        let req = Request::CheckPort {
            port: port.to_string(),
            container_id: container_id.to_string(),
        };
        self.call(&req, QUICK).map(drop).map_err(|e| {
            if e.code == code::AGENT_REFUSED {
                CniError::new(
                    code::CHECK_MISMATCH,
                    "the agent does not serve the pod's port",
                    e.details,
                )
            } else {
                e
            }
        })
    }

    fn call(&self, req: &Request, timeout: Duration) -> Result<Option<AgentStatus>, CniError> {
        let op = op_name(req);
        let response =
            agent_api::call(&self.socket, req, timeout).map_err(|e| self.api_error(op, e))?;
        response.into_result().map_err(|refused| {
            if refused.unavailable {
                // Stopping or restarting: the runtime retries on 11, and the next agent
                // will serve the request.
                CniError::new(
                    code::TRY_AGAIN_LATER,
                    "the kxdp agent cannot serve requests now",
                    format!("{op} via {}: {refused}", self.socket.display()),
                )
            } else {
                CniError::new(
                    code::AGENT_REFUSED,
                    format!("the kxdp agent refused {op}"),
                    refused.to_string(),
                )
            }
        })
    }

    fn api_error(&self, op: &str, e: ApiError) -> CniError {
        if e.is_unreachable() {
            CniError::new(
                code::TRY_AGAIN_LATER,
                "the kxdp agent is not answering",
                format!("{op} via {}: {e}", self.socket.display()),
            )
        } else {
            protocol(format!("{op} via {}: {e}", self.socket.display()))
        }
    }
}

fn op_name(req: &Request) -> &'static str {
    match req {
        Request::AddPort { .. } => "add_port",
        Request::DelPort { .. } => "del_port",
        Request::CheckPort { .. } => "check_port",
        Request::Status => "status",
        Request::Stats => "stats",
    }
}

fn protocol(details: String) -> CniError {
    CniError::new(
        code::AGENT_PROTOCOL,
        "the kxdp agent's answer makes no sense",
        details,
    )
}

/// What in an agent's status answer kxdp-cni cannot use; the Display names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum FactsError {
    #[error("workers {0} is outside 1..={MAX_QUEUES}")]
    Workers(u32),
    #[error("pod_mtu {0} is outside {MIN_MTU}..={MAX_MTU}")]
    PodMtu(u32),
    #[error("gateway {text:?}: {source}")]
    Gateway {
        text: String,
        source: std::net::AddrParseError,
    },
    #[error("pod_cidrs: {text:?}: {source}")]
    PodCidr {
        text: String,
        source: ipnet::AddrParseError,
    },
}

fn facts(status: &AgentStatus) -> Result<NodeFacts, FactsError> {
    if !(1..=MAX_QUEUES).contains(&status.workers) {
        return Err(FactsError::Workers(status.workers));
    }
    if !(MIN_MTU..=MAX_MTU).contains(&status.pod_mtu) {
        return Err(FactsError::PodMtu(status.pod_mtu));
    }
    let gateway: Ipv4Addr = status
        .gateway
        .parse()
        .map_err(|source| FactsError::Gateway {
            text: status.gateway.clone(),
            source,
        })?;
    let pod_cidrs = status
        .pod_cidrs
        .iter()
        .map(|text| {
            // The agent sends networks with their host bits clear; trunc() keeps a CIDR
            // written otherwise from reaching host-local as a range it would refuse.
            text.parse::<IpNet>()
                .map(|net| net.trunc())
                .map_err(|source| FactsError::PodCidr {
                    text: text.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NodeFacts {
        node: status.node.clone(),
        workers: status.workers,
        pod_mtu: status.pod_mtu,
        gateway,
        pod_cidrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> AgentStatus {
        AgentStatus {
            node: "n".into(),
            generation: 1,
            workers: 2,
            ports: vec![],
            table_ports: vec![],
            gateway: "10.244.1.1".into(),
            pod_cidrs: vec!["10.244.1.0/24".into()],
            pod_mtu: 1450,
            uplink: "eth0".into(),
            uplink_found_by: "--uplink".into(),
            state_source: "state directory /s".into(),
            health_checks: Vec::new(),
        }
    }

    #[test]
    fn facts_are_checked() {
        let f = facts(&status()).unwrap();
        assert_eq!((f.workers, f.pod_mtu), (2, 1450));
        assert_eq!(f.gateway, Ipv4Addr::new(10, 244, 1, 1));
        assert!(
            facts(&AgentStatus {
                workers: 0,
                ..status()
            })
            .is_err()
        );
        assert!(
            facts(&AgentStatus {
                pod_mtu: 0,
                ..status()
            })
            .is_err()
        );
        assert!(
            facts(&AgentStatus {
                gateway: "x".into(),
                ..status()
            })
            .is_err()
        );
        assert!(
            facts(&AgentStatus {
                pod_cidrs: vec!["x".into()],
                ..status()
            })
            .is_err()
        );
    }

    #[test]
    fn absent_agent_is_try_again_later() {
        let agent = Agent {
            socket: std::env::temp_dir().join(format!("kcni-absent-{}.sock", std::process::id())),
        };
        assert_eq!(agent.status().unwrap_err().code, code::TRY_AGAIN_LATER);
    }
}
