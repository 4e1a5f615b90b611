//! Generates the bus bindings of every service declared in `proto/`: for
//! each service, a typed client and a server adapter that serves any
//! implementation of the service's tonic trait on the bus. Nothing about a
//! method (its name on the bus, its request and reply types, whether it
//! streams) is written by hand anywhere else: adding an RPC is editing the
//! `.proto` and implementing one trait method.
//!
//! The messages themselves are generated once, in `hearth-proto`; here they
//! are extern paths, so this compile emits only the bindings. A test service
//! (`tests/echo.proto`) is generated whole — messages, tonic trait and
//! bindings — for the tests that check the generator.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::rc::Rc;

/// The role a proto service is served under by default (the `Service`
/// variant); services served under several roles (the agent service: the
/// orchestrator and the operatives) have none, and their clients name one.
fn default_role(service: &str) -> Option<&'static str> {
    match service {
        "Engine" => Some("Engine"),
        "Toolhost" => Some("Toolhost"),
        "Memory" => Some("Memory"),
        "Learning" => Some("Learning"),
        _ => None,
    }
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn doc(comments: &prost_build::Comments, fallback: &str) -> String {
    let lines: Vec<String> = comments
        .leading
        .iter()
        .flat_map(|c| c.lines().map(str::trim).map(str::to_string))
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        format!("/// {fallback}\n")
    } else {
        lines.iter().map(|l| format!("/// {l}\n")).collect()
    }
}

/// A type path as seen from inside the generated module (one level below
/// the package's own module).
fn from_inside(path: &str) -> String {
    if path.starts_with("::") {
        path.to_string()
    } else {
        format!("super::{path}")
    }
}

struct BusBindings {
    /// Where the package's tonic server traits are (`::hearth_proto::v1::`,
    /// or empty when they are generated into the same file).
    traits: String,
    /// Method names of the package, for its flat `methods` module.
    methods: Rc<RefCell<Vec<(String, String, String)>>>,
}

impl prost_build::ServiceGenerator for BusBindings {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        // Services of imported packages (A2A's own) are not Hearth's to bind.
        if !service.package.starts_with("hearth.") {
            return;
        }
        let module = format!("{}_bus", snake(&service.name));
        let client = format!("{}Client", service.name);
        let traits = from_inside(&format!(
            "{}{}_server::{}",
            self.traits,
            snake(&service.name),
            service.name
        ));
        let full = format!("{}.{}", service.package, service.proto_name);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "/// Bus bindings of `{full}`: [`{module}::{client}`] calls it, [`{module}::serve`] serves it."
        );
        let _ = writeln!(s, "pub mod {module} {{");
        let _ = writeln!(
            s,
            "    use ::hearth_mesh::rpc::{{self, ServeAt}};\n    use ::hearth_mesh::subjects::{{Service, Subjects}};\n    use ::hearth_mesh::{{BusError, SharedBus}};\n    use ::std::sync::Arc;\n    use ::std::time::Duration;\n    use ::tokio::task::JoinHandle;\n    use ::tonic::Status;\n"
        );
        // Method names.
        let _ = writeln!(
            s,
            "    /// The methods' names on the bus (the last token of their subjects)."
        );
        let _ = writeln!(s, "    pub mod methods {{");
        for m in &service.methods {
            let konst = m.name.to_uppercase();
            let _ = write!(
                s,
                "{}",
                doc(&m.comments, &format!("`{full}.{}`.", m.proto_name))
                    .lines()
                    .map(|l| format!("        {l}\n"))
                    .collect::<String>()
            );
            let _ = writeln!(s, "        pub const {konst}: &str = \"{}\";", m.name);
            self.methods.borrow_mut().push((
                konst,
                m.name.clone(),
                format!("`{full}.{}`", m.proto_name),
            ));
        }
        let _ = writeln!(s, "    }}\n");
        // The client.
        let _ = write!(
            s,
            "{}",
            doc(&service.comments, &format!("`{full}`."))
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let _ = writeln!(s, "    ///\n    /// Calls it on the bus.");
        let _ = writeln!(
            s,
            "    #[derive(Clone)]\n    pub struct {client} {{\n        bus: SharedBus,\n        subjects: Subjects,\n        role: Service,\n        timeout: Duration,\n    }}\n"
        );
        let _ = writeln!(s, "    impl {client} {{");
        match default_role(&service.name) {
            Some(role) => {
                let _ = writeln!(
                    s,
                    "        /// A client of the `{}` role; `timeout` bounds each call (each reply of a stream).\n        pub fn new(bus: SharedBus, subjects: Subjects, timeout: Duration) -> Self {{\n            Self::with_role(bus, subjects, Service::{role}, timeout)\n        }}\n",
                    snake(role)
                );
                let _ = writeln!(
                    s,
                    "        /// A client of the service served under `role`.\n        pub fn with_role(bus: SharedBus, subjects: Subjects, role: Service, timeout: Duration) -> Self {{\n            Self {{ bus, subjects, role, timeout }}\n        }}\n"
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "        /// A client of the service served under `role`; `timeout` bounds each call (each reply of a stream).\n        pub fn new(bus: SharedBus, subjects: Subjects, role: Service, timeout: Duration) -> Self {{\n            Self {{ bus, subjects, role, timeout }}\n        }}\n"
                );
            }
        }
        let _ = writeln!(
            s,
            "        /// The same client with another deadline.\n        pub fn with_timeout(mut self, timeout: Duration) -> Self {{\n            self.timeout = timeout;\n            self\n        }}\n\n        /// The role it calls.\n        pub fn role(&self) -> Service {{\n            self.role\n        }}\n"
        );
        for m in &service.methods {
            if m.client_streaming {
                continue;
            }
            let konst = m.name.to_uppercase();
            let input = from_inside(&m.input_type);
            let output = from_inside(&m.output_type);
            let (ret, call) = if m.server_streaming {
                (format!("rpc::ReplyStream<{output}>"), "call_stream")
            } else {
                (output.clone(), "call")
            };
            let comment = doc(&m.comments, &format!("`{full}.{}`.", m.proto_name));
            let comment: String = comment.lines().map(|l| format!("        {l}\n")).collect();
            let _ = write!(
                s,
                "{comment}        pub async fn {name}(&self, req: &{input}) -> Result<{ret}, Status> {{\n            let subject = self.subjects.method(self.role, methods::{konst});\n            rpc::{call}(&self.bus, &subject, req, self.timeout).await\n        }}\n\n",
                name = m.name
            );
            let _ = write!(
                s,
                "        /// [`Self::{name}`] on one instance of the role (the one that holds a task, say).\n        pub async fn {name}_on(&self, instance: &str, req: &{input}) -> Result<{ret}, Status> {{\n            let subject = self.subjects.instance_method(self.role, instance, methods::{konst});\n            rpc::{call}(&self.bus, &subject, req, self.timeout).await\n        }}\n\n",
                name = m.name
            );
        }
        let _ = writeln!(s, "    }}\n");
        // The server adapter.
        let _ = writeln!(
            s,
            "    /// Serves every method of `svc` on the bus at `at` (its role, an instance or not, a queue group or not), until the bus closes."
        );
        let _ = writeln!(
            s,
            "    pub async fn serve<T: {traits}>(svc: Arc<T>, at: &ServeAt) -> Result<Vec<JoinHandle<()>>, BusError> {{\n        let mut handles = Vec::new();"
        );
        for m in &service.methods {
            if m.client_streaming {
                continue;
            }
            let konst = m.name.to_uppercase();
            let input = from_inside(&m.input_type);
            let serve = if m.server_streaming {
                "serve_stream"
            } else {
                "serve_unary"
            };
            let _ = write!(
                s,
                "        {{\n            let svc = svc.clone();\n            handles.push(\n                rpc::{serve}(at.bus().clone(), at.subject(methods::{konst}), at.queue(), move |req: {input}| {{\n                    let svc = svc.clone();\n                    async move {{ svc.{name}(::tonic::Request::new(req)).await.map(::tonic::Response::into_inner) }}\n                }})\n                .await?,\n            );\n        }}\n",
                name = m.name
            );
        }
        let _ = writeln!(s, "        Ok(handles)\n    }}");
        let _ = writeln!(s, "}}");
        buf.push_str(&s);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        if !package.starts_with("hearth.") {
            return;
        }
        let methods = std::mem::take(&mut *self.methods.borrow_mut());
        if methods.is_empty() {
            return;
        }
        let mut s = String::from(
            "/// Every method name of the package on the bus (the last token of its subjects).\npub mod methods {\n",
        );
        for (konst, name, of) in methods {
            let _ = writeln!(
                s,
                "    /// {of}.\n    pub const {konst}: &str = \"{name}\";"
            );
        }
        s.push_str("}\n");
        buf.push_str(&s);
    }
}

/// Wraps tonic's own generator and adds the bus bindings after it.
struct WithTonic {
    tonic: Box<dyn prost_build::ServiceGenerator>,
    bus: BusBindings,
}

impl prost_build::ServiceGenerator for WithTonic {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        self.tonic.generate(service.clone(), buf);
        self.bus.generate(service, buf);
    }
    fn finalize(&mut self, buf: &mut String) {
        self.tonic.finalize(buf);
        self.bus.finalize(buf);
    }
    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.tonic.finalize_package(package, buf);
        self.bus.finalize_package(package, buf);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // set_var is unsafe in edition 2024; build scripts run single-threaded.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("PROTOC", protoc);
        }
    }
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto = root.join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let files: Vec<PathBuf> = std::fs::read_dir(proto.join("hearth/v1"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        proto.join("hearth/v1").display()
    );
    let bindings = out.join("bindings");
    std::fs::create_dir_all(&bindings)?;
    prost_build::Config::new()
        .out_dir(&bindings)
        .extern_path(".hearth.v1", "::hearth_proto::v1")
        .extern_path(".lf.a2a.v1", "::hearth_proto::a2a")
        .service_generator(Box::new(BusBindings {
            traits: "::hearth_proto::v1::".into(),
            methods: Rc::default(),
        }))
        .compile_protos(&files, &[proto.clone(), proto.join("vendor")])?;

    // The generator's own test service: messages, tonic trait, bindings.
    let echo = root.join("tests/echo.proto");
    println!("cargo:rerun-if-changed={}", echo.display());
    let test_out = out.join("echo");
    std::fs::create_dir_all(&test_out)?;
    let mut config = prost_build::Config::new();
    config
        .out_dir(&test_out)
        .service_generator(Box::new(WithTonic {
            tonic: tonic_prost_build::configure()
                .build_client(false)
                .build_transport(false)
                .service_generator(),
            bus: BusBindings {
                traits: String::new(),
                methods: Rc::default(),
            },
        }));
    config.compile_protos(&[echo], &[root.join("tests")])?;
    Ok(())
}
