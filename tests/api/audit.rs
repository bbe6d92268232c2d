//! `flashsale audit ORDER_ID`, the real binary: it reads the server's database (running
//! or stopped) or says which one it looked in, and never creates one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::helpers::{checkout_body, connect, fresh_database, listening_url, with_database};

const BIN: &str = env!("CARGO_BIN_EXE_flashsale");

/// A folder of its own under the test temp folder (removed first if a run left it).
fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("docs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `flashsale audit ORDER` with these variables, from `cwd`, with no DATABASE_URL unless
/// given; returns exit status, stdout and stderr.
fn audit(cwd: &Path, order: &str, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["audit", order])
        .current_dir(cwd)
        .env_remove("DATABASE_URL")
        .env_remove("FLASHSALE_DATA_DIR")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LOG", "warn");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn audit_in_a_folder_without_a_database_names_it_and_creates_nothing() {
    let cwd = scratch("elsewhere");
    let output = audit(&cwd, "ord_x", &[]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    let looked_in = cwd.canonicalize().unwrap().join(".flashsale");
    assert!(
        stderr.contains(&looked_in.display().to_string()),
        "names the folder: {stderr}"
    );
    assert!(stderr.contains("holds no private PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("order_audit"), "{stderr}");
    assert!(!looked_in.exists(), "no data folder was made");

    let given = cwd.join("data");
    let output = audit(
        &cwd,
        "ord_x",
        &[("FLASHSALE_DATA_DIR", given.to_str().unwrap())],
    );
    assert!(text(&output.stderr).contains(given.to_str().unwrap()));
    assert!(!given.exists(), "no cluster, no folder");
    std::fs::remove_dir_all(&cwd).unwrap();
}

#[actix_web::test]
async fn audit_on_a_database_without_flashsale_tables_or_order_says_which_database() {
    let migrated = fresh_database().await;
    let empty = format!("t_{}", uuid::Uuid::new_v4().simple());
    connect(&migrated)
        .await
        .batch_execute(&format!("CREATE DATABASE {empty}"))
        .await
        .unwrap();
    let cwd = scratch("empty-db");
    let output = audit(
        &cwd,
        "ord_x",
        &[("DATABASE_URL", &with_database(&migrated, &empty))],
    );
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("database {empty} on")), "{stderr}");
    assert!(stderr.contains("no flashsale tables"), "{stderr}");

    let output = audit(&cwd, "ord_nope", &[("DATABASE_URL", &migrated)]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no order ord_nope in DATABASE_URL (database t_"),
        "{stderr}"
    );
    let password_free =
        !migrated.contains('@') || !stderr.contains(migrated.split('@').next().unwrap());
    assert!(
        password_free,
        "the URL's credentials are not printed: {stderr}"
    );
    std::fs::remove_dir_all(&cwd).unwrap();
}

/// The audit of an order made through the real binary, from another directory: first
/// while the server runs (its private PostgreSQL), then after it stopped (the cluster is
/// started for the audit and stopped again).
#[actix_web::test]
async fn audit_finds_the_servers_private_database_running_or_stopped() {
    let data = scratch("private");
    let elsewhere = scratch("cwd");
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut child = Command::new(BIN)
        .env_remove("DATABASE_URL")
        .env("FLASHSALE_DATA_DIR", &data)
        .env("FLASHSALE_LISTEN", "127.0.0.1:0")
        .env("FLASHSALE_ADMIN_TOKEN", "op_docs_test")
        .env("FLASHSALE_SEED_DEMO", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let base = listening_url(&mut child).await;
    let client = reqwest::Client::new();
    let store: Value = client
        .post(format!("{base}/api/v1/stores"))
        .bearer_auth("op_docs_test")
        .json(&json!({"name": "Audit", "plan": "enterprise"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (admin, storefront) = (
        store["api_keys"]["admin"].as_str().unwrap(),
        store["api_keys"]["storefront"].as_str().unwrap(),
    );
    let product: Value = client
        .post(format!("{base}/api/v1/products"))
        .bearer_auth(admin)
        .json(&json!({"sku": "a", "name": "A", "price_cents": 100, "currency": "EUR", "stock": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order: Value = client
        .post(format!("{base}/api/v1/checkout"))
        .bearer_auth(storefront)
        .header("Idempotency-Key", "audit-1")
        .json(&checkout_body(product["id"].as_str().unwrap(), 1, "ann"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order_id = order["id"].as_str().unwrap().to_owned();
    let data_var = [("FLASHSALE_DATA_DIR", data.to_str().unwrap())];

    let running = audit(&elsewhere, &order_id, &data_var);
    let stdout = text(&running.stdout);
    assert!(running.status.success(), "{}", text(&running.stderr));
    assert!(
        stdout.starts_with(&format!("order {order_id}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("created") && stdout.contains("status=confirmed"),
        "{stdout}"
    );
    assert!(child.try_wait().unwrap().is_none(), "the server still runs");

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap()
        .success());
    let stopped = audit(&elsewhere, &order_id, &data_var);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    assert_eq!(
        text(&stopped.stdout),
        stdout,
        "the same history from the stopped cluster"
    );
    let cluster = flashsale::db::embedded::EmbeddedPostgres::existing_cluster(&data).unwrap();
    assert!(
        !cluster.join("pgdata/postmaster.pid").exists(),
        "the cluster started for the audit was stopped again"
    );
    let _ = std::fs::remove_dir_all(&cluster);
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&elsewhere);
}
