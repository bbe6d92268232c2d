//! `flashsale haproxy-map`: keeps HAProxy's shard map (deploy/haproxy.cfg) in step with
//! the cluster, so that a request whose path names a product goes straight to the
//! product's owner instead of costing a forwarding hop.
//!
//! HAProxy computes a product's shard itself (byte 1 of the SHA-256 of the id, as
//! [`super::shard_of`]) and looks it up in a map file of 256 lines at most, `SHARD
//! SERVER` (the shard as two upper-case hex digits, the name of the owner's `server`
//! line). This loop polls `GET /api/v1/cluster` (its `shards`: each shard's owner URL),
//! names each owner by the server line whose address is the owner's (`show servers
//! state` on HAProxy's stats socket), and, when the map changed, replaces HAProxy's
//! copy atomically through the runtime API (`prepare map`, `add map @version`, `commit
//! map`) and rewrites the file, which HAProxy reads on its next start. A shard without
//! an owner, or whose owner has no server line, has no entry: HAProxy's consistent
//! hashing places it and the instance forwards, as without the map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::SHARDS;

/// How long one exchange with HAProxy's socket may take.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);

/// The subcommand's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where to read the cluster's shard owners (`GET /api/v1/cluster`, with the
    /// operator token FLASHSALE_ADMIN_TOKEN): any instance, or HAProxy's frontend.
    /// Repeat it to name several; the first that answers is used.
    #[arg(long = "cluster-url", required = true)]
    pub cluster_urls: Vec<String>,
    /// HAProxy's stats socket (`stats socket … level admin` in its global section).
    #[arg(long)]
    pub socket: PathBuf,
    /// The map file, exactly as named in haproxy.cfg's `map(…)`.
    #[arg(long)]
    pub map: PathBuf,
    /// The backend whose `server` lines are the instances.
    #[arg(long, default_value = "by_product")]
    pub backend: String,
    /// Milliseconds between polls (a shard moves within a few lease rounds).
    #[arg(long, default_value_t = 1000)]
    pub every_ms: u64,
    /// Update once and exit.
    #[arg(long)]
    pub once: bool,
}

/// Runs the loop (for ever, or once with `--once`).
pub async fn run(token: &str, args: &Args) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut applied: Option<BTreeMap<usize, String>> = None;
    loop {
        match update(&client, token, args, applied.as_ref()).await {
            Ok(Some(map)) => {
                tracing::info!(entries = map.len(), "haproxy shard map updated");
                applied = Some(map);
            }
            Ok(None) => {}
            Err(e) if args.once => return Err(e),
            Err(e) => tracing::warn!(error = %e, "haproxy shard map not updated"),
        }
        if args.once {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(args.every_ms.max(50))).await;
    }
}

/// One poll: the map now, applied if it differs from `applied`. `Ok(Some(map))`: applied.
async fn update(
    client: &reqwest::Client,
    token: &str,
    args: &Args,
    applied: Option<&BTreeMap<usize, String>>,
) -> anyhow::Result<Option<BTreeMap<usize, String>>> {
    let owners = shard_owners(client, token, &args.cluster_urls).await?;
    let state = cli(
        &args.socket,
        &format!("show servers state {}\n", args.backend),
    )
    .await?;
    let servers = servers_by_address(&state)?;
    let map = shard_map(&owners, &servers);
    if applied == Some(&map) {
        return Ok(None);
    }
    write_file(&args.map, &map)?;
    replace_in_haproxy(&args.socket, &args.map, &map).await?;
    Ok(Some(map))
}

/// Each shard's owner URL (`None` while it moves), from the first URL that answers.
async fn shard_owners(
    client: &reqwest::Client,
    token: &str,
    urls: &[String],
) -> anyhow::Result<Vec<Option<String>>> {
    #[derive(serde::Deserialize)]
    struct View {
        shards: Vec<Option<String>>,
    }
    let mut last = anyhow::anyhow!("no --cluster-url");
    for url in urls {
        let asked = async {
            let answer = client
                .get(format!("{}/api/v1/cluster", url.trim_end_matches('/')))
                .bearer_auth(token)
                .send()
                .await?
                .error_for_status()?;
            let view: View = serde_json::from_slice(&answer.bytes().await?)?;
            if view.shards.len() != SHARDS {
                bail!("{} shards, not {SHARDS}", view.shards.len());
            }
            Ok(view.shards)
        };
        match asked.await {
            Ok(shards) => return Ok(shards),
            Err(e) => last = e.context(format!("GET {url}/api/v1/cluster")),
        }
    }
    Err(last)
}

/// `host:port` → server name, from `show servers state` (its header names the columns).
fn servers_by_address(state: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut lines = state.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .find(|l| l.starts_with("# be_id"))
        .context("no header in `show servers state`")?;
    let columns: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
    let at = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .with_context(|| format!("no {name} in `show servers state`"))
    };
    let (name, addr, port, fqdn) = (
        at("srv_name")?,
        at("srv_addr")?,
        at("srv_port")?,
        at("srv_fqdn")?,
    );
    let mut servers = BTreeMap::new();
    for line in lines.filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(n), Some(a), Some(p)) = (fields.get(name), fields.get(addr), fields.get(port))
        else {
            continue;
        };
        servers.insert(format!("{a}:{p}"), (*n).to_owned());
        if let Some(f) = fields.get(fqdn).filter(|f| **f != "-") {
            servers.insert(format!("{f}:{p}"), (*n).to_owned());
        }
    }
    Ok(servers)
}

/// Shard → server name, for the shards whose owner has a server line.
fn shard_map(
    owners: &[Option<String>],
    servers: &BTreeMap<String, String>,
) -> BTreeMap<usize, String> {
    owners
        .iter()
        .enumerate()
        .filter_map(|(shard, owner)| {
            let url = url::Url::parse(owner.as_deref()?).ok()?;
            let host = url
                .host_str()?
                .trim_start_matches('[')
                .trim_end_matches(']');
            let port = url.port_or_known_default()?;
            Some((shard, servers.get(&format!("{host}:{port}"))?.clone()))
        })
        .collect()
}

/// The map's lines, `SHARD SERVER`, as HAProxy's `hex` converter spells the shard.
fn map_lines(map: &BTreeMap<usize, String>) -> String {
    map.iter()
        .map(|(shard, server)| format!("{shard:02X} {server}\n"))
        .collect()
}

/// Writes the file whole or not at all (a new file renamed over the old).
fn write_file(path: &Path, map: &BTreeMap<usize, String>) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, map_lines(map)).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Replaces HAProxy's copy of the map at once: a new version filled, then committed.
async fn replace_in_haproxy(
    socket: &Path,
    map_file: &Path,
    map: &BTreeMap<usize, String>,
) -> anyhow::Result<()> {
    let file = map_file.display();
    let prepared = cli(socket, &format!("prepare map {file}\n")).await?;
    let version = prepared
        .trim()
        .strip_prefix("New version created:")
        .map(str::trim)
        .filter(|v| v.parse::<u32>().is_ok())
        .with_context(|| format!("prepare map {file}: {}", prepared.trim()))?
        .to_owned();
    if !map.is_empty() {
        // The payload form: one entry a line, ended by an empty line.
        let added = cli(
            socket,
            &format!("add map @{version} {file} <<\n{}\n", map_lines(map)),
        )
        .await?;
        if !added.trim().is_empty() {
            bail!("add map @{version} {file}: {}", added.trim());
        }
    }
    let committed = cli(socket, &format!("commit map @{version} {file}\n")).await?;
    if !committed.trim().is_empty() {
        bail!("commit map @{version} {file}: {}", committed.trim());
    }
    Ok(())
}

/// One command on HAProxy's stats socket (non-interactive: it answers and closes).
async fn cli(socket: &Path, command: &str) -> anyhow::Result<String> {
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(socket).await?;
        stream.write_all(command.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    tokio::time::timeout(SOCKET_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{} did not answer", socket.display()))?
        .with_context(|| format!("talking to {}", socket.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_named_by_their_server_lines() {
        let state = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state \
                     srv_uweight srv_iweight srv_time_since_last_change srv_check_status \
                     srv_check_result srv_check_health srv_check_state srv_agent_state \
                     bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord\n\
                     3 by_product 1 a 127.0.0.1 2 0 1 1 5 6 3 4 6 0 0 0 - 18701 -\n\
                     3 by_product 2 b 127.0.0.1 2 0 1 1 5 6 3 4 6 0 0 0 node-b 18702 -\n";
        let servers = servers_by_address(state).unwrap();
        assert_eq!(servers["127.0.0.1:18701"], "a");
        assert_eq!(servers["node-b:18702"], "b");
        let mut owners = vec![None; SHARDS];
        owners[0] = Some("http://127.0.0.1:18701".to_owned());
        owners[0x1f] = Some("http://node-b:18702".to_owned());
        owners[7] = Some("http://127.0.0.1:9999".to_owned());
        let map = shard_map(&owners, &servers);
        assert_eq!(map_lines(&map), "00 a\n1F b\n");
    }
}
