//! The mlbox web UI. The Leptos pages arrive with the UI issue; until then this crate renders the
//! one landing page the server shows at `/`, so the binary already has its UI seam.

/// The HTML served at `/` until the Leptos UI lands: it points at the API and health routes.
pub fn landing_page(version: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mlbox</title></head>\
         <body><h1>mlbox {version}</h1><p>The web UI is not built yet. The JSON API lives under \
         <a href=\"/api/v1/pipelines\">/api/v1</a>; health at <a href=\"/healthz\">/healthz</a>.</p></body></html>"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn landing_page_names_the_version_and_api() {
        let page = super::landing_page("9.9.9");
        assert!(page.contains("mlbox 9.9.9"));
        assert!(page.contains("/api/v1/pipelines"));
    }
}
