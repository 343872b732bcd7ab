//! Whole nftables tables: the agent's `inet kxdp`, kube-proxy's `ip kube-proxy` and
//! `ip6 kube-proxy` (its nftables mode keeps everything in those two).

use super::tool::{Ran, run};
use super::{CleanupError, CleanupReport};

/// The tables `nft list tables` prints, as (family, name).
fn parse_tables(listing: &str) -> Vec<(String, String)> {
    listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "table").then_some(())?;
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

/// Deletes each (family, name) table that exists.
pub(super) fn delete_tables(
    tables: &[(&str, &str)],
    report: &mut CleanupReport,
) -> Result<(), CleanupError> {
    let listing = match run("nft", &["list", "tables"], None)? {
        Ran::Ok(listing) => listing,
        Ran::Missing => {
            let names: Vec<String> = tables.iter().map(|(f, n)| format!("{f} {n}")).collect();
            report.note(format!(
                "nft is not installed: skipped the nftables tables {}",
                names.join(", ")
            ));
            return Ok(());
        }
    };
    let present = parse_tables(&listing);
    for (family, name) in tables {
        if !present.iter().any(|(f, n)| f == family && n == name) {
            continue;
        }
        let script = format!("delete table {family} {name}\n");
        if let Ran::Ok(_) = run("nft", &["-f", "-"], Some(&script))? {
            report.removed(format!("nftables table {family} {name}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_table_list() {
        let listing = "table inet kxdp\ntable ip kube-proxy\ntable ip6 kube-proxy\n\ngarbage\n";
        assert_eq!(
            parse_tables(listing),
            [
                ("inet".to_string(), "kxdp".to_string()),
                ("ip".to_string(), "kube-proxy".to_string()),
                ("ip6".to_string(), "kube-proxy".to_string()),
            ]
        );
    }
}
