//! Writes the synthetic scale cluster (`bench::scale_cluster::generate`, the `scale` bin's
//! defaults: 10000 Services with 10 endpoints, 5000 pods, 1000 policies, 50 nodes) as an
//! agent state directory: cluster.yaml and a kxdp.yaml with `maglev.tableSize: auto`. For
//! measuring a live agent at that size (`kxdp agent --node node-000 --state DIR`), e.g. the
//! DaemonSet's memory request and limit.
//!
//! cargo run -p bench --example scale_state -- DIR [SERVICES]

use std::path::PathBuf;

use bench::scale_cluster::{ScaleSpec, generate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: scale_state DIR [SERVICES]")?);
    let services = match args.next() {
        Some(n) => n.parse()?,
        None => ScaleSpec::default().services,
    };
    let scale = generate(&ScaleSpec {
        services,
        ..ScaleSpec::default()
    })?;
    let c = &scale.cluster;
    let mut docs: Vec<String> = Vec::new();
    for o in &c.nodes {
        docs.push(serde_yaml::to_string(o)?);
    }
    for o in &c.namespaces {
        docs.push(serde_yaml::to_string(o)?);
    }
    for o in &c.pods {
        docs.push(serde_yaml::to_string(o)?);
    }
    for o in &c.services {
        docs.push(serde_yaml::to_string(o)?);
    }
    for o in &c.endpoint_slices {
        docs.push(serde_yaml::to_string(o)?);
    }
    for o in &c.network_policies {
        docs.push(serde_yaml::to_string(o)?);
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cluster.yaml"), docs.join("---\n"))?;
    std::fs::write(
        dir.join("kxdp.yaml"),
        "clusterCIDR: 10.128.0.0/9\nserviceCIDR: 10.96.0.0/12\nmaglev:\n  tableSize: auto\n",
    )?;
    println!(
        "{}: {} Services ({} ports), {} pods, node under test {}",
        dir.display(),
        c.services.len(),
        scale.service_ports,
        c.pods.len(),
        scale.node_under_test
    );
    Ok(())
}
