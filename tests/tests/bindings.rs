//! The generated bus bindings: a service declared only in a test `.proto`
//! (`services/mesh/tests/echo.proto`) is served and called over the
//! in-process bus and over a real nats-server, with no hand-written glue —
//! its client, its server adapter and its method names all come from the
//! build script.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use hearth_e2e::{NatsServer, unique_prefix};
use hearth_mesh::echo::echo_bus::{self, EchoClient};
use hearth_mesh::echo::echo_server::Echo;
use hearth_mesh::echo::{SayReply, SayRequest};
use hearth_mesh::rpc::ServeAt;
use hearth_mesh::subjects::Service;
use hearth_mesh::{LocalBus, NatsBus, SharedBus, Subjects};
use tonic::{Code, Request, Response, Status};

struct Server(&'static str);

#[tonic::async_trait]
impl Echo for Server {
    async fn say(&self, req: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let r = req.into_inner();
        if r.text.is_empty() {
            return Err(Status::invalid_argument("nothing to say"));
        }
        Ok(Response::new(SayReply {
            text: r.text,
            by: self.0.into(),
        }))
    }

    type RepeatStream = BoxStream<'static, Result<SayReply, Status>>;

    async fn repeat(
        &self,
        req: Request<SayRequest>,
    ) -> Result<Response<Self::RepeatStream>, Status> {
        let r = req.into_inner();
        if r.times > 100 {
            return Err(Status::out_of_range("at most 100 times"));
        }
        let by = self.0.to_string();
        Ok(Response::new(
            futures::stream::iter((0..r.times).map(move |i| {
                Ok(SayReply {
                    text: format!("{} {i}", r.text),
                    by: by.clone(),
                })
            }))
            .boxed(),
        ))
    }
}

async fn exercise(server_bus: SharedBus, client_bus: SharedBus, prefix: &str) {
    let subjects = Subjects::new(prefix);
    // Served under a role (a queue group) and as one named instance.
    let role = ServeAt::role(server_bus.clone(), subjects.clone(), Service::Operative);
    let mut handles = echo_bus::serve(Arc::new(Server("shared")), &role)
        .await
        .unwrap();
    handles.extend(
        echo_bus::serve(Arc::new(Server("one")), &role.clone().instance("one"))
            .await
            .unwrap(),
    );
    // The subjects keep the mesh's scheme, and the names come from the proto.
    assert_eq!(echo_bus::methods::SAY, "say");
    assert_eq!(
        role.subject(echo_bus::methods::REPEAT),
        format!("{prefix}.v1.operative.repeat")
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    let client = EchoClient::new(
        client_bus,
        subjects,
        Service::Operative,
        Duration::from_secs(5),
    );
    let reply = client
        .say(&SayRequest {
            text: "hello".into(),
            times: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        (reply.text.as_str(), reply.by.as_str()),
        ("hello", "shared")
    );

    let on = client
        .say_on(
            "one",
            &SayRequest {
                text: "you".into(),
                times: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(on.by, "one");

    let replies: Vec<SayReply> = client
        .repeat(&SayRequest {
            text: "again".into(),
            times: 3,
        })
        .await
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
        .await;
    let texts: Vec<&str> = replies.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts, ["again 0", "again 1", "again 2"]);

    // The service's own errors arrive as the status it returned.
    let err = client
        .say(&SayRequest::default())
        .await
        .expect_err("an empty text is refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "nothing to say");
    let err = match client
        .repeat(&SayRequest {
            text: "x".into(),
            times: 1000,
        })
        .await
    {
        Ok(mut s) => s.next().await.unwrap().expect_err("too many is refused"),
        Err(e) => e,
    };
    assert_eq!(err.code(), Code::OutOfRange);

    // An instance nobody serves: no responders, said as such.
    let err = client
        .say_on(
            "nobody",
            &SayRequest {
                text: "?".into(),
                times: 0,
            },
        )
        .await
        .expect_err("no instance `nobody`");
    assert_eq!(err.code(), Code::Unavailable);
    for h in handles {
        h.abort();
    }
}

#[tokio::test]
async fn a_test_service_is_served_and_called_in_process_with_no_glue() {
    let bus: SharedBus = Arc::new(LocalBus::default());
    exercise(bus.clone(), bus, &unique_prefix("bind-local")).await;
}

#[tokio::test]
async fn a_test_service_is_served_and_called_over_nats_with_no_glue() {
    let nats = NatsServer::start().await.unwrap();
    let server: SharedBus = Arc::new(NatsBus::connect(&nats.url).await.unwrap());
    let client: SharedBus = Arc::new(NatsBus::connect(&nats.url).await.unwrap());
    exercise(server, client, &unique_prefix("bind-nats")).await;
}
