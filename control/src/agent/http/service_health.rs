//! One health-check server per Service with a `healthCheckNodePort` (LoadBalancer,
//! `externalTrafficPolicy: Local`), as kube-proxy's `ServiceHealthServer`: on the node's
//! addresses at that port, any path, 200 while the node has a ready local endpoint (and the
//! proxy is healthy), else 503, with kube-proxy's body byte for byte. Load balancers use it
//! to send a Service's traffic only to nodes that can serve it locally.
//!
//! Synced with every table generation: a Service gone or its port changed is closed, a new
//! one opened; the endpoint counts are updated in place (no reopening). A port that cannot
//! be bound (taken by another process) is logged and retried at the next sync.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use model::translate::HealthCheckService;

use super::super::health::ProxyHealth;
use super::{Answer, Handler, HttpServer, Listening, Reply};

/// (namespace, name)
type ServiceName = (String, String);

struct Instance {
    port: u16,
    addresses: Vec<IpAddr>,
    local_endpoints: Arc<AtomicUsize>,
    /// Dropped (closed) with the instance.
    _listeners: Vec<Listening>,
}

/// See the module documentation.
pub struct ServiceHealthChecks {
    health: Arc<ProxyHealth>,
    open: BTreeMap<ServiceName, Instance>,
}

impl std::fmt::Debug for ServiceHealthChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHealthChecks")
            .field("open", &self.open.keys().collect::<Vec<_>>())
            .finish()
    }
}

struct ServiceHandler {
    namespace: String,
    name: String,
    local_endpoints: Arc<AtomicUsize>,
    health: Arc<ProxyHealth>,
}

impl Handler for ServiceHandler {
    fn answer(&self, _method: &hyper::Method, _path: &str) -> Answer {
        let count = self.local_endpoints.load(Ordering::Acquire);
        let healthy = self.health.read().healthy;
        Answer::Now(service_reply(&self.namespace, &self.name, count, healthy))
    }
}

/// kube-proxy's answer (`pkg/proxy/healthcheck/service_health.go`): its body is a dedented
/// template, tab-indented, no trailing newline.
pub fn service_reply(namespace: &str, name: &str, local_endpoints: usize, healthy: bool) -> Reply {
    let status = if local_endpoints != 0 && healthy {
        200
    } else {
        503
    };
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\
         \"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
        quote(namespace),
        quote(name)
    );
    Reply::json(status, body)
}

impl ServiceHealthChecks {
    pub fn new(health: Arc<ProxyHealth>) -> ServiceHealthChecks {
        ServiceHealthChecks {
            health,
            open: BTreeMap::new(),
        }
    }

    /// Serves exactly `wanted`, on `addresses` (the node's own).
    pub fn sync(
        &mut self,
        server: &HttpServer,
        wanted: &[HealthCheckService],
        addresses: &[IpAddr],
    ) {
        let by_name: BTreeMap<ServiceName, &HealthCheckService> = wanted
            .iter()
            .map(|w| ((w.namespace.clone(), w.name.clone()), w))
            .collect();
        self.open.retain(|(ns, name), instance| {
            let keep = by_name
                .get(&(ns.clone(), name.clone()))
                .is_some_and(|w| w.port == instance.port && instance.addresses == addresses);
            if !keep {
                tracing::info!(service = %format!("{ns}/{name}"), port = instance.port, "health check closed");
            }
            keep
        });
        for (key, want) in by_name {
            if let Some(instance) = self.open.get(&key) {
                instance
                    .local_endpoints
                    .store(want.local_endpoints, Ordering::Release);
                continue;
            }
            match self.open_one(server, want, addresses) {
                Ok(instance) => {
                    tracing::info!(
                        service = %format!("{}/{}", want.namespace, want.name),
                        port = want.port,
                        addresses = ?addresses,
                        local_endpoints = want.local_endpoints,
                        "health check opened"
                    );
                    self.open.insert(key, instance);
                }
                // kube-proxy's FailedToStartServiceHealthcheck: retried at the next sync.
                Err(e) => tracing::error!(
                    service = %format!("{}/{}", want.namespace, want.name),
                    "health check port {}: {e}; retried with the next table generation",
                    want.port
                ),
            }
        }
    }

    fn open_one(
        &self,
        server: &HttpServer,
        want: &HealthCheckService,
        addresses: &[IpAddr],
    ) -> Result<Instance, super::super::AgentError> {
        let local_endpoints = Arc::new(AtomicUsize::new(want.local_endpoints));
        let handler: Arc<dyn Handler> = Arc::new(ServiceHandler {
            namespace: want.namespace.clone(),
            name: want.name.clone(),
            local_endpoints: local_endpoints.clone(),
            health: self.health.clone(),
        });
        // All or nothing, as kube-proxy: a partial set is closed (dropped) on error.
        let listeners = addresses
            .iter()
            .map(|&ip| {
                server.serve(
                    SocketAddr::new(ip, want.port),
                    "service health check",
                    handler.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Instance {
            port: want.port,
            addresses: addresses.to_vec(),
            local_endpoints,
            _listeners: listeners,
        })
    }

    /// The open checks, one line each, for the status.
    pub fn describe(&self) -> Vec<String> {
        self.open
            .iter()
            .map(|((ns, name), i)| {
                format!(
                    "{ns}/{name} port {}: {} local endpoints",
                    i.port,
                    i.local_endpoints.load(Ordering::Acquire)
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact bytes kube-proxy v1.34 writes (its dedented template).
    #[test]
    fn the_body_is_kube_proxys() {
        let reply = service_reply("demo", "web", 2, true);
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"demo\",\n\t\t\"name\": \"web\"\n\t},\n\t\
             \"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        assert_eq!(service_reply("demo", "web", 0, true).status, 503);
        assert_eq!(service_reply("demo", "web", 3, false).status, 503);
        assert!(
            service_reply("demo", "web", 3, false)
                .body
                .contains("\"serviceProxyHealthy\": false")
        );
    }
}
