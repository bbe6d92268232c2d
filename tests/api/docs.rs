//! The documentation tells the truth: docs/API.md lists exactly the operations of the
//! OpenAPI document, the README's walk is the script CI runs, `/api/v1/docs` renders the
//! document, `--help` names the variables the binary honours, and `flashsale audit` reads
//! the server's database or says which one it looked in (the real binary).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::helpers::{
    checkout_body, connect, fresh_database, listening_url, spawn_app, with_database,
};

const BIN: &str = env!("CARGO_BIN_EXE_flashsale");

/// Operations of the contract (docs/API.md) that other branches are adding while this one
/// is written: served by none yet. Once one is in the OpenAPI document, the test below
/// fails until it is taken off this list, so the list cannot go stale.
const PENDING: &[(&str, &str)] = &[
    ("POST", "/api/v1/products/{}/checkout"),
    ("POST", "/api/v1/webhooks"),
    ("GET", "/api/v1/webhooks"),
    ("GET", "/api/v1/webhooks/{}"),
    ("PATCH", "/api/v1/webhooks/{}"),
    ("DELETE", "/api/v1/webhooks/{}"),
    ("POST", "/api/v1/webhooks/{}/rotate-secret"),
    ("GET", "/api/v1/webhooks/{}/deliveries"),
    ("POST", "/api/v1/webhooks/{}/deliveries/{}/retry"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/cluster"),
];

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("Failed to read {path}: {e}"))
}

/// `/a/{id}/b` → `/a/{}/b`: parameter names are the document's business, not the index's.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            c if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// The rows of docs/API.md's operation index: "| `METHOD` | `path` | …".
fn documented_operations() -> BTreeSet<(String, String)> {
    repo_file("docs/API.md")
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            let (method, path) = (cells.get(1)?, cells.get(2)?);
            path.starts_with('/')
                .then(|| (method.to_uppercase(), normalize(path)))
        })
        .collect()
}

#[actix_web::test]
async fn docs_api_md_lists_exactly_the_operations_of_the_openapi_document() {
    let app = spawn_app().await;
    let doc: Value = app
        .get("/api/v1/openapi.json", "")
        .await
        .json()
        .await
        .unwrap();
    let served: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                .map(move |m| (m.to_uppercase(), normalize(path)))
        })
        .collect();
    let documented = documented_operations();
    let pending: BTreeSet<(String, String)> = PENDING
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert!(served.len() > 15, "the document lists the API: {served:?}");

    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "in openapi.json, not in docs/API.md's index: {undocumented:?}"
    );
    let unserved: Vec<_> = documented
        .difference(&served)
        .filter(|op| !pending.contains(*op))
        .collect();
    assert!(
        unserved.is_empty(),
        "in docs/API.md, not in openapi.json: {unserved:?}"
    );
    let landed: Vec<_> = pending.intersection(&served).collect();
    assert!(
        landed.is_empty(),
        "served now: take these off PENDING in tests/api/docs.rs: {landed:?}"
    );
    for op in &pending {
        assert!(
            documented.contains(op),
            "pending but not documented: {op:?}"
        );
    }
}

#[actix_web::test]
async fn the_docs_page_renders_every_operation_of_the_document() {
    let app = spawn_app().await;
    let doc: Value = app
        .get("/api/v1/openapi.json", "")
        .await
        .json()
        .await
        .unwrap();
    let response = app.get("/api/v1/docs", "").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(!page.contains("<script"), "self-contained, no script");
    assert!(
        !page.contains("src=\"http"),
        "nothing loaded from elsewhere"
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                page.contains(&format!(
                    "<span class=m>{method}</span> <code>{path}</code>"
                )),
                "{method} {path} is on the page"
            );
        }
    }
    assert!(
        doc["paths"]["/api/v1/docs"]["get"].is_object(),
        "the page is in the document"
    );
}

/// The lines of `text` strictly between the line `start` (or the first line after it that
/// opens a ```sh fence, if `fenced`) and the line `end`.
fn section(text: &str, start: &str, end: &str, fenced: bool) -> String {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(start)).skip(1);
    if fenced {
        lines
            .by_ref()
            .find(|l| l.trim() == "```sh")
            .expect("a ```sh block after the marker");
    }
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with(end)).collect();
    assert!(
        body.len() > 20,
        "a whole walk between {start:?} and {end:?}"
    );
    body.join("\n")
}

#[test]
fn the_readme_walk_is_the_script_ci_runs() {
    let script = section(
        &repo_file("loadtests/walkthrough.sh"),
        "# --- walk begins ---",
        "# --- walk ends ---",
        false,
    );
    let readme = section(&repo_file("README.md"), "<!-- walk:", "```", true);
    assert!(
        readme == script,
        "README.md's walk block and loadtests/walkthrough.sh's walk differ; first differing line: {:?}",
        readme
            .lines()
            .zip(script.lines())
            .find(|(a, b)| a != b)
            .or(Some(("(one is longer)", "")))
    );
}

#[test]
fn nothing_links_the_contract_outside_the_repository() {
    for path in [
        "README.md",
        "docs/API.md",
        "docs/ARCHITECTURE.md",
        "src/http/openapi.rs",
        "loadtests/README.md",
        "loadtests/locust/README.md",
    ] {
        assert!(
            !repo_file(path).contains("shared/API.md"),
            "{path} links ../shared/API.md"
        );
    }
}

#[test]
fn help_and_readme_list_every_variable_honoured() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    // Every variable our own code reads, and the SDK's that apply to a trace exporter.
    let telemetry = repo_file("src/telemetry.rs");
    let ours = telemetry
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|word| word.starts_with("OTEL_"));
    let sdk = [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_SAMPLER",
        "OTEL_BSP_SCHEDULE_DELAY",
    ];
    for var in ours.chain(sdk).chain(["RUST_LOG"]) {
        assert!(help.contains(var), "--help names {var}");
    }
    // Every setting's variable in --help, and in the README's settings table with its
    // default.
    let readme = repo_file("README.md");
    let command = <flashsale::config::Settings as clap::CommandFactory>::command();
    let settings: Vec<_> = command
        .get_arguments()
        .filter_map(|a| Some((a.get_env()?, a)))
        .collect();
    assert!(settings.len() > 20, "every setting reads a variable");
    for (var, arg) in settings {
        let var = var.to_str().unwrap();
        assert!(help.contains(var), "--help names {var}");
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{var}` |")))
            .unwrap_or_else(|| panic!("README's settings table has {var}"));
        let default_cell = row.split('|').nth(2).unwrap();
        for default in arg.get_default_values() {
            let default = default.to_str().unwrap();
            assert!(
                default_cell.contains(default),
                "README gives {var}'s default {default}: {row}"
            );
        }
    }
}

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
