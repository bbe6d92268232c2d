//! The documentation tells the truth: docs/API.md lists exactly the operations of the
//! OpenAPI document, the README's walk is the script CI runs, `/api/v1/docs` renders the
//! document, and `--help` and the README name every variable the binary honours.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::spawn_app;

const BIN: &str = env!("CARGO_BIN_EXE_flashsale");

/// Operations of the contract (docs/API.md) that other branches are adding while this one
/// is written: served by none yet. Once one is in the OpenAPI document, the test below
/// fails until it is taken off this list, so the list cannot go stale.
const PENDING: &[(&str, &str)] = &[];

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
