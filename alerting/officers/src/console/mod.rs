//! The duty-officer console: one HTML page, a script and a stylesheet, compiled into the
//! binary and served at `/console` next to the officer API it calls. Chinese and English, no
//! framework and no build step; it works on a phone screen.
//!
//! The page signs in with an officer token (typed in, or passed in the URL fragment, which
//! never reaches the server), lists the open cases of the officer's scope most severe and
//! newest first with a countdown to each escalation deadline, follows `/api/v1/events` live
//! with a sound and a flash for new and escalated cases, shows a case's timeline, devices,
//! building, nearest camera and escalation path, carries out every officer action, draws
//! the village's buildings coloured by their open cases, and shows duty officers and
//! commanders the current firmware rollout (read-only). A confirmed fire takes the console
//! over: a full-width banner on top of every view, a siren synthesised with the Web Audio API
//! that repeats until the fire is acknowledged, and a flashing tab title.
//!
//! The field's words (stages, severities, levels ...) are in `glossary.json`, which the page
//! loads and [`firegrid_base::glossary`] titles pages from: one word for one thing.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, get_service};

pub mod basemap;

pub use basemap::{Basemap, BasemapConfig, ConsoleConfig};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The vendored map libraries (`vendor/README.md`), under a path that names their version so
/// that browsers may keep them.
const VENDOR: &str = "/console/vendor/maplibre-gl-4.7.1+pmtiles-3.2.1";
const MAPLIBRE_JS: &str = include_str!("vendor/maplibre-gl-csp.js");
const MAPLIBRE_WORKER: &str = include_str!("vendor/maplibre-gl-csp-worker.js");
const MAPLIBRE_CSS: &str = include_str!("vendor/maplibre-gl.css");
const PMTILES_JS: &str = include_str!("vendor/pmtiles.js");

/// Only the page's own files and API (and a configured basemap's origins): no inline script.
/// MapLibre draws raster tiles from `blob:` images.
fn policy(origins: &[String]) -> String {
    let extra: String = origins.iter().map(|o| format!(" {o}")).collect();
    format!(
        "default-src 'self'; img-src 'self' data: blob:{extra}; connect-src 'self'{extra}; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
}

#[derive(Clone)]
struct Page {
    policy: HeaderValue,
}

impl Page {
    fn file(&self, content_type: &'static str, cache: &'static str, body: &'static str) -> Response {
        (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
                (header::CONTENT_SECURITY_POLICY, self.policy.clone()),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            ],
            body,
        )
            .into_response()
    }

    /// The page's own files: checked again on every load, so an upgrade shows at once.
    fn own(&self, content_type: &'static str, body: &'static str) -> Response {
        self.file(content_type, "no-cache", body)
    }

    /// A vendored library: its path changes with its version.
    fn vendored(&self, content_type: &'static str, body: &'static str) -> Response {
        self.file(content_type, "public, max-age=31536000, immutable", body)
    }
}

/// `/console` (and `/`, redirected there), `/console/cases/{id}` (the same page, opening on
/// the case), `/console/wall` (the same page in wall mode, for the command centre's big screen:
/// map, open fires, counts by stage, overdue cases), `/console/app.js`, `/console/app.css`,
/// `/console/glossary.json`, `/console/basemap.json` (the basemap, if any, and the vendored
/// MapLibre files under `/console/vendor/`), and with a basemap its archive
/// ([`basemap::PMTILES_PATH`], range requests answered with 206) and style file
/// ([`basemap::STYLE_PATH`]).
pub fn router<S: Clone + Send + Sync + 'static>(basemap: Option<Arc<Basemap>>) -> Router<S> {
    let origins = basemap.as_ref().map(|b| b.origins().to_vec()).unwrap_or_default();
    let page =
        Page { policy: HeaderValue::from_str(&policy(&origins)).expect("origins are ASCII serialisations") };
    let serve = |content_type: &'static str, body: &'static str, vendored: bool| {
        let page = page.clone();
        move || {
            let page = page.clone();
            async move { if vendored { page.vendored(content_type, body) } else { page.own(content_type, body) } }
        }
    };
    let html = serve("text/html; charset=utf-8", INDEX, false);
    let description = {
        let mut d = basemap
            .as_ref()
            .map_or_else(|| serde_json::json!({ "pmtiles": null, "style": null }), |b| b.describe());
        d["maplibre"] = format!("{VENDOR}/maplibre-gl-csp.js").into();
        d["worker"] = format!("{VENDOR}/maplibre-gl-csp-worker.js").into();
        d["css"] = format!("{VENDOR}/maplibre-gl.css").into();
        d["pmtiles_js"] = format!("{VENDOR}/pmtiles.js").into();
        axum::Json(d)
    };
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::temporary("/console") }))
        .route("/console", get(html.clone()))
        // Only a case number: anything else under /console/cases/ is a 404 (axum refuses a
        // path segment that does not parse).
        .route(
            "/console/cases/{id}",
            get({
                let html = html.clone();
                move |axum::extract::Path(_id): axum::extract::Path<u64>| html()
            }),
        )
        // The command centre's big screen: the same page in wall mode.
        .route("/console/wall", get(html))
        .route("/console/app.js", get(serve("text/javascript; charset=utf-8", SCRIPT, false)))
        .route("/console/app.css", get(serve("text/css; charset=utf-8", STYLE, false)))
        .route(
            "/console/glossary.json",
            get(serve("application/json; charset=utf-8", firegrid_base::glossary::JSON, false)),
        )
        .route("/console/basemap.json", get(move || async move { description }))
        .route(
            &format!("{VENDOR}/maplibre-gl-csp.js"),
            get(serve("text/javascript; charset=utf-8", MAPLIBRE_JS, true)),
        )
        .route(
            &format!("{VENDOR}/maplibre-gl-csp-worker.js"),
            get(serve("text/javascript; charset=utf-8", MAPLIBRE_WORKER, true)),
        )
        .route(
            &format!("{VENDOR}/maplibre-gl.css"),
            get(serve("text/css; charset=utf-8", MAPLIBRE_CSS, true)),
        )
        .route(
            &format!("{VENDOR}/pmtiles.js"),
            get(serve("text/javascript; charset=utf-8", PMTILES_JS, true)),
        );
    if let Some(basemap) = basemap {
        if let Some(archive) = &basemap.pmtiles {
            // Range requests (206 Partial Content), conditional requests and HEAD, from the
            // file as it is on disk now.
            let file =
                tower_http::services::ServeFile::new_with_mime(archive, &mime::APPLICATION_OCTET_STREAM);
            router = router.route_service(basemap::PMTILES_PATH, get_service(file));
        }
        if let Some(basemap::Style::File(path)) = &basemap.style {
            let path = path.clone();
            router = router.route(
                basemap::STYLE_PATH,
                get(move || {
                    let path = path.clone();
                    async move {
                        match tokio::task::spawn_blocking(move || basemap::read_style(&path)).await {
                            Ok(Ok(text)) => (
                                [
                                    (header::CONTENT_TYPE, "application/json"),
                                    (header::CACHE_CONTROL, "no-cache"),
                                ],
                                text,
                            )
                                .into_response(),
                            Ok(Err(message)) => {
                                tracing::warn!(%message, "The basemap style cannot be served.");
                                (
                                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                    "the basemap style cannot be read",
                                )
                                    .into_response()
                            }
                            Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                        }
                    }
                }),
            );
        }
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `data-t` key the page uses has a text in both languages, and the script's own
    /// lookups too (a missing key would show the raw key to an officer).
    #[test]
    fn every_text_key_exists_in_both_languages() {
        let keys_in = |text: &str, attr: &str| -> Vec<String> {
            text.split(attr).skip(1).filter_map(|rest| rest.split('"').nth(1).map(str::to_owned)).collect()
        };
        let mut keys = keys_in(INDEX, "data-t=");
        keys.extend(keys_in(INDEX, "data-tp="));
        // `t('key')` calls (not `get('name')`: the character before `t` is not a letter).
        keys.extend(SCRIPT.match_indices("t('").filter_map(|(at, _)| {
            let before = SCRIPT[..at].chars().next_back()?;
            let key = SCRIPT[at + 3..].split('\'').next()?;
            (!before.is_alphanumeric() && before != '.').then(|| key.to_owned())
        }));
        assert!(keys.len() > 60, "found only {} keys", keys.len());
        let zh = &SCRIPT[SCRIPT.find("zh: {").unwrap()..SCRIPT.find("en: {").unwrap()];
        let en = &SCRIPT[SCRIPT.find("en: {").unwrap()..SCRIPT.find("const GLOSSARY_PREFIX").unwrap()];
        // The field's words come from the glossary, under the prefixes the script merges them by.
        let prefixes = &SCRIPT[SCRIPT.find("const GLOSSARY_PREFIX").unwrap()
            ..SCRIPT.find("async function loadGlossary").unwrap()];
        let glossary = firegrid_base::glossary::Glossary::get();
        let prefixes: Vec<(&str, &str)> = prefixes
            .split(',')
            .filter_map(|pair| {
                let (group, prefix) = pair.split_once(':')?;
                Some((group.split_whitespace().last()?, prefix.trim().trim_matches('\'')))
            })
            .collect();
        assert!(prefixes.len() >= 9, "{prefixes:?}");
        let from_glossary = |key: &str| {
            prefixes
                .iter()
                .find_map(|(group, prefix)| Some(glossary.term(group, key.strip_prefix(prefix)?).is_some()))
        };
        for key in keys {
            if let Some(found) = from_glossary(&key) {
                assert!(found, "key {key:?} is not in the glossary");
                continue;
            }
            for (lang, table) in [("zh", zh), ("en", en)] {
                assert!(table.contains(&format!(" {key}: ")), "key {key:?} has no {lang} text");
            }
        }
    }
}
