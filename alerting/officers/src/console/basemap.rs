//! A real basemap under the console's village map, where the operator has one: MapLibre GL
//! (vendored into the binary, `vendor/`) drawing a configured style, or an offline PMTiles
//! archive the gateway serves itself with HTTP range requests. Without one the console draws
//! its own scatter of the buildings, as before.
//!
//! `[console.basemap]` in the gateway's config:
//! - `pmtiles`: a PMTiles (version 3) archive, served at [`PMTILES_PATH`]. A raster archive is
//!   drawn as it is; a vector archive without a style as outlines of its layers.
//! - `style`: a MapLibre style, either a JSON file (served at [`STYLE_PATH`], read on each
//!   request so an edit shows on the next load) or an `http(s)://` URL. A style that uses the
//!   archive names it `pmtiles:///console/basemap.pmtiles`.
//! - `origins`: further origins the style loads tiles, glyphs or sprites from. They and the
//!   style URL's origin are the only ones the console's content security policy admits.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the archive is served.
pub const PMTILES_PATH: &str = "/console/basemap.pmtiles";
/// Where a style file is served.
pub const STYLE_PATH: &str = "/console/basemap/style.json";

/// `[console]`: the console page.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The basemap under the village map (`[console.basemap]`). None: the buildings' scatter.
    #[serde(default)]
    pub basemap: Option<BasemapConfig>,
}

/// `[console.basemap]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasemapConfig {
    /// An offline PMTiles archive (version 3) the gateway serves.
    #[serde(default)]
    pub pmtiles: Option<PathBuf>,
    /// A MapLibre style: a JSON file, or an `http://` or `https://` URL.
    #[serde(default)]
    pub style: Option<String>,
    /// Further origins (`https://tiles.example.org`) the style loads from.
    #[serde(default)]
    pub origins: Vec<String>,
}

/// Where the style comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Style {
    /// A file the gateway serves at [`STYLE_PATH`].
    File(PathBuf),
    /// A URL the browser loads itself.
    Url(url::Url),
}

/// A checked `[console.basemap]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Basemap {
    /// The archive to serve.
    pub pmtiles: Option<PathBuf>,
    /// The style.
    pub style: Option<Style>,
    /// Origins besides the gateway's own, already in ASCII serialisation.
    pub origins: Vec<String>,
}

/// The PMTiles version 3 header starts with the magic `PMTiles` and the version byte 3
/// (PMTiles specification v3, section 3 "Header", github.com/protomaps/PMTiles spec/v3).
const PMTILES_MAGIC: &[u8; 8] = b"PMTiles\x03";

impl BasemapConfig {
    /// The checked basemap, or every problem with it.
    pub fn check(&self) -> Result<Basemap, Vec<String>> {
        let mut problems = Vec::new();
        if self.pmtiles.is_none() && self.style.is_none() {
            problems.push(
                "set pmtiles (an offline PMTiles archive), style (a MapLibre style), or both".to_owned(),
            );
        }
        if let Some(path) = &self.pmtiles
            && let Err(e) = check_archive(path)
        {
            problems.push(e);
        }
        let mut origins = Vec::new();
        let style = match self.style.as_deref().map(str::trim) {
            None => None,
            Some(text) if text.starts_with("http://") || text.starts_with("https://") => {
                match origin_of(text) {
                    Ok((url, origin)) => {
                        origins.push(origin);
                        Some(Style::Url(url))
                    }
                    Err(e) => {
                        problems.push(format!("style {text:?}: {e}"));
                        None
                    }
                }
            }
            Some(text) => {
                let path = PathBuf::from(text);
                match read_style(&path) {
                    Ok(_) => Some(Style::File(path)),
                    Err(e) => {
                        problems.push(e);
                        None
                    }
                }
            }
        };
        for text in &self.origins {
            match origin_of(text) {
                Ok((url, origin)) if url.path() == "/" && url.query().is_none() => origins.push(origin),
                Ok(_) => {
                    problems.push(format!("origin {text:?} has a path: an origin is scheme://host[:port]"))
                }
                Err(e) => problems.push(format!("origin {text:?}: {e}")),
            }
        }
        origins.sort();
        origins.dedup();
        if problems.is_empty() {
            Ok(Basemap { pmtiles: self.pmtiles.clone(), style, origins })
        } else {
            Err(problems)
        }
    }
}

fn check_archive(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| format!("pmtiles {}: {e}", path.display()))?;
    if &magic != PMTILES_MAGIC {
        return Err(format!(
            "pmtiles {}: not a PMTiles version 3 archive (it does not start with \"PMTiles\" and version 3; \
             convert older archives with `pmtiles convert`)",
            path.display()
        ));
    }
    Ok(())
}

/// The style file's text, checked to be a JSON object.
pub fn read_style(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("style {}: {e}", path.display()))?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(_)) => Ok(text),
        Ok(_) => Err(format!("style {}: a MapLibre style is a JSON object", path.display())),
        Err(e) => Err(format!("style {}: not JSON: {e}", path.display())),
    }
}

fn origin_of(text: &str) -> Result<(url::Url, String), String> {
    let url = url::Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("only http:// and https:// URLs with a host".to_owned());
    }
    Ok((url.clone(), url.origin().ascii_serialization()))
}

impl Basemap {
    /// What the console reads from `/console/basemap.json` (besides the vendored files).
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "pmtiles": self.pmtiles.as_ref().map(|_| PMTILES_PATH),
            "style": match &self.style {
                None => None,
                Some(Style::File(_)) => Some(STYLE_PATH.to_owned()),
                Some(Style::Url(url)) => Some(url.to_string()),
            },
        })
    }

    /// The sources the page may load from besides its own origin.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pmtiles: Option<&Path>, style: Option<&str>, origins: &[&str]) -> BasemapConfig {
        BasemapConfig {
            pmtiles: pmtiles.map(Path::to_owned),
            style: style.map(str::to_owned),
            origins: origins.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn an_archive_must_be_pmtiles_version_3_and_every_problem_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.pmtiles");
        std::fs::write(&good, b"PMTiles\x03rest of the header").unwrap();
        let v2 = dir.path().join("v2.pmtiles");
        std::fs::write(&v2, b"PM\x02\x00older").unwrap();
        let style = dir.path().join("style.json");
        std::fs::write(&style, r#"{"version": 8, "sources": {}, "layers": []}"#).unwrap();
        let array = dir.path().join("array.json");
        std::fs::write(&array, "[1]").unwrap();

        let ok = config(Some(&good), Some(style.to_str().unwrap()), &[]).check().unwrap();
        assert_eq!(ok.style, Some(Style::File(style.clone())));
        assert_eq!(ok.describe()["pmtiles"], PMTILES_PATH);
        assert_eq!(ok.describe()["style"], STYLE_PATH);
        assert!(ok.origins().is_empty());

        let problems =
            config(Some(&v2), Some(array.to_str().unwrap()), &["ftp://x", "https://a.example/tiles"])
                .check()
                .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("not a PMTiles version 3 archive"));
        assert!(problems[1].contains("a JSON object"));
        assert!(problems[2].contains("only http:// and https://"));
        assert!(problems[3].contains("has a path"));

        let missing = config(Some(&dir.path().join("none.pmtiles")), None, &[]).check().unwrap_err();
        assert!(missing[0].contains("none.pmtiles"), "{missing:?}");
        assert!(config(None, None, &[]).check().unwrap_err()[0].contains("set pmtiles"));
    }

    #[test]
    fn a_style_url_and_the_origins_are_what_the_page_may_load_from() {
        let ok = config(
            None,
            Some("https://tiles.example.org:8443/styles/street.json?v=2"),
            &["https://glyphs.example.org", "https://tiles.example.org:8443/"],
        )
        .check()
        .unwrap();
        assert_eq!(ok.origins(), ["https://glyphs.example.org", "https://tiles.example.org:8443"]);
        assert_eq!(ok.describe()["style"], "https://tiles.example.org:8443/styles/street.json?v=2");
        assert!(ok.describe()["pmtiles"].is_null());
    }
}
