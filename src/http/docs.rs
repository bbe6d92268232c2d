//! `GET /api/v1/docs`: the OpenAPI document as one browsable HTML page.
//!
//! Rendered on the server from the same document as `/api/v1/openapi.json`, so the two
//! cannot disagree, and self-contained (inline style, no script): Swagger UI bundles
//! (utoipa-swagger-ui) download their assets at build time or load them from a CDN, and
//! this service neither downloads while building nor sends its operators' browsers
//! elsewhere.

use std::fmt::Write;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::Value;
use utoipa::OpenApi;

use super::openapi::ApiDoc;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;max-width:62em;margin:2em auto;\
padding:0 1em;color:#222}code,pre{font:13px ui-monospace,monospace}pre{background:#f5f5f5;\
padding:.6em;overflow:auto}table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid \
#ccc;padding:.2em .5em;text-align:left;vertical-align:top}.m{display:inline-block;min-width:4em;\
font-weight:bold;text-transform:uppercase}section{border-top:1px solid #ddd;margin-top:1.2em}";

/// This OpenAPI document as one self-contained HTML page (an index of every operation,
/// then each with its parameters, body and answers, then the schemas).
#[utoipa::path(get, path = "/api/v1/docs", tag = "operations", responses(
    (status = 200, description = "The page", content_type = "text/html"),
    (status = 503, description = "overloaded: shed with the other reads under load",
        body = super::openapi::Problem, content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait")))))]
// The page is rendered once: the document does not change while the process runs.
pub async fn docs_page() -> HttpResponse {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page = PAGE.get_or_init(|| {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        render_page(&document)
    });
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page.as_str())
}

/// The whole page: title, an index of every operation, then each operation.
pub fn render_page(doc: &Value) -> String {
    let mut html = String::new();
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let version = doc["info"]["version"].as_str().unwrap_or("");
    let _ = write!(
        html,
        "<!doctype html><html lang=en><meta charset=utf-8><title>{t} API</title>\
         <style>{STYLE}</style><h1>{t} API <small>{v}</small></h1><p>{d}</p>\
         <p>Machine-readable: <a href=\"openapi.json\">openapi.json</a>. \
         Auth: <code>Authorization: Bearer &lt;token&gt;</code>.</p><h2>Operations</h2><table>",
        t = escape(title),
        v = escape(version),
        d = escape(doc["info"]["description"].as_str().unwrap_or("")),
    );
    let operations = operations(doc);
    for (method, path, op) in &operations {
        let _ = write!(
            html,
            "<tr><td class=m>{method}</td><td><a href=\"#{a}\"><code>{p}</code></a></td><td>{s}</td></tr>",
            a = anchor(method, path),
            p = escape(path),
            s = escape(summary(op)),
        );
    }
    html.push_str("</table>");
    for (method, path, op) in &operations {
        render_operation(&mut html, method, path, op);
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        html.push_str("<section><h2>Schemas</h2>");
        for (name, schema) in schemas {
            let _ = write!(
                html,
                "<h3 id=\"schema-{n}\">{n}</h3><pre>{s}</pre>",
                n = escape(name),
                s = escape(&serde_json::to_string_pretty(schema).unwrap_or_default()),
            );
        }
        html.push_str("</section>");
    }
    html.push_str("</html>\n");
    html
}

/// Every (method, path, operation) of the document, in path order.
pub fn operations(doc: &Value) -> Vec<(&'static str, &str, &Value)> {
    let mut found = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    found.push((method, path.as_str(), op));
                }
            }
        }
    }
    found
}

fn render_operation(html: &mut String, method: &str, path: &str, op: &Value) {
    let _ = write!(
        html,
        "<section id=\"{a}\"><h3><span class=m>{method}</span> <code>{p}</code></h3><p>{d}</p>",
        a = anchor(method, path),
        p = escape(path),
        d = escape(op["description"].as_str().unwrap_or_else(|| summary(op))),
    );
    if let Some(security) = op["security"].as_array().filter(|s| !s.is_empty()) {
        let names: Vec<String> = security
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|o| o.keys().cloned())
            .collect();
        let _ = write!(html, "<p>Auth: {}</p>", escape(&names.join(", ")));
    }
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        html.push_str(
            "<table><tr><th>parameter</th><th>in</th><th>required</th><th>meaning</th></tr>",
        );
        for p in params {
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(p["name"].as_str().unwrap_or("")),
                escape(p["in"].as_str().unwrap_or("")),
                if p["required"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                escape(p["description"].as_str().unwrap_or("")),
            );
        }
        html.push_str("</table>");
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        for (media, body) in content {
            let _ = write!(
                html,
                "<p>Body ({}): {}</p>",
                escape(media),
                schema_link(&body["schema"])
            );
        }
    }
    if let Some(responses) = op["responses"].as_object() {
        html.push_str(
            "<table><tr><th>status</th><th>meaning</th><th>headers</th><th>body</th></tr>",
        );
        for (status, response) in responses {
            let headers: Vec<String> = response["headers"]
                .as_object()
                .map(|h| {
                    h.keys()
                        .map(|k| format!("<code>{}</code>", escape(k)))
                        .collect()
                })
                .unwrap_or_default();
            let bodies: Vec<String> = response["content"]
                .as_object()
                .map(|c| {
                    c.iter()
                        .map(|(media, b)| body_cell(media, &b["schema"]))
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(status),
                escape(response["description"].as_str().unwrap_or("")),
                headers.join(" "),
                bodies.join(" "),
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</section>");
}

/// A response body: its schema, or its media type when it has none (an HTML page, text).
fn body_cell(media: &str, schema: &Value) -> String {
    if schema.is_null() {
        format!("<code>{}</code>", escape(media))
    } else {
        schema_link(schema)
    }
}

/// A `$ref` to a schema as a link to it; an inline schema as compact JSON.
fn schema_link(schema: &Value) -> String {
    if let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        let name = escape(name);
        return format!("<a href=\"#schema-{name}\">{name}</a>");
    }
    if let Some(items) = schema.get("items") {
        return format!("array of {}", schema_link(items));
    }
    format!("<code>{}</code>", escape(&schema.to_string()))
}

fn summary(op: &Value) -> &str {
    op["summary"].as_str().unwrap_or("")
}

fn anchor(method: &str, path: &str) -> String {
    let slug: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{method}{slug}")
}

/// HTML-escapes text and attribute values (the five characters that matter); a crate
/// for this would be a dependency for one loop.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn every_operation_of_the_document_is_on_the_page() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let page = render_page(&doc);
        let ops = operations(&doc);
        assert!(ops.len() > 10, "the document has the API's operations");
        for (method, path, _) in ops {
            assert!(
                page.contains(&format!("id=\"{}\"", anchor(method, path))),
                "{method} {path} has a section"
            );
        }
    }
}
