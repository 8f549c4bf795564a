//! The core's events as logs: member and target news at info, table changes at debug.

use pias_state::agent::{AgentEvent, UNANSWERED_HINT};
use pias_state::proxy::Event;
use tracing::{debug, info, warn};

/// Logs one proxy event.
pub fn log_proxy_event(ev: &Event) {
    match *ev {
        Event::MemberUp { id, addr } => info!(member = %id, %addr, "member up"),
        Event::MemberSuspect { id } => warn!(member = %id, "member suspect"),
        Event::MemberDown { id } => warn!(member = %id, "member down or left"),
        Event::TargetUp { group, service } => info!(%group, %service, "target registered"),
        Event::TargetDown { group, service } => info!(%group, %service, "target gone"),
        Event::TargetSuspected { group, service } => warn!(
            %group,
            %service,
            "target suspect: its new flows go unanswered; no new flows for a back-off"
        ),
        Event::CacheInstalled { group } => debug!(%group, "IAP cache entry installed"),
        Event::CacheRemoved { group } => debug!(%group, "IAP cache entry removed"),
        Event::NatCreated {
            forward, delivery, ..
        } => debug!(flow = ?forward, ?delivery, "NAT binding created"),
        Event::NatRemoved { forward, reason, .. } => debug!(flow = ?forward, ?reason, "NAT binding removed"),
        Event::AnnounceChanged { up: true, reason } => {
            info!(reason = reason.word(), "announcement: anycast prefixes announced")
        }
        Event::AnnounceChanged { up: false, reason } => {
            warn!(reason = reason.word(), "announcement: anycast prefixes withdrawn")
        }
        Event::LoadChanged {
            flows_per_s,
            load_per_mille,
        } => info!(
            flows_per_s,
            load_per_mille, "JAP load changed (1000 = capacity; above it new flows are shed)"
        ),
    }
}

/// Logs one agent event.
pub fn log_agent_event(ev: &AgentEvent) {
    match *ev {
        AgentEvent::Registered { jap } => info!(%jap, "registered"),
        AgentEvent::JapLost { jap, reason } => warn!(%jap, ?reason, "registration lost; registering again"),
        AgentEvent::Deregistered => info!("deregistered"),
        AgentEvent::Refused { jap, status } => warn!(%jap, ?status, "registration refused"),
        AgentEvent::Unanswered { attempts, waited } => warn!(
            attempts,
            waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            "registration unanswered: {UNANSWERED_HINT}"
        ),
        AgentEvent::Answered { after_attempts } => {
            info!(after_attempts, "registration answered: a proxy authenticated it")
        }
        AgentEvent::ServiceDown => warn!("service down (health check failed): deregistering"),
        AgentEvent::ServiceUp => info!("service up (health check passes): registering"),
    }
}
