//! `graph-sim`: an HTTPS simulator of the Microsoft Graph calls guestreset makes and of the
//! Entra token endpoint, with a journal, fault injection and eventual-consistency knobs.
//!
//! One TLS listener on loopback serves the authority (`/{tenant}/oauth2/v2.0/token`), Graph
//! (`/v1.0/...`) and the admin API (`/_sim/...`), so `AZURE_AUTHORITY_HOST` and
//! `GRAPH_ENDPOINT` are both [`Simulator::base_url`]; clients trust `<state_dir>/ca.pem`.

mod admin;
pub mod filter;
mod graph;
mod model;
mod reply;
mod server;
mod state;
mod tls;
mod token;

pub use admin::{AdminClient, client_trusting};
pub use model::{
    AssertionClaims, Call, FaultAction, FaultRule, Hazard, InvitationRecord, JournalEntry,
    SEED_TENANT_DOMAIN, Secrets, SeedUser, Settings,
};

use anyhow::Context;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default tenant id of a simulator.
pub const DEFAULT_TENANT_ID: &str = "00000000-0000-0000-0000-0000000000aa";
/// Default application (client) id accepted by the token endpoint.
pub const DEFAULT_CLIENT_ID: &str = "00000000-0000-0000-0000-0000000000bb";
/// Default client secret accepted by the token endpoint.
pub const DEFAULT_CLIENT_SECRET: &str = "sim-secret";
/// Path of the managed-identity endpoint (`IDENTITY_ENDPOINT = base_url + this`,
/// `IDENTITY_HEADER = client secret`).
pub const MANAGED_IDENTITY_PATH: &str = "/msi/token";

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub bind: SocketAddr,
    pub state_dir: PathBuf,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub users: Vec<SeedUser>,
    /// Added to every Graph response.
    pub latency: Duration,
}

impl SimConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        SimConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            state_dir: state_dir.into(),
            tenant_id: DEFAULT_TENANT_ID.to_string(),
            client_id: DEFAULT_CLIENT_ID.to_string(),
            client_secret: DEFAULT_CLIENT_SECRET.to_string(),
            users: Vec::new(),
            latency: Duration::ZERO,
        }
    }

    pub fn with_users(mut self, users: impl IntoIterator<Item = SeedUser>) -> Self {
        self.users.extend(users);
        self
    }
}

/// Reads a YAML list of [`SeedUser`].
pub fn load_seed(path: &Path) -> anyhow::Result<Vec<SeedUser>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A running simulator; the server stops when this is dropped.
pub struct Simulator {
    addr: SocketAddr,
    base_url: String,
    ca_pem_path: PathBuf,
    ca_pem: String,
    tenant_id: String,
    client_id: String,
    client_secret: String,
    task: tokio::task::JoinHandle<()>,
}

/// Generates the CA, binds, writes `<state_dir>/ca.pem` and `<state_dir>/base_url`, and serves
/// on the current Tokio runtime.
pub async fn start(config: SimConfig) -> anyhow::Result<Simulator> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    let tls = tls::generate().context("generating the test CA and server certificate")?;
    let ca_pem_path = config.state_dir.join("ca.pem");
    std::fs::write(&ca_pem_path, &tls.ca_pem)
        .with_context(|| format!("writing {}", ca_pem_path.display()))?;

    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let base_url = format!("https://{}", SocketAddr::new(host, addr.port()));
    std::fs::write(config.state_dir.join("base_url"), &base_url)?;

    let shared = state::Shared::new(
        state::Identity {
            tenant_id: config.tenant_id.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            base_url: base_url.clone(),
        },
        config.users,
        Settings {
            latency_ms: config.latency.as_millis() as u64,
            mail_propagation_ms: 0,
            tokens_without_roles: false,
        },
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let task = tokio::spawn(server::serve(listener, acceptor, shared));
    Ok(Simulator {
        addr,
        base_url,
        ca_pem_path,
        ca_pem: tls.ca_pem,
        tenant_id: config.tenant_id,
        client_id: config.client_id,
        client_secret: config.client_secret,
        task,
    })
}

impl Simulator {
    /// `https://127.0.0.1:PORT`: the authority host and the Graph endpoint alike.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA to trust (`SSL_CERT_FILE`).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.ca_pem_path.clone()
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// `{base_url}/{tenant}/oauth2/v2.0/token`
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url, self.tenant_id)
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient::from_ca_pem(&self.base_url, self.ca_pem.as_bytes())
            .expect("a client trusting the simulator's own CA can be built")
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
