//! Subject names: `<prefix>.v1.<service>.<method>`.
//!
//! The prefix is `hearth` unless configured otherwise; a different prefix
//! gives a separate mesh on the same NATS server (tests use one each).
//! Hearth's JetStream streams and buckets are reached through the server's
//! own JetStream, or — from a leaf node, such as the compose stack's NATS
//! edge for operatives on other machines — through a named JetStream
//! domain (`[bus] jetstream_domain`).

/// The subjects of one mesh.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
    /// The JetStream domain of Hearth's streams (`None`: the server's own).
    jetstream_domain: Option<String>,
}

/// The services that listen on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Inference and embeddings.
    Engine,
    /// MCP tools.
    Toolhost,
    /// Receives tasks, plans and delegates.
    Orchestrator,
    /// Runs subtasks (a queue group: several share the work).
    Operative,
    /// The vector store.
    Memory,
    /// Traces, evaluation, datasets.
    Learning,
    /// The HTTP front door: a client of the mesh, on the bus only to
    /// answer its health.
    Gateway,
}

impl Service {
    /// Every service, in start-up order (dependencies first).
    pub const ALL: [Service; 7] = [
        Service::Engine,
        Service::Learning,
        Service::Memory,
        Service::Toolhost,
        Service::Operative,
        Service::Orchestrator,
        Service::Gateway,
    ];

    /// The service's name on the bus and its queue group.
    pub fn name(self) -> &'static str {
        match self {
            Service::Engine => "engine",
            Service::Toolhost => "toolhost",
            Service::Orchestrator => "orchestrator",
            Service::Operative => "operative",
            Service::Memory => "memory",
            Service::Learning => "learning",
            Service::Gateway => "gateway",
        }
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new("hearth")
    }
}

impl Subjects {
    /// Subjects under `prefix` (normally `hearth`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            jetstream_domain: None,
        }
    }

    /// These subjects, with Hearth's streams in JetStream domain `domain`
    /// (`None` or empty: the connected server's own JetStream).
    pub fn with_jetstream_domain(mut self, domain: Option<String>) -> Self {
        self.jetstream_domain = domain.filter(|d| !d.is_empty());
        self
    }

    /// The prefix these subjects live under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The JetStream API where Hearth's streams and buckets are, over `client`.
    pub fn jetstream(&self, client: async_nats::Client) -> async_nats::jetstream::Context {
        match &self.jetstream_domain {
            Some(domain) => async_nats::jetstream::with_domain(client, domain),
            None => async_nats::jetstream::new(client),
        }
    }

    /// `<prefix>.v1.<service>.<method>`.
    pub fn method(&self, service: Service, method: &str) -> String {
        format!("{}.v1.{}.{}", self.prefix, service.name(), method)
    }
}

impl Subjects {
    /// `<prefix>.v1.<service>.<instance>.<method>`: a method of one instance
    /// of a service (an operative's own tasks, say).
    pub fn instance_method(&self, service: Service, instance: &str, method: &str) -> String {
        format!(
            "{}.v1.{}.{}.{}",
            self.prefix,
            service.name(),
            instance,
            method
        )
    }
}

impl Subjects {
    /// `<prefix>.v1.work.<service>`: the durable work queue of a role.
    pub fn work(&self, service: Service) -> String {
        format!("{}.v1.work.{}", self.prefix, service.name())
    }

    /// `<prefix>.v1.work.dead`: subtasks that used up their attempts.
    pub fn work_dead(&self) -> String {
        format!("{}.v1.work.dead", self.prefix)
    }

    /// `<prefix>.v1.work.events.<task>`: a queued task's events, kept in
    /// the events stream so a waiting client can reattach.
    pub fn work_events(&self, task_token: &str) -> String {
        format!("{}.v1.work.events.{task_token}", self.prefix)
    }

    /// `<prefix>.v1.work.cancel.<task>`: a request to cancel a queued task,
    /// heard by whichever instance holds it.
    pub fn work_cancel(&self, task_token: &str) -> String {
        format!("{}.v1.work.cancel.{task_token}", self.prefix)
    }
}

/// Whether a NATS-style subject pattern (`*` one token, `>` the rest)
/// matches a concrete subject.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_subjects_follow_the_contract() {
        let s = Subjects::default();
        assert_eq!(
            s.method(Service::Engine, "generate"),
            "hearth.v1.engine.generate"
        );
        assert_eq!(
            Subjects::new("t1").method(Service::Operative, "send_task"),
            "t1.v1.operative.send_task"
        );
    }

    #[test]
    fn wildcards_match_like_nats() {
        assert!(matches("a.b.c", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(matches("a.*.c", "a.x.c"));
        assert!(!matches("a.*", "a.x.c"));
        assert!(matches("a.>", "a.x.c"));
        assert!(!matches("a.>", "a"));
    }
}
