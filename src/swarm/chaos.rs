//! A server run from a shell command, SIGKILLed and restarted on a period.

use super::*;

/// A server started from a shell command, which can be killed and restarted.
pub(super) struct ChaosServer {
    command: String,
    pub(super) address: String,
    child: Option<tokio::process::Child>,
    restarts: Arc<parking_lot::Mutex<Vec<u64>>>,
    killer: Option<tokio::task::JoinHandle<()>>,
    shared_child: Arc<tokio::sync::Mutex<Option<tokio::process::Child>>>,
}

impl ChaosServer {
    /// Starts the server; with `{listen}` in the command, on `listen` (port 0 allowed) and then
    /// always on the address it reported, so clients find every successor where they left.
    pub(super) async fn start(command: String, listen: String) -> Result<ChaosServer, String> {
        let (child, address) = spawn_server(&command, &listen).await?;
        Ok(ChaosServer {
            command,
            address,
            child: None,
            restarts: Arc::new(parking_lot::Mutex::new(Vec::new())),
            killer: None,
            shared_child: Arc::new(tokio::sync::Mutex::new(Some(child))),
        })
    }

    /// Starts SIGKILLing and restarting the server every `period`.
    pub(super) fn start_killing(
        &mut self,
        period: Duration,
        started: Instant,
    ) -> tokio::task::JoinHandle<()> {
        let command = self.command.clone();
        let address = self.address.clone();
        let restarts = self.restarts.clone();
        let child = self.shared_child.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let mut slot = child.lock().await;
                if let Some(mut running) = slot.take() {
                    let _ = running.kill().await;
                }
                restarts.lock().push(started.elapsed().as_secs());
                match spawn_server(&command, &address).await {
                    Ok((running, _)) => *slot = Some(running),
                    Err(error) => tracing::error!(%error, "chaos: cannot restart the server"),
                }
                drop(slot);
            }
        })
    }

    pub(super) fn restart_seconds(&self) -> Vec<u64> {
        self.restarts.lock().clone()
    }

    pub(super) async fn ensure_running(&mut self) -> Result<(), String> {
        let mut slot = self.shared_child.lock().await;
        let alive = match slot.as_mut() {
            Some(child) => child
                .try_wait()
                .map(|status| status.is_none())
                .unwrap_or(false),
            None => false,
        };
        if !alive {
            *slot = Some(spawn_server(&self.command, &self.address).await?.0);
            return Ok(());
        }
        drop(slot);
        wait_until_listening(&self.address).await
    }

    pub(super) fn stop(&mut self) {
        if let Some(killer) = self.killer.take() {
            killer.abort();
        }
        if let Ok(mut slot) = self.shared_child.try_lock() {
            if let Some(child) = slot.as_mut() {
                let _ = child.start_kill();
            }
        }
        let _ = self.child.take();
    }
}

impl Drop for ChaosServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the server command with `{listen}` replaced by `listen`. When the command has that
/// placeholder, the server is waited for by its ready line (`bank-server listening on ADDR`, the
/// address it bound, so `listen` may name port 0) and the address is returned; otherwise the
/// server is expected at `listen` itself.
pub(super) async fn spawn_server(
    command: &str,
    listen: &str,
) -> Result<(tokio::process::Child, String), String> {
    use tokio::io::AsyncBufReadExt;
    let reports = command.contains(LISTEN_PLACEHOLDER);
    let command = command.replace(LISTEN_PLACEHOLDER, listen);
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdout(if reports {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    let Some(stdout) = child.stdout.take() else {
        wait_until_listening(listen).await?;
        return Ok((child, listen.to_string()));
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(address) = line.trim().strip_prefix("bank-server listening on ") {
                return Some(address.to_string());
            }
        }
        None
    };
    let address = tokio::time::timeout(SERVER_START_TIMEOUT, ready)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| format!("{command:?} did not report the address it listens on"))?;
    // Keep reading what else it prints, so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, address))
}

/// In `--server-cmd`, where the address to listen on goes (see `spawn_server`).
pub const LISTEN_PLACEHOLDER: &str = "{listen}";

/// How long a started server may take to listen.
pub(super) const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn wait_until_listening(address: &str) -> Result<(), String> {
    let deadline = Instant::now() + SERVER_START_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("the server did not start listening on {address}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
