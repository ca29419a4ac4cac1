//! A TCP proxy in front of the API server, for faults a real network has and a loopback
//! connection never shows: a watch stream that goes silent without a word, a process cut off
//! from the API server. TLS passes through untouched (the API server's certificate names
//! 127.0.0.1, whatever the port), so a kubeconfig pointed at the proxy works unchanged
//! ([`crate::ControlPlane::kubeconfig_via`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Server bytes that arrive this long after the client's last bytes are not an answer to a
/// request but a stream (a watch event or bookmark).
const LATE: Duration = Duration::from_millis(500);

/// What the proxy does with the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Carries everything.
    Forward = 0,
    /// A stream (a connection on which the server sent late bytes) freezes after its next
    /// chunk: nothing more in either direction, the connection stays open. A frozen
    /// connection that the client writes to again (a request on a pooled connection) is
    /// closed, as a server closes an idle keep-alive connection. Other connections, and new
    /// ones, are carried: what stalls is a watch, nothing else.
    StallStreams = 1,
    /// Nothing is carried any more, on established connections or new ones (accepted and
    /// held): the process is cut off from the API server without a word.
    CutOff = 2,
}

/// The proxy; dropping it ends every connection.
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

struct State {
    upstream: SocketAddr,
    mode: AtomicU8,
    frozen: AtomicUsize,
    connections: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl State {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            0 => Mode::Forward,
            1 => Mode::StallStreams,
            _ => Mode::CutOff,
        }
    }
}

impl TcpProxy {
    /// Listens on a free loopback port and carries connections to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            mode: AtomicU8::new(Mode::Forward as u8),
            frozen: AtomicUsize::new(0),
            connections: std::sync::Mutex::default(),
        });
        let task = tokio::spawn(accept(listener, state.clone()));
        TcpProxy { addr, state, task }
    }

    /// `https://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// How many streams froze since the start.
    pub fn frozen(&self) -> usize {
        self.state.frozen.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        let connections = self
            .state
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for connection in connections.iter() {
            connection.abort();
        }
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let connection = tokio::spawn(carry(client, state.clone()));
        let mut connections = state.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|c| !c.is_finished());
        connections.push(connection);
    }
}

/// One connection, both ways, until either side closes.
async fn carry(client: TcpStream, state: Arc<State>) {
    if state.mode() == Mode::CutOff {
        return hold(client).await;
    }
    let Ok(server) = TcpStream::connect(state.upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let conn = Arc::new(Connection {
        last_client_bytes: std::sync::Mutex::new(Instant::now()),
        streaming: AtomicU8::new(0),
        frozen: AtomicU8::new(0),
    });
    let up = pump(
        client_read,
        server_write,
        conn.clone(),
        state.clone(),
        Direction::Up,
    );
    let down = pump(server_read, client_write, conn, state, Direction::Down);
    // Either side closing ends the connection.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

async fn hold(client: TcpStream) {
    std::future::pending::<()>().await;
    drop(client);
}

struct Connection {
    last_client_bytes: std::sync::Mutex<Instant>,
    streaming: AtomicU8,
    frozen: AtomicU8,
}

/// Which way a pump carries bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// Carries one direction of a connection until either side closes it.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    conn: Arc<Connection>,
    state: Arc<State>,
    direction: Direction,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if direction == Direction::Up && conn.frozen.load(Ordering::SeqCst) == 1 {
            // A request on a frozen connection: close it.
            return;
        }
        if state.mode() == Mode::CutOff {
            std::future::pending::<()>().await;
        }
        note(&conn, direction);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if direction == Direction::Down
            && state.mode() == Mode::StallStreams
            && conn.streaming.load(Ordering::SeqCst) == 1
        {
            conn.frozen.store(1, Ordering::SeqCst);
            state.frozen.fetch_add(1, Ordering::SeqCst);
            // Frozen: the connection stays open, nothing more comes.
            std::future::pending::<()>().await;
        }
    }
}

/// What the bytes just read say about the connection: when the client last spoke, and
/// whether the server speaks on its own (a stream).
fn note(conn: &Connection, direction: Direction) {
    let mut last_client_bytes = conn
        .last_client_bytes
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match direction {
        Direction::Up => *last_client_bytes = Instant::now(),
        Direction::Down if last_client_bytes.elapsed() > LATE => {
            conn.streaming.store(1, Ordering::SeqCst);
        }
        Direction::Down => {}
    }
}
