//! The supervisor's end of the control socket ([`crate::ctl`]): binds it
//! (mode 0600, so the service user and root only), accepts a bounded number
//! of clients, checks each one's credentials, reads one bounded request
//! line with a deadline, and hands it to the core, whose answer it writes
//! back. Bad input gets an error answer; nothing a client sends reaches the
//! core except a parsed request.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::ctl::{Answer, Request, MAX_REQUEST};

/// Clients served at once; more are told so and closed.
const MAX_CLIENTS: usize = 16;
/// How long a client has to send its request line.
const READ_DEADLINE: Duration = Duration::from_secs(5);

/// A parsed request and where its answer goes.
pub(crate) struct Asked {
    pub request: Request,
    pub reply: oneshot::Sender<Answer>,
}

/// Binds the socket at `path`, replacing a stale file a previous
/// supervisor left.
///
/// # Errors
/// A live supervisor already listens there, or a socket call failed.
pub(crate) fn bind(path: &Path) -> std::io::Result<UnixListener> {
    crate::listen::remove_stale_socket(path)?;
    let listener = UnixListener::bind(path)?;
    // Before any client can connect, the file is the owner's alone (root
    // passes anyway); the peer check below is the second lock.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts clients until the process ends, passing their requests to
/// `core`.
pub(crate) async fn serve(listener: UnixListener, core: mpsc::UnboundedSender<Asked>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Descriptor exhaustion and the like: pause rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let busy = Answer::Error {
                error: "too many control clients at once; try again".into(),
            };
            let _ = tokio::time::timeout(READ_DEADLINE, write_answer(&mut stream, &busy)).await;
            continue;
        };
        let core = core.clone();
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(READ_DEADLINE, read_request(&mut stream)).await
            {
                Ok(Ok(request)) => ask_core(&core, request).await,
                Ok(Err(error)) => Answer::Error { error },
                Err(_) => Answer::Error {
                    error: format!("no request within {} s", READ_DEADLINE.as_secs()),
                },
            };
            let _ = write_answer(&mut stream, &answer).await;
            drop(permit);
        });
    }
}

/// Whether `uid` may use the socket: root, or the user the supervisor
/// runs as.
fn allowed(uid: u32) -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// The client's request, if it may ask and asked something known.
async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    match stream.peer_cred() {
        Ok(cred) if allowed(cred.uid()) => {}
        Ok(cred) => {
            return Err(format!(
                "uid {} may not use the control socket (root and the service user only)",
                cred.uid()
            ))
        }
        Err(e) => return Err(format!("cannot check the client's credentials: {e}")),
    }
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream).take(MAX_REQUEST as u64 + 1);
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Request::parse(&line)
}

async fn ask_core(core: &mpsc::UnboundedSender<Asked>, request: Request) -> Answer {
    let (reply, answer) = oneshot::channel();
    if core.send(Asked { request, reply }).is_err() {
        return Answer::Error {
            error: "the supervisor is exiting".into(),
        };
    }
    answer.await.unwrap_or_else(|_| Answer::Error {
        // The core dropped the request: a stop began while it waited.
        error: "the service is stopping; the reload was abandoned".into(),
    })
}

async fn write_answer(stream: &mut UnixStream, answer: &Answer) -> std::io::Result<()> {
    let mut line = serde_json::to_string(answer).map_err(std::io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    stream.shutdown().await
}
