//! The console's files, compiled into the binary (`include_bytes!`), each
//! with a strong ETag so a browser revalidates instead of downloading again.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// One file of the console.
#[derive(Debug)]
pub struct Asset {
    /// The name under `/ui/` (`""` is the page itself).
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// Quoted strong ETag: the first 128 bits of the SHA-256 of the body.
    pub etag: String,
}

/// (name, content type, body) of every file.
const FILES: [(&str, &str, &[u8]); 3] = [
    (
        "",
        "text/html; charset=utf-8",
        include_bytes!("../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/style.css"),
    ),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, content_type, body)| {
            let digest = Sha256::digest(body);
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            Asset {
                name,
                content_type,
                body,
                etag: format!("\"{hex}\""),
            }
        })
        .collect()
});

/// The asset at `name` (the path after `/ui/`; `index.html` is the page).
pub fn get(name: &str) -> Option<&'static Asset> {
    let name = if name == "index.html" { "" } else { name };
    ASSETS.iter().find(|asset| asset.name == name)
}

/// The Content-Security-Policy the console is served with: everything from
/// the node itself, nothing from anywhere else, no inline script.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_its_type_and_a_stable_etag() {
        let page = get("").expect("page");
        assert!(page.content_type.starts_with("text/html"));
        assert_eq!(get("index.html").map(|a| &a.etag), Some(&page.etag));
        assert!(
            get("app.js")
                .expect("js")
                .content_type
                .contains("javascript")
        );
        assert!(get("style.css").is_some());
        assert!(get("../Cargo.toml").is_none());
        assert!(get("missing.js").is_none());
        assert_eq!(page.etag.len(), 34);
    }

    #[test]
    fn the_page_loads_nothing_from_another_origin() {
        // No CDN: every script and stylesheet reference is relative, and the
        // script is a module.
        for asset in ASSETS.iter() {
            let text = String::from_utf8_lossy(asset.body);
            assert!(!text.contains("http://"), "{} names http://", asset.name);
            assert!(!text.contains("https://"), "{} names https://", asset.name);
            assert!(!text.contains("//cdn"), "{}", asset.name);
        }
        let page = String::from_utf8_lossy(get("").expect("page").body).into_owned();
        assert!(page.contains(r#"<script type="module" src="app.js">"#));
    }
}
