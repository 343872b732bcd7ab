//! The Service step of the walk: which translation a packet gets.
//!
//! A packet of a tracked flow takes its entry's translation (the entry holds the tuple as
//! the client sent it and the tuple its reply will carry, as Linux conntrack does), after
//! checking, once per table generation, that its backend still exists; a new flow to a
//! Service frontend gets a backend (session affinity, else Maglev over the endpoints its
//! traffic policy allows) and, where replies would otherwise bypass us, a source NAT to
//! the node's gateway; ICMP errors about tracked flows are translated with them.

use crate::addr::{IpKey, MacAddr};
use crate::conntrack::{Direction, FlowEntry, FlowId, FlowKey, InsertError, NewFlow};
use crate::hash;
use crate::observer::Observer;
use crate::tables::{Frontend, FrontendKind, ServiceKey, ServicePort, proto};
use crate::verdict::{DropReason, Verdict};

use super::enforce::Judged;
use super::icmp_nat::{self, Quoted};
use super::packet::IpHeaders;
use super::{Origin, Walk, gateway_address};

/// `FlowEntry::flags`: the flow came in on the uplink, so replies go back out of it.
pub(super) const FLOW_FROM_UPLINK: u8 = 1;
/// `FlowEntry::flags`: the source was translated to the gateway.
pub(super) const FLOW_SNAT: u8 = 2;
/// `FlowEntry::service` of a flow that is no Service's.
const NO_SERVICE: u32 = u32::MAX;

/// SNAT source ports: the client's own port first, then this range (the same ephemeral
/// range Linux uses by default, so SNATed flows look like locally originated ones).
const SNAT_PORT_MIN: u16 = 32768;
const SNAT_PORT_SPAN: u32 = 60999 - 32768 + 1;
/// How many ports to try before giving up on a SNAT tuple.
const SNAT_ATTEMPTS: u32 = 64;

/// An address and port.
pub(super) type Endpoint = (IpKey, u16);

/// What the Service step decided; applied only once the packet is known to be forwarded.
#[derive(Debug, Clone, Copy)]
pub(super) enum Translation {
    /// Not Service traffic: route as addressed.
    None,
    /// A packet of a tracked flow.
    Flow {
        id: FlowId,
        dir: Direction,
        src: Option<Endpoint>,
        dst: Option<Endpoint>,
        /// Replies of flows that came in on the uplink leave by it, to this MAC.
        uplink_return: Option<MacAddr>,
    },
    /// The first packet of a new Service flow.
    New {
        flow: NewFlow,
        src: Option<Endpoint>,
        dst: Option<Endpoint>,
    },
    /// An ICMP error about a tracked flow: quote and addresses follow the flow's NAT.
    Related {
        quoted: Quoted,
        quote: FlowKey,
        outer_src: IpKey,
        outer_dst: IpKey,
        uplink_return: Option<MacAddr>,
    },
}

impl Translation {
    /// The destination after translation.
    pub(super) fn destination(&self, h: &IpHeaders) -> IpKey {
        match self {
            Translation::Flow { dst: Some(d), .. } => d.0,
            Translation::New { dst: Some(d), .. } => d.0,
            Translation::Related { outer_dst, .. } => *outer_dst,
            _ => h.dst,
        }
    }

    pub(super) fn is_none(&self) -> bool {
        matches!(self, Translation::None)
    }

    pub(super) fn uplink_return(&self) -> Option<MacAddr> {
        match self {
            Translation::Flow { uplink_return, .. }
            | Translation::Related { uplink_return, .. } => *uplink_return,
            _ => None,
        }
    }
}

fn flow_key(h: &IpHeaders) -> FlowKey {
    FlowKey {
        src: h.src,
        dst: h.dst,
        src_port: h.src_port,
        dst_port: h.dst_port,
        proto: h.proto,
    }
}

/// A tracked flow as policy judges it: the client as it sent, the server after DNAT, the
/// client as the server sees it.
fn judged(entry: &FlowEntry) -> Judged {
    Judged {
        src: entry.reply.dst,
        client: entry.original.src,
        dst: entry.reply.src,
        dst_port: entry.reply.src_port,
        proto: entry.original.proto,
    }
}

/// A plain (untranslated) flow's tracking entry: its reply is its reverse.
pub(super) fn plain_flow(h: &IpHeaders, in_port: u32, return_mac: [u8; 6]) -> NewFlow {
    let original = flow_key(h);
    NewFlow {
        original,
        reply: original.reversed(),
        service: NO_SERVICE,
        return_port: in_port,
        return_mac,
        flags: 0,
    }
}

/// The Service frontend a flow was made for: where its client sent it.
fn entry_frontend(entry: &FlowEntry) -> ServiceKey {
    ServiceKey {
        vip: entry.original.dst,
        port: entry.original.dst_port,
        proto: entry.original.proto,
    }
}

fn changed(from: Endpoint, to: Endpoint) -> Option<Endpoint> {
    (from != to).then_some(to)
}

impl<O: Observer> Walk<'_, '_, O> {
    /// Decides the translation of a packet, or answers it (reject, RST) / drops it.
    pub(super) fn translate(
        &mut self,
        frame: &mut crate::frame::Frame<'_>,
        h: &IpHeaders,
        origin: Origin,
    ) -> Result<Translation, Verdict> {
        if h.is_icmp_error() {
            return Ok(self.related(frame.data(), h));
        }
        if !h.has_ports() {
            return Ok(Translation::None);
        }
        let key = flow_key(h);
        // With the TCP flags, a SYN reusing the ports of a closed connection starts afresh.
        if let Some((id, dir)) = self.flows.lookup_with_flags(&key, h.tcp_flags, self.now) {
            match self.tracked(frame, h, origin, id, dir) {
                Ok(Some(tr)) => return Ok(tr),
                // The flow's endpoint is gone and this packet may start afresh.
                Ok(None) => {}
                Err(verdict) => return Err(verdict),
            }
        }
        if matches!(origin, Origin::Overlay) {
            // The client's node translated this flow already.
            return Ok(Translation::None);
        }
        let service_key = ServiceKey {
            vip: h.dst,
            port: h.dst_port,
            proto: h.proto,
        };
        let Some((fe, port)) = self.tables.frontend(&service_key) else {
            return Ok(Translation::None);
        };
        self.obs.service(port);
        // kube-proxy's firewall check: new flows only (established ones were let in).
        if fe.kind == FrontendKind::LoadBalancer && !port.lb_source_allowed(h.dst, h.src) {
            return Err(Verdict::Drop(DropReason::LbSourceRange));
        }
        if h.fragment {
            // A first fragment could be translated, its followers could not: drop all alike.
            return Err(Verdict::Drop(DropReason::Fragment));
        }
        self.new_flow(frame.data(), h, origin, fe, port)
            .map_err(|e| match e {
                NewFlowError::Reject => self.reject(frame, h, origin),
                NewFlowError::Drop(reason) => Verdict::Drop(reason),
            })
    }

    /// The translation of a packet of a known flow. Once per table generation the flow's
    /// backend is checked against the Service's endpoints: a deleted endpoint ends the
    /// flow (TCP with a RST to the client; others start afresh at once, so UDP never
    /// sticks to a dead backend).
    fn tracked(
        &mut self,
        frame: &mut crate::frame::Frame<'_>,
        h: &IpHeaders,
        origin: Origin,
        id: FlowId,
        dir: Direction,
    ) -> Result<Option<Translation>, Verdict> {
        let generation = self.tables.generation as u32;
        let Some(entry) = self.flows.get(id).copied() else {
            return Ok(None);
        };
        if entry.policy_generation != generation {
            let live = entry.service == NO_SERVICE || self.backend_listed(&entry);
            if !live {
                self.flows.remove(id);
                self.obs.step("endpoint_deleted");
                if let Some((_, port)) = self.tables.frontend(&entry_frontend(&entry)) {
                    self.obs.service(port);
                }
                return match (dir, h.proto) {
                    (Direction::Original, proto::TCP) => Err(self.reset(frame, h, origin)),
                    (Direction::Original, _) => Ok(None),
                    (Direction::Reply, _) => Err(Verdict::Drop(DropReason::EndpointDeleted)),
                };
            }
            // Policy may have changed: the flow is judged again, as a new one would be
            // (reported like one: its Service and backend first).
            self.report_flow(&entry);
            if let Err(verdict) = self.judge(&judged(&entry)) {
                self.flows.remove(id);
                return Err(verdict);
            }
            if let Some(e) = self.flows.get_mut(id) {
                e.policy_generation = generation;
            }
        }
        if entry.policy_generation == generation {
            self.report_flow(&entry);
        }
        let here = ((h.src, h.src_port), (h.dst, h.dst_port));
        let (src, dst) = match dir {
            Direction::Original => (
                changed(here.0, (entry.reply.dst, entry.reply.dst_port)),
                changed(here.1, (entry.reply.src, entry.reply.src_port)),
            ),
            Direction::Reply => (
                changed(here.0, (entry.original.dst, entry.original.dst_port)),
                changed(here.1, (entry.original.src, entry.original.src_port)),
            ),
        };
        let uplink_return = (dir == Direction::Reply && entry.flags & FLOW_FROM_UPLINK != 0)
            .then_some(MacAddr(entry.return_mac));
        Ok(Some(Translation::Flow {
            id,
            dir,
            src,
            dst,
            uplink_return,
        }))
    }

    /// Whether a Service flow's backend is still listed by the Service it was made for.
    fn backend_listed(&self, entry: &FlowEntry) -> bool {
        self.tables
            .frontend(&entry_frontend(entry))
            .is_some_and(|(_, port)| port.lists(entry.reply.src, entry.reply.src_port))
    }

    /// Tells the observer which Service and backend a known flow belongs to. The Service
    /// lookup is only for reporting, so the hot path (`NoObserver`) skips it.
    fn report_flow(&mut self, entry: &FlowEntry) {
        if !O::RECORDS || entry.service == NO_SERVICE {
            return;
        }
        if let Some((_, port)) = self.tables.frontend(&entry_frontend(entry)) {
            self.obs.service(port);
        }
        self.obs.backend(entry.reply.src, entry.reply.src_port);
    }

    /// A new flow to a Service frontend: pick its backend and its source NAT.
    fn new_flow(
        &mut self,
        frame: &[u8],
        h: &IpHeaders,
        origin: Origin,
        fe: Frontend,
        port: &ServicePort,
    ) -> Result<Translation, NewFlowError> {
        let from_outside = matches!(origin, Origin::Uplink);
        // externalTrafficPolicy governs outside traffic to external frontends only; traffic
        // from inside the cluster to an external address short-circuits to the cluster-wide
        // endpoints, as kube-proxy does; internalTrafficPolicy covers the cluster IP, from
        // wherever it is reached.
        let external = from_outside && fe.kind.is_external();
        let local_only = if external {
            port.external_local
        } else {
            port.internal_local && fe.kind == FrontendKind::ClusterIp
        };
        if port.cluster.is_empty() {
            return Err(NewFlowError::Reject);
        }
        let set = if local_only {
            &port.local
        } else {
            &port.cluster
        };
        if set.is_empty() {
            return Err(NewFlowError::Drop(DropReason::NoLocalEndpoints));
        }
        let timeout = port.affinity_timeout_ns;
        let remembered = timeout.and_then(|t| {
            let (ip, p) = self
                .flows
                .affinity_mut()
                .lookup(h.src, port.stable_id, t, self.now)?;
            let i = port
                .backends
                .binary_search_by(|b| (b.ip, b.port).cmp(&(ip, p)))
                .ok()?;
            set.contains(i).then_some(i)
        });
        let picked = match remembered {
            Some(i) => Some(i),
            None => set.pick(hash::flow_hash(&h.five_tuple(), hash::DEFAULT_SEED)),
        };
        let Some(backend) = picked.and_then(|i| port.backends.get(i)).copied() else {
            return Err(NewFlowError::Reject);
        };
        if timeout.is_some() {
            self.flows.affinity_mut().record(
                h.src,
                port.stable_id,
                (backend.ip, backend.port),
                self.now,
            );
        }
        self.obs.backend(backend.ip, backend.port);

        // Replies must come back through us to be reverse-translated: a pod reaching itself
        // (hairpin), the host (its replies would otherwise be local to the kernel), and
        // outside clients (the backend may be on another node) get the gateway as source,
        // except under externalTrafficPolicy Local, which keeps the client address.
        let hairpin = backend.ip == h.src;
        let keeps_client_ip = external && port.external_local;
        let snat = hairpin || matches!(origin, Origin::Host) || (from_outside && !keeps_client_ip);
        let original = flow_key(h);
        let mut flags = if from_outside { FLOW_FROM_UPLINK } else { 0 };
        let (reply_dst, reply_dst_port) = if snat {
            flags |= FLOW_SNAT;
            let gateway = gateway_address(self.tables, h.family)
                .ok_or(NewFlowError::Drop(DropReason::NoRoute))?;
            let port = self.snat_port(&original, gateway, backend.ip, backend.port)?;
            (gateway, port)
        } else {
            (h.src, h.src_port)
        };
        let reply = FlowKey {
            src: backend.ip,
            dst: reply_dst,
            src_port: backend.port,
            dst_port: reply_dst_port,
            proto: h.proto,
        };
        let mut return_mac = [0u8; 6];
        if let Some(mac) = frame.get(6..12) {
            return_mac.copy_from_slice(mac);
        }
        Ok(Translation::New {
            flow: NewFlow {
                original,
                reply,
                service: fe.service.0,
                return_port: self.in_port.0,
                return_mac,
                flags,
            },
            src: changed((h.src, h.src_port), (reply_dst, reply_dst_port)),
            dst: Some((backend.ip, backend.port)),
        })
    }

    /// A source port at `source` whose reply tuple (from `backend`) no live flow uses: the
    /// client's own port when free, else a hashed walk through the ephemeral range.
    fn snat_port(
        &self,
        original: &FlowKey,
        source: IpKey,
        backend: IpKey,
        backend_port: u16,
    ) -> Result<u16, NewFlowError> {
        let start = hash::flow_hash(
            &hash::FiveTuple {
                src: original.src,
                dst: original.dst,
                src_port: original.src_port,
                dst_port: original.dst_port,
                proto: original.proto,
            },
            hash::DEFAULT_SEED,
        );
        let candidates = std::iter::once(original.src_port).chain(
            (0..SNAT_ATTEMPTS)
                .map(|i| SNAT_PORT_MIN + (start.wrapping_add(i) % SNAT_PORT_SPAN) as u16),
        );
        for p in candidates {
            let reply = FlowKey {
                src: backend,
                dst: source,
                src_port: backend_port,
                dst_port: p,
                proto: original.proto,
            };
            if !self.flows.tuple_in_use(&reply, self.now) {
                return Ok(p);
            }
        }
        Err(NewFlowError::Drop(DropReason::SnatExhausted))
    }

    /// Linux conntrack's answer to a tuple clash (nf_nat's unique-tuple search): a new flow
    /// whose reply tuple a live flow already owns keeps its addresses but leaves from
    /// another source port, so both flows' replies stay apart. It happens when a client
    /// reuses a port towards one backend both through a Service and directly (the DNATed
    /// flow's reply is exactly the direct flow's). ICMP echo has no port to move: dropped.
    pub(super) fn unclash(
        &mut self,
        flow: &mut NewFlow,
        src: &mut Option<Endpoint>,
    ) -> Result<(), Verdict> {
        if !self.flows.tuple_in_use(&flow.reply, self.now) {
            return Ok(());
        }
        if !matches!(flow.original.proto, proto::TCP | proto::UDP | proto::SCTP) {
            return Err(Verdict::Drop(DropReason::FlowConflict));
        }
        let port = self
            .snat_port(
                &flow.original,
                flow.reply.dst,
                flow.reply.src,
                flow.reply.src_port,
            )
            .map_err(|_| Verdict::Drop(DropReason::SnatExhausted))?;
        flow.reply.dst_port = port;
        self.obs.step("source_port_remapped");
        *src = changed(
            (flow.original.src, flow.original.src_port),
            (flow.reply.dst, port),
        );
        Ok(())
    }

    /// Records the new flow; a reply tuple taken meanwhile is a lost SNAT race, dropped.
    pub(super) fn commit(&mut self, flow: NewFlow, tcp_flags: u8) -> Result<(), Verdict> {
        match self.flows.insert(flow, self.now) {
            Ok(id) => {
                self.flows
                    .observe(id, Direction::Original, tcp_flags, self.now);
                if let Some(e) = self.flows.get_mut(id) {
                    e.policy_generation = self.tables.generation as u32;
                }
                Ok(())
            }
            Err(InsertError::Full) => Err(Verdict::Drop(DropReason::ConntrackFull)),
            Err(InsertError::ReplyTupleTaken) => Err(Verdict::Drop(DropReason::SnatExhausted)),
            // Only reachable if lookup missed a live tuple: counted, never guessed at.
            Err(InsertError::OriginalTupleTaken) => Err(Verdict::Drop(DropReason::FlowConflict)),
        }
    }

    /// The translation of an ICMP error quoting a packet of a tracked flow.
    fn related(&mut self, frame: &[u8], h: &IpHeaders) -> Translation {
        let Some(q) = icmp_nat::quoted(frame, h) else {
            return Translation::None;
        };
        let Some((id, dir)) = self.flows.lookup(&q.key.reversed(), self.now) else {
            return Translation::None;
        };
        let Some(entry) = self.flows.get(id).copied() else {
            return Translation::None;
        };
        // The quoted packet travelled in the other direction from the error: it becomes
        // what that packet's sender sent (an original-direction quote) or received.
        let (quote, peer) = match dir {
            Direction::Reply => (entry.original, entry.original),
            Direction::Original => (entry.reply, entry.reply),
        };
        let outer_dst = quote.src;
        // The error came from the quoted packet's destination itself: it speaks for the
        // translated address; a router on the way keeps its own.
        let outer_src = if h.src == q.key.dst { peer.dst } else { h.src };
        self.report_flow(&entry);
        self.obs.step("icmp_related");
        let uplink_return = (dir == Direction::Reply && entry.flags & FLOW_FROM_UPLINK != 0)
            .then_some(MacAddr(entry.return_mac));
        Translation::Related {
            quoted: q,
            quote,
            outer_src,
            outer_dst,
            uplink_return,
        }
    }
}

/// Run by a driver when it publishes a new table generation: removes at once every
/// non-TCP Service flow whose endpoint the new tables no longer list, so no UDP flow can
/// stick to a deleted backend, however long until its next packet (the stale-conntrack
/// blackhole kube-proxy users know). TCP flows stay until their next packet, which is
/// answered with a RST. Returns how many flows ended.
pub fn end_flows_to_deleted_endpoints(
    tables: &crate::tables::Tables,
    flows: &mut crate::conntrack::Flows,
) -> usize {
    flows.retain(|e| {
        e.service == NO_SERVICE
            || e.original.proto == proto::TCP
            || tables
                .frontend(&entry_frontend(e))
                .is_some_and(|(_, port)| port.lists(e.reply.src, e.reply.src_port))
    })
}

/// Why a new flow got no backend.
#[derive(Debug, Clone, Copy)]
pub(super) enum NewFlowError {
    /// The Service port has no usable endpoint: answered as kube-proxy's REJECT.
    Reject,
    Drop(DropReason),
}
