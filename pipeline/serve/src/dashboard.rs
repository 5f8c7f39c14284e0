//! The dashboard at `/`: one page, its script and its style, compiled into the binary (no
//! CDN, nothing fetched but the API's own routes). The page holds no data: its script asks
//! `/v1/timeline`, `/v1/drift` and `/v1/users/{id}` and draws SVG charts (resonance per
//! segment over time, segment sizes, the drift timeline with the scaling recommendations,
//! the persona map, forecast error over time) and a user lookup. Where the API needs a
//! token, the page asks for it (or takes it from the address, `/#token=...`) and keeps it in
//! the tab's session storage only.
//!
//! ```
//! let page = personaflow_serve::dashboard::PAGE;
//! assert!(page.contains("<script src=\"/dashboard.js\""));
//! assert!(!page.contains("https://"));
//! ```

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The page.
pub const PAGE: &str = include_str!("../assets/index.html");
/// The page's script.
pub const SCRIPT: &str = include_str!("../assets/dashboard.js");
/// The page's style.
pub const STYLE: &str = include_str!("../assets/dashboard.css");

/// Scripts, styles and requests from this server only; no frames, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /`.
pub fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// `GET /dashboard.js`.
pub fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /dashboard.css`.
pub fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in [("page", PAGE), ("script", SCRIPT), ("style", STYLE)] {
            // SVG's namespace is a name, not an address anything is fetched from.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(needle), "{name} holds {needle}");
            }
        }
    }

    #[test]
    fn every_element_the_script_looks_up_is_on_the_page() {
        // byId("...") is the script's only way to find the page's elements.
        for part in SCRIPT.split("byId(\"").skip(1) {
            let id = &part[..part.find('"').expect("a closing quote")];
            assert!(
                PAGE.contains(&format!("id=\"{id}\"")),
                "the script looks up #{id}, which the page lacks"
            );
        }
    }
}
