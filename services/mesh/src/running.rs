//! One shape for every service of the mesh.
//!
//! Each service crate starts the same way — configuration and bus in, a
//! [`Running`] out — and every running service answers the `Health` RPC
//! (`proto/hearth/v1/health.proto`) under its role with its own checks, so
//! `hearth status`, a container's health check and `hearth doctor` ask the
//! service itself instead of re-deriving what it decided. A [`Running`]
//! drains the same way for all: its intake stops first (over NATS a queue
//! peer takes the next request), the work already taken finishes, then it
//! stops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hearth_proto::v1::health_server::Health;
use hearth_proto::v1::{CheckOutcome, HealthCheck, HealthRequest, HealthResponse};
use tokio::task::JoinHandle;

use crate::bindings::health_bus;
use crate::rpc::ServeAt;
use crate::subjects::Service;
use crate::{BusError, SharedBus, Subjects};

/// How long a stopped service's loops get to be dropped.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Aborts `loops` and waits (up to [`STOP_WAIT`]) until they are dropped:
/// an aborted loop is dropped only when the runtime next reaches it, and
/// what it holds (a memory store flushing its files, say) must be closed
/// before the caller removes the directory it lives in.
pub async fn stop_loops(loops: Vec<JoinHandle<()>>) {
    for h in &loops {
        h.abort();
    }
    let _ = tokio::time::timeout(STOP_WAIT, futures::future::join_all(loops)).await;
}

/// One check, as `hearth doctor` and the `Health` RPC report it.
pub fn check(
    name: impl Into<String>,
    outcome: CheckOutcome,
    detail: impl Into<String>,
    fix: Option<String>,
) -> HealthCheck {
    HealthCheck {
        name: name.into(),
        outcome: outcome.into(),
        detail: detail.into(),
        fix: fix.unwrap_or_default(),
    }
}

/// What a running service says of itself when asked (its model loaded, its
/// MCP servers up, its store reachable…). Checks are quick: they read the
/// service's state, they do not exercise it.
#[async_trait::async_trait]
pub trait Checks: Send + Sync + 'static {
    /// The checks, now.
    async fn checks(&self) -> Vec<HealthCheck>;
}

/// Set when this process starts draining; its services then answer
/// `draining` and not `ready`.
static DRAINING: AtomicBool = AtomicBool::new(false);

/// Whether this process is draining.
pub fn draining() -> bool {
    DRAINING.load(Ordering::SeqCst)
}

struct HealthService {
    service: Service,
    worker: String,
    started: Instant,
    checks: Arc<dyn Checks>,
    bus: SharedBus,
}

/// This machine's name, for telling instances on many machines apart.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// The one-minute load average, where the kernel says it.
pub(crate) fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_string)
}

/// Every service's own checks: which Hearth runs where (version, host,
/// process, load, requests in flight), and which NATS server it is
/// connected to (a cluster's node, say).
fn instance_checks(bus: &SharedBus) -> Vec<HealthCheck> {
    let mut out = vec![check(
        "instance",
        CheckOutcome::Ok,
        format!(
            "hearth {} on {}, pid {}, load {}, {} request(s) in flight",
            env!("CARGO_PKG_VERSION"),
            host_name(),
            std::process::id(),
            load_average().unwrap_or_else(|| "?".into()),
            crate::rpc::in_flight()
        ),
        None,
    )];
    if let Some(client) = bus.nats() {
        let info = client.server_info();
        let state = client.connection_state();
        let connected = matches!(state, async_nats::connection::State::Connected);
        out.push(check(
            "bus",
            if connected {
                CheckOutcome::Ok
            } else {
                CheckOutcome::Warn
            },
            format!(
                "{} to NATS server {} at {}:{} (nats-server {})",
                if connected {
                    "connected"
                } else {
                    "reconnecting"
                },
                if info.server_name.is_empty() {
                    info.server_id.as_str()
                } else {
                    info.server_name.as_str()
                },
                info.host,
                info.port,
                info.version
            ),
            None,
        ));
    }
    out
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _request: tonic::Request<HealthRequest>,
    ) -> Result<tonic::Response<HealthResponse>, tonic::Status> {
        let mut checks = self.checks.checks().await;
        checks.extend(instance_checks(&self.bus));
        let failed = checks.iter().any(|c| c.outcome() == CheckOutcome::Fail);
        let draining = draining();
        Ok(tonic::Response::new(HealthResponse {
            service: self.service.name().to_string(),
            worker: self.worker.clone(),
            ready: !failed && !draining,
            draining,
            checks,
            uptime_s: self.started.elapsed().as_secs_f64(),
        }))
    }
}

/// A service that runs: its serving loops, where it listens, what stops it.
/// Every service crate's `start` returns one.
pub struct Running {
    /// Which service.
    pub service: Service,
    /// Its instance name, for services with instances (the agents).
    pub worker: String,
    /// The loops where new work comes in: the first to stop on a drain.
    pub intake: Vec<JoinHandle<()>>,
    /// The other loops (this instance's own subjects, its health), which
    /// keep serving while it drains.
    pub handles: Vec<JoinHandle<()>>,
    /// Where it listens beyond the bus, by name (`http`, `grpc`).
    pub listeners: BTreeMap<&'static str, SocketAddr>,
    // Behind a mutex so that a `&Running` can be held across an await in
    // a `Send` future (a boxed future is `Send` but not `Sync`).
    on_stop: std::sync::Mutex<Vec<BoxFuture<'static, ()>>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("service", &self.service)
            .field("worker", &self.worker)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// A running `service` with no loops yet.
    pub fn new(service: Service) -> Self {
        Self {
            service,
            worker: String::new(),
            intake: Vec::new(),
            handles: Vec::new(),
            listeners: BTreeMap::new(),
            on_stop: std::sync::Mutex::default(),
        }
    }

    /// Names the instance.
    pub fn worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = worker.into();
        self
    }

    /// Adds loops where new work comes in.
    pub fn intake(mut self, loops: Vec<JoinHandle<()>>) -> Self {
        self.intake.extend(loops);
        self
    }

    /// Adds loops that keep serving while it drains.
    pub fn handles(mut self, loops: Vec<JoinHandle<()>>) -> Self {
        self.handles.extend(loops);
        self
    }

    /// Records where it listens.
    pub fn listener(mut self, name: &'static str, addr: SocketAddr) -> Self {
        self.listeners.insert(name, addr);
        self
    }

    /// Something to finish when it stops (its MCP servers, say).
    pub fn on_stop(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        crate::sync::lock(&self.on_stop).push(Box::pin(stop));
        self
    }

    /// Serves the `Health` RPC under the service's role (in its queue
    /// group: any instance answers) and, for an instance, on its own
    /// subjects, answering with `checks`.
    pub async fn with_health(
        mut self,
        bus: SharedBus,
        subjects: &Subjects,
        checks: Arc<dyn Checks>,
    ) -> Result<Self, BusError> {
        let svc = Arc::new(HealthService {
            service: self.service,
            worker: self.worker.clone(),
            started: Instant::now(),
            checks,
            bus: bus.clone(),
        });
        let at = ServeAt::role(bus, subjects.clone(), self.service);
        if !self.worker.is_empty() {
            let mine = at.clone().instance(&self.worker);
            self.handles
                .extend(health_bus::serve(svc.clone(), &mine).await?);
        }
        self.handles.extend(health_bus::serve(svc, &at).await?);
        Ok(self)
    }

    /// Stops taking new work (the intake loops go).
    pub fn stop_intake(&mut self) {
        for h in self.intake.drain(..) {
            h.abort();
        }
    }

    /// Stops every loop and finishes what it must.
    pub async fn shutdown(self) {
        stop_loops(self.intake.into_iter().chain(self.handles).collect()).await;
        let stops = std::mem::take(&mut *crate::sync::lock(&self.on_stop));
        for stop in stops {
            stop.await;
        }
    }
}

/// Drains this process's services: each stops its intake, then the
/// requests already taken get up to `deadline` to finish. True when
/// nothing was left in flight.
pub async fn drain(running: &mut [Running], deadline: Duration) -> bool {
    DRAINING.store(true, Ordering::SeqCst);
    for r in running.iter_mut() {
        r.stop_intake();
    }
    crate::rpc::drained(deadline).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::LocalBus;
    use crate::bindings::health_bus::HealthClient;

    struct Fixed(Vec<HealthCheck>);

    #[async_trait::async_trait]
    impl Checks for Fixed {
        async fn checks(&self) -> Vec<HealthCheck> {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn a_service_answers_its_health_under_its_role_and_a_failed_check_is_not_ready() {
        let bus: SharedBus = Arc::new(LocalBus::default());
        let subjects = Subjects::new("t-health");
        let ok = Running::new(Service::Memory)
            .with_health(
                bus.clone(),
                &subjects,
                Arc::new(Fixed(vec![check("memory", CheckOutcome::Ok, "fine", None)])),
            )
            .await
            .unwrap();
        let broken = Running::new(Service::Operative)
            .worker("operative-1")
            .with_health(
                bus.clone(),
                &subjects,
                Arc::new(Fixed(vec![
                    check("agent", CheckOutcome::Ok, "runs `operative`", None),
                    check(
                        "specs",
                        CheckOutcome::Fail,
                        "missing",
                        Some("fix it".into()),
                    ),
                ])),
            )
            .await
            .unwrap();
        let ask = |service| {
            HealthClient::new(
                bus.clone(),
                subjects.clone(),
                service,
                Duration::from_secs(2),
            )
        };
        let h = ask(Service::Memory).check(&HealthRequest {}).await.unwrap();
        assert_eq!(h.service, "memory");
        assert!(h.ready && !h.draining);
        let names: Vec<&str> = h.checks.iter().map(|c| c.name.as_str()).collect();
        // Its own check, then which Hearth runs where (no NATS here: no bus line).
        assert_eq!(names, ["memory", "instance"]);
        assert!(
            h.checks[1]
                .detail
                .contains(&format!("pid {}", std::process::id())),
            "{:?}",
            h.checks[1]
        );
        let h = ask(Service::Operative)
            .check(&HealthRequest {})
            .await
            .unwrap();
        assert!(!h.ready, "a failed check makes it not ready");
        assert_eq!(h.worker, "operative-1");
        assert_eq!(h.checks[1].fix, "fix it");
        // The instance answers on its own subjects too.
        let h = ask(Service::Operative)
            .check_on("operative-1", &HealthRequest {})
            .await
            .unwrap();
        assert_eq!(h.worker, "operative-1");
        // Nobody serves the engine here: a clear error, not a hang.
        assert!(ask(Service::Engine).check(&HealthRequest {}).await.is_err());
        ok.shutdown().await;
        broken.shutdown().await;
    }
}
