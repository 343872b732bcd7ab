//! Drop counters: one plain array per worker (no shared atomics on the packet path); the
//! control side sums workers' copies. Policy drops are also counted per direction, so
//! "why was this dropped" has an answer in numbers too.

use crate::policy::PolicyDirection;
use crate::verdict::{DropReason, Verdict};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters {
    by_reason: Vec<u64>,
    policy_ingress: u64,
    policy_egress: u64,
}

impl DropCounters {
    /// Counts one verdict; `policy_direction` is what the observer reported for it.
    pub fn record(&mut self, verdict: Verdict, policy_direction: Option<PolicyDirection>) {
        let Verdict::Drop(reason) = verdict else {
            return;
        };
        if self.by_reason.is_empty() {
            self.by_reason = vec![0; DropReason::ALL.len()];
        }
        if let Some(n) = self.by_reason.get_mut(reason as usize) {
            *n += 1;
        }
        match (reason, policy_direction) {
            (DropReason::PolicyDenied, Some(PolicyDirection::Ingress)) => self.policy_ingress += 1,
            (DropReason::PolicyDenied, Some(PolicyDirection::Egress)) => self.policy_egress += 1,
            _ => {}
        }
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.by_reason.get(reason as usize).copied().unwrap_or(0)
    }

    /// Policy drops decided on `direction`.
    pub fn policy(&self, direction: PolicyDirection) -> u64 {
        match direction {
            PolicyDirection::Ingress => self.policy_ingress,
            PolicyDirection::Egress => self.policy_egress,
        }
    }

    /// Every reason counted at least once, in declaration order.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n > 0)
    }

    /// Adds another worker's counters to these.
    pub fn add(&mut self, other: &DropCounters) {
        for (r, n) in other.nonzero() {
            if self.by_reason.is_empty() {
                self.by_reason = vec![0; DropReason::ALL.len()];
            }
            if let Some(m) = self.by_reason.get_mut(r as usize) {
                *m += n;
            }
        }
        self.policy_ingress += other.policy_ingress;
        self.policy_egress += other.policy_egress;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reasons_and_policy_directions() {
        let mut c = DropCounters::default();
        c.record(Verdict::Pass, None);
        c.record(Verdict::Drop(DropReason::NoRoute), None);
        c.record(
            Verdict::Drop(DropReason::PolicyDenied),
            Some(PolicyDirection::Egress),
        );
        c.record(
            Verdict::Drop(DropReason::PolicyDenied),
            Some(PolicyDirection::Ingress),
        );
        c.record(
            Verdict::Drop(DropReason::PolicyDenied),
            Some(PolicyDirection::Ingress),
        );
        assert_eq!(c.get(DropReason::PolicyDenied), 3);
        assert_eq!(c.policy(PolicyDirection::Ingress), 2);
        assert_eq!(c.policy(PolicyDirection::Egress), 1);
        let mut sum = DropCounters::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(sum.get(DropReason::NoRoute), 2);
        assert_eq!(sum.nonzero().count(), 2);
    }
}
