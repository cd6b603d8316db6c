//! The duty-officer console: one HTML page, a script and a stylesheet, compiled into the
//! binary and served at `/console` next to the officer API it calls. Chinese and English, no
//! framework and no build step; it works on a phone screen.
//!
//! The page signs in with an officer token (typed in, or passed in the URL fragment, which
//! never reaches the server), lists the open cases of the officer's scope most severe and
//! newest first with a countdown to each escalation deadline, follows `/api/v1/events` live
//! with a sound and a flash for new and escalated cases, shows a case's timeline, devices,
//! building, nearest camera and escalation path, carries out every officer action, and draws
//! the village's buildings coloured by their open cases. A confirmed fire takes the console
//! over: a full-width banner on top of every view, a siren synthesised with the Web Audio API
//! that repeats until the fire is acknowledged, and a flashing tab title.
//!
//! The field's words (stages, severities, levels ...) are in `glossary.json`, which the page
//! loads and [`crate::glossary`] titles pages from: one word for one thing.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Only the page's own files and API: no inline script, nothing from elsewhere.
const POLICY: &str =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

/// The page's address for one case, which notification links point to: the console opens
/// on that case once the officer has signed in.
pub fn case_url(console: &str, case: u64) -> String {
    let base = console.trim_end_matches('/');
    let base = base.strip_suffix("/console").unwrap_or(base);
    format!("{base}/console/cases/{case}")
}

/// `/console` (and `/`, redirected there), `/console/cases/{id}` (the same page, opening on
/// the case), `/console/wall` (the same page in wall mode, for the command centre's big screen:
/// map, open fires, counts by stage, overdue cases), `/console/app.js`, `/console/app.css`,
/// `/console/glossary.json`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/console") }))
        .route("/console", get(|| async { file("text/html; charset=utf-8", INDEX) }))
        // Only a case number: anything else under /console/cases/ is a 404 (axum refuses a
        // path segment that does not parse).
        .route(
            "/console/cases/{id}",
            get(|axum::extract::Path(_id): axum::extract::Path<u64>| async {
                file("text/html; charset=utf-8", INDEX)
            }),
        )
        // The command centre's big screen: the same page in wall mode.
        .route("/console/wall", get(|| async { file("text/html; charset=utf-8", INDEX) }))
        .route("/console/app.js", get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/app.css", get(|| async { file("text/css; charset=utf-8", STYLE) }))
        .route(
            "/console/glossary.json",
            get(|| async { file("application/json; charset=utf-8", crate::glossary::JSON) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_point_at_the_case_in_the_console_whatever_the_base() {
        for base in ["http://h:8080", "http://h:8080/", "http://h:8080/console", "http://h:8080/console/"] {
            assert_eq!(case_url(base, 7), "http://h:8080/console/cases/7", "{base}");
        }
        assert_eq!(case_url("https://x.example/fg/console", 1), "https://x.example/fg/console/cases/1");
    }

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
        let glossary = crate::glossary::Glossary::get();
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
