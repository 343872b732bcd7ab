//! Service backend selection.
//!
//! Today: a deterministic pick by flow hash over the sorted backend list, so every node
//! chooses the same backend for the same flow. The Services work replaces the modulo
//! with a per-port Maglev table (same inputs, same signature).

pub mod maglev;
pub mod murmur3;

use crate::tables::{Backend, ServicePort};

/// The backend for a new flow with hash `flow_hash`, or `None` when the port has none.
pub fn pick_backend(service: &ServicePort, flow_hash: u32) -> Option<Backend> {
    let n = service.backends.len();
    if n == 0 {
        return None;
    }
    service.backends.get(flow_hash as usize % n).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::IpKey;

    #[test]
    fn pick_is_deterministic_and_spreads() {
        let svc = ServicePort {
            name: "demo/web:80".into(),
            backends: (1..=4)
                .map(|i| Backend {
                    ip: IpKey::v4([10, 244, 1, i]),
                    port: 8080,
                })
                .collect(),
        };
        let mut counts = [0u32; 4];
        for h in 0..4000u32 {
            let b = pick_backend(&svc, h.wrapping_mul(2654435761)).unwrap();
            assert_eq!(Some(b), pick_backend(&svc, h.wrapping_mul(2654435761)));
            counts[(b.ip.0[15] - 1) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        let empty = ServicePort {
            name: "demo/none:80".into(),
            backends: vec![],
        };
        assert_eq!(pick_backend(&empty, 7), None);
    }
}
