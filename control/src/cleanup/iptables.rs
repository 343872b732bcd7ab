//! Chains left in iptables (legacy or nft-backed, whichever `iptables-save` here is) by
//! kube-proxy (`KUBE-*`) and Flannel (`FLANNEL-*`), with every rule elsewhere that jumps
//! to them: what `kube-proxy --cleanup` does, through iptables-save and iptables-restore
//! as kube-proxy itself does. kubelet's own chains (`KUBE-FIREWALL`,
//! `KUBE-KUBELET-CANARY`, `KUBE-MARK-DROP`) stay: kubelet keeps running and owns them.
//!
//! The parsing and the restore script are pure functions of iptables-save's text.

use super::tool::{Ran, run};
use super::{CleanupError, CleanupReport};

/// kubelet's chains: the `KUBE-` prefix, not kube-proxy's.
const KUBELET_CHAINS: [&str; 3] = ["KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-MARK-DROP"];

/// Which chains go.
#[derive(Debug, Clone, Copy)]
pub struct Doomed {
    pub kube_proxy: bool,
    pub flannel: bool,
}

impl Doomed {
    pub fn contains(&self, chain: &str) -> bool {
        (self.kube_proxy && chain.starts_with("KUBE-") && !KUBELET_CHAINS.contains(&chain))
            || (self.flannel && chain.starts_with("FLANNEL-"))
    }
}

/// Splits a rule line as iptables-save quotes it (a comment in double quotes, with `\"`
/// inside).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The chain a rule jumps or goes to, if any.
fn target(words: &[String]) -> Option<&str> {
    words
        .windows(2)
        .find(|w| matches!(w[0].as_str(), "-j" | "--jump" | "-g" | "--goto"))
        .map(|w| w[1].as_str())
}

/// What one table's cleanup is.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TablePlan {
    /// Rules in chains that stay which jump to a doomed chain, as iptables-save printed
    /// them (`-A CHAIN ...`).
    pub jumps: Vec<String>,
    /// The doomed chains.
    pub chains: Vec<String>,
}

impl TablePlan {
    pub fn is_empty(&self) -> bool {
        self.jumps.is_empty() && self.chains.is_empty()
    }

    /// The iptables-restore input (to be run with --noflush): the jumps deleted, each
    /// doomed chain flushed (re-declaring a chain empties it) and then deleted.
    pub fn script(&self, table: &str) -> String {
        let mut s = format!("*{table}\n");
        for chain in &self.chains {
            s.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in &self.jumps {
            // "-A CHAIN spec" -> "-D CHAIN spec": the same text names the same rule.
            s.push_str(&format!("-D{}\n", &rule[2..]));
        }
        for chain in &self.chains {
            s.push_str(&format!("-X {chain}\n"));
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// Plans one table's cleanup from its `iptables-save -t TABLE` text.
pub fn plan(save: &str, doomed: Doomed) -> TablePlan {
    let mut plan = TablePlan::default();
    for line in save.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if doomed.contains(name) {
                plan.chains.push(name.to_string());
            }
        } else if line.starts_with("-A ") {
            let w = words(line);
            let (Some(chain), Some(to)) = (w.get(1), target(&w)) else {
                continue;
            };
            if !doomed.contains(chain) && doomed.contains(to) {
                plan.jumps.push(line.to_string());
            }
        }
    }
    plan
}

/// The tables kube-proxy and Flannel write to.
const TABLES: [&str; 2] = ["nat", "filter"];

/// Cleans both families (iptables and ip6tables).
pub(super) fn clean(doomed: Doomed, report: &mut CleanupReport) {
    for (save, restore) in [
        ("iptables-save", "iptables-restore"),
        ("ip6tables-save", "ip6tables-restore"),
    ] {
        let r = clean_family(save, restore, doomed, report);
        report.step(r);
    }
}

fn clean_family(
    save: &str,
    restore: &str,
    doomed: Doomed,
    report: &mut CleanupReport,
) -> Result<(), CleanupError> {
    for table in TABLES {
        let text = match run(save, &["-t", table], None)? {
            Ran::Ok(text) => text,
            Ran::Missing => {
                report.note(format!("{save} is not installed: skipped its chains"));
                return Ok(());
            }
        };
        let plan = plan(&text, doomed);
        if plan.is_empty() {
            continue;
        }
        match run(restore, &["--noflush"], Some(&plan.script(table)))? {
            Ran::Ok(_) => {
                let family = save.trim_end_matches("-save");
                for rule in &plan.jumps {
                    report.removed(format!("{family} {table} rule {rule}"));
                }
                for chain in &plan.chains {
                    report.removed(format!("{family} {table} chain {chain}"));
                }
            }
            Ran::Missing => {
                report.note(format!("{restore} is not installed: skipped its chains"));
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAT: &str = r#"# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
:KUBE-MARK-DROP - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABC - [0:0]
:MINE - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A POSTROUTING -m comment --comment "say \"-j KUBE-X\"" -j MINE
-A MINE -j KUBE-MARK-DROP
-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-ABC
COMMIT
"#;

    #[test]
    fn plans_kube_proxy_chains_and_the_jumps_to_them() {
        let p = plan(
            NAT,
            Doomed {
                kube_proxy: true,
                flannel: false,
            },
        );
        assert_eq!(
            p.chains,
            ["KUBE-POSTROUTING", "KUBE-SERVICES", "KUBE-SVC-ABC"]
        );
        assert_eq!(
            p.jumps,
            [
                r#"-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#,
                r#"-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#,
                r#"-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING"#,
            ]
        );
        let script = p.script("nat");
        assert!(script.starts_with("*nat\n:KUBE-POSTROUTING - [0:0]\n"));
        assert!(script.contains(
            "\n-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
        ));
        assert!(script.ends_with("-X KUBE-SVC-ABC\nCOMMIT\n"));
    }

    #[test]
    fn plans_flannel_chains_alone() {
        let p = plan(
            NAT,
            Doomed {
                kube_proxy: false,
                flannel: true,
            },
        );
        assert_eq!(p.chains, ["FLANNEL-POSTRTG"]);
        assert_eq!(p.jumps.len(), 1);
    }

    #[test]
    fn nothing_to_do_on_a_clean_table() {
        let clean = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n";
        let both = Doomed {
            kube_proxy: true,
            flannel: true,
        };
        assert!(plan(clean, both).is_empty());
        assert!(plan("", both).is_empty());
    }

    #[test]
    fn quoted_words() {
        assert_eq!(
            words(r#"-A X -m comment --comment "a \"b\" c" -j Y"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "Y"
            ]
        );
    }
}
