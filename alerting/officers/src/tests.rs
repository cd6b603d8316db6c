//! Directory tests: TOML in, officers or located problems out, through `check`; tokens in,
//! officers or refusals out, through `check_auth`; paging, reloading and token issue.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use firegrid_alerting::{Level, Location};
use tokio_util::sync::CancellationToken;

use super::*;

/// An `[[officer]]` table whose token is `token-<id>`, with the given extra lines.
fn officer(id: &str, scope: &str, extra: &str) -> String {
    format!(
        "[[officer]]\nid = \"{id}\"\nname = \"Officer {id}\"\nrole = \"grid_leader\"\nscope = \"{scope}\"\n\
         on_duty = true\ntoken_sha256 = \"{}\"\n{extra}",
        token_sha256_hex(&format!("token-{id}"))
    )
}

/// Parses `text`; `expected` is either the officer ids in order or every problem message.
fn check(text: &str, expected: Result<&[&str], &[&str]>) {
    let got = match Directory::from_toml(text) {
        Ok(d) => Ok(d.officers().iter().map(|o| o.id.clone()).collect::<Vec<_>>()),
        Err(DirectoryError::Invalid(errors)) => Err(errors.iter().map(ToString::to_string).collect()),
        Err(e) => panic!("unexpected error {e}"),
    };
    let expected = expected
        .map(|ids| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(|errs| errs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(got, expected, "for\n{text}");
}

#[test]
fn good_files_load() {
    check("", Ok(&[]));
    check("# nobody yet\n", Ok(&[]));
    check(&officer("a", "grid:G1", ""), Ok(&["a"]));
    // Windows editors may start the file with a byte-order mark.
    check(&format!("\u{feff}{}", officer("a", "grid:G1", "")), Ok(&["a"]));
    check(
        &format!(
            "{}{}{}",
            officer("g1.leader_2", "grid:G1", "channels = [\"sms-1\", \"dingtalk-g1\"]\n"),
            officer("C1-duty", "community:社区甲", "channels = []\n"),
            officer("x", "district:Xishan", ""),
        ),
        Ok(&["g1.leader_2", "C1-duty", "x"]),
    );
    // Upper-case hex is the same hash.
    let upper = officer("a", "grid:G1", "")
        .replace(&token_sha256_hex("token-a"), &token_sha256_hex("token-a").to_uppercase());
    let d = Directory::from_toml(&upper).unwrap();
    assert_eq!(d.get("a").unwrap().token_sha256, token_sha256("token-a"));
}

#[test]
fn fields_are_typed() {
    let d = Directory::from_toml(&format!(
        "{}role = \"viewer\"\n",
        officer("v", "street:Fuhai", "channels = [\"sms-v\"]\n").replace("role = \"grid_leader\"\n", "")
    ))
    .unwrap();
    let v = d.get("v").unwrap();
    assert_eq!(
        *v,
        OfficerEntry {
            id: "v".into(),
            name: "Officer v".into(),
            role: Role::Viewer,
            scope: Scope { level: Level::Street, name: "Fuhai".into() },
            on_duty: true,
            token_sha256: token_sha256("token-v"),
            channels: vec!["sms-v".into()],
        }
    );
    assert!(!v.may_act());
    assert_eq!(v.officer(), Officer { id: "v".into(), scope: "street:Fuhai".parse().unwrap() });
    assert!(v.officer().scope.covers(&Location { street: "Fuhai".into(), ..Location::default() }));
    assert!(d.get("w").is_none());
    assert_eq!((d.len(), d.is_empty()), (1, false));
}

#[test]
fn roles() {
    let acting: Vec<_> = Role::ALL.into_iter().filter(|r| r.may_act()).map(Role::as_str).collect();
    assert_eq!(acting, ["grid_leader", "grid_worker", "duty_officer", "commander"]);
    let administering: Vec<_> =
        Role::ALL.into_iter().filter(|r| r.may_administer_devices()).map(Role::as_str).collect();
    assert_eq!(administering, ["duty_officer", "commander"]);
    // Every role's name is what the file accepts.
    for role in Role::ALL {
        let text = officer("a", "grid:G1", "").replace("grid_leader", role.as_str());
        assert_eq!(Directory::from_toml(&text).unwrap().get("a").unwrap().role, role);
    }
}

#[test]
fn a_syntax_error_is_reported_alone_with_its_place() {
    check(
        &format!("{}name = \"again\n", officer("a", "grid:G1", "")),
        Err(&["line 8, column 14: TOML syntax: invalid basic string, expected `\"`"]),
    );
    check("[[officer]]\nid = \"a\"\nid = \"b\"\n", Err(&["line 3, column 1: TOML syntax: duplicate key"]));
}

#[test]
fn each_problem_kind() {
    let a = || officer("a", "grid:G1", "");
    check(
        &format!("{}nmae = \"typo\"\n", a()),
        Err(&[
            "line 8, column 1: unknown field `nmae`, expected one of `id`, `name`, `role`, `scope`, `on_duty`, `token_sha256`, `channels`",
        ]),
    );
    check(&a().replace("on_duty = true\n", ""), Err(&["line 1, column 1: missing field `on_duty`"]));
    check(
        &a().replace("grid_leader", "boss"),
        Err(&[
            "line 4, column 8: unknown variant `boss`, expected one of `grid_leader`, `grid_worker`, `duty_officer`, `commander`, `viewer`",
        ]),
    );
    check(
        &a().replace("on_duty = true", "on_duty = \"yes\""),
        Err(&["line 6, column 11: invalid type: string \"yes\", expected a boolean"]),
    );
    check(
        &officer("a b", "grid:G1", ""),
        Err(&["line 2, column 6: id \"a b\" must be 1 to 64 of A-Z a-z 0-9 . _ -"]),
    );
    check(
        &officer(&"x".repeat(65), "grid:G1", ""),
        Err(&[&format!("line 2, column 6: id \"{}\" must be 1 to 64 of A-Z a-z 0-9 . _ -", "x".repeat(65))]),
    );
    check(&a().replace("Officer a", " "), Err(&["line 3, column 8: name must not be empty"]));
    check(
        &officer("a", "block:G1", ""),
        Err(&[
            "line 5, column 9: scope \"block:G1\" is not `level:name` with level one of grid, community, street, district",
        ]),
    );
    check(
        &officer("a", "grid:", ""),
        Err(&[
            "line 5, column 9: scope \"grid:\" is not `level:name` with level one of grid, community, street, district",
        ]),
    );
    let hash = token_sha256_hex("token-a");
    check(
        &a().replace(&hash, &hash[1..]),
        Err(&[
            "line 7, column 16: token_sha256 must be 64 hex digits (the SHA-256 of the token), this has a different length",
        ]),
    );
    check(
        &a().replace(&hash, &format!("{}g", &hash[1..])),
        Err(&[
            "line 7, column 16: token_sha256 must be 64 hex digits (the SHA-256 of the token), this has a character that is not 0-9 a-f A-F",
        ]),
    );
    // A token pasted where its hash belongs is caught by the length check.
    check(
        &a().replace(&hash, "o9rkfjEUxwFnalhAspcewblzKO38rtUHgaxDkgTerJ0"),
        Err(&[
            "line 7, column 16: token_sha256 must be 64 hex digits (the SHA-256 of the token), this has a different length",
        ]),
    );
    check(
        &officer("a", "grid:G1", "channels = [\"sms\", \" \"]\n"),
        Err(&["line 8, column 20: channel names must not be empty"]),
    );
    check(
        &format!("title = \"officers\"\n{}", a()),
        Err(&["line 1, column 1: unknown key \"title\"; a directory holds only [[officer]] tables"]),
    );
    check(
        &a().replace("[[officer]]", "[officer]"),
        Err(&["line 1, column 1: `officer` must be written as [[officer]] tables"]),
    );
    check("officer = [1, 2]\n", Err(&["line 1, column 11: `officer` must be written as [[officer]] tables"]));
}

#[test]
fn duplicates_name_the_first_line() {
    let b_with_as_token =
        officer("b", "grid:G2", "").replace(&token_sha256_hex("token-b"), &token_sha256_hex("token-a"));
    check(
        &format!("{}{}{}", officer("a", "grid:G1", ""), officer("a", "grid:G2", ""), b_with_as_token),
        Err(&[
            "line 9, column 6: id \"a\" is already used on line 2",
            // A block copied without changing its token.
            "line 14, column 16: officer \"a\" has the same token_sha256 as \"a\" on line 7; every officer needs their own token",
            "line 21, column 16: officer \"b\" has the same token_sha256 as \"a\" on line 7; every officer needs their own token",
        ]),
    );
}

#[test]
fn every_problem_is_listed_in_file_order() {
    let hash = token_sha256_hex("token-c");
    check(
        &format!(
            "{}{}{}{}",
            officer("a", "grid:G1", "extra = 1\n"),
            officer("b!", "street", ""),
            officer("c", "grid:G3", "").replace(&hash, "00"),
            officer("d", "grid:G4", ""),
        ),
        Err(&[
            "line 8, column 1: unknown field `extra`, expected one of `id`, `name`, `role`, `scope`, `on_duty`, `token_sha256`, `channels`",
            "line 10, column 6: id \"b!\" must be 1 to 64 of A-Z a-z 0-9 . _ -",
            "line 13, column 9: scope \"street\" is not `level:name` with level one of grid, community, street, district",
            "line 22, column 16: token_sha256 must be 64 hex digits (the SHA-256 of the token), this has a different length",
        ]),
    );
    // The error's own text lists them one per line.
    let e = Directory::from_toml(&officer("a b", "x", "")).unwrap_err().to_string();
    assert!(e.starts_with("officer directory refused:\nline 2, column 6: id"), "{e}");
    assert_eq!(e.lines().count(), 3, "{e}");
}

/// Authenticates the `Authorization` header value `header` against `directory`.
fn check_auth(directory: &Directory, header: Option<&str>, expected: Result<&str, AuthError>) {
    let got = bearer(header).and_then(|token| directory.authenticate(token)).map(|o| o.id.as_str());
    assert_eq!(got, expected, "for {header:?}");
}

#[test]
fn authentication() {
    let d = Directory::from_toml(&format!(
        "{}{}",
        officer("a", "grid:G1", ""),
        officer("b", "grid:G2", "").replace("on_duty = true", "on_duty = false")
    ))
    .unwrap();
    check_auth(&d, Some("Bearer token-a"), Ok("a"));
    // The scheme is case-insensitive; spaces around are tolerated.
    check_auth(&d, Some("  bearer   token-a "), Ok("a"));
    check_auth(&d, Some("BEARER token-a"), Ok("a"));
    // Off duty still logs in.
    check_auth(&d, Some("Bearer token-b"), Ok("b"));
    check_auth(&d, Some("Bearer token-c"), Err(AuthError::Unknown));
    check_auth(&d, Some("Bearer token-a="), Err(AuthError::Unknown));
    check_auth(&d, Some("Bearer TOKEN-A"), Err(AuthError::Unknown));
    check_auth(&d, None, Err(AuthError::Missing));
    check_auth(&d, Some(""), Err(AuthError::Missing));
    check_auth(&d, Some("   "), Err(AuthError::Missing));
    check_auth(&d, Some("Bearer"), Err(AuthError::Malformed));
    check_auth(&d, Some("Bearer "), Err(AuthError::Malformed));
    check_auth(&d, Some("Basic dXNlcjpwYXNz"), Err(AuthError::Malformed));
    check_auth(&d, Some("token-a"), Err(AuthError::Malformed));
    check_auth(&d, Some("Bearer token a"), Err(AuthError::Malformed));
    check_auth(&d, Some("Bearer tok=en-a"), Err(AuthError::Malformed));
    check_auth(&d, Some("Bearer ==="), Err(AuthError::Malformed));
    check_auth(&d, Some("Bearer 令牌"), Err(AuthError::Malformed));
    check_auth(&d, Some(&format!("Bearer {}", "a".repeat(257))), Err(AuthError::Malformed));
    // Tokens from other tools (hex, standard base64 with padding) are accepted.
    let hex_token = "9f".repeat(32);
    let d2 = Directory::from_toml(
        &officer("h", "grid:G1", "").replace(&token_sha256_hex("token-h"), &token_sha256_hex(&hex_token)),
    )
    .unwrap();
    check_auth(&d2, Some(&format!("Bearer {hex_token}")), Ok("h"));
    let b64_token = "ab+/cd==";
    let d3 = Directory::from_toml(
        &officer("p", "grid:G1", "").replace(&token_sha256_hex("token-p"), &token_sha256_hex(b64_token)),
    )
    .unwrap();
    check_auth(&d3, Some("Bearer ab+/cd=="), Ok("p"));
    // Refusals say how to answer (RFC 6750).
    assert!(AuthError::Unknown.challenge().contains("error=\"invalid_token\""));
    assert!(AuthError::Malformed.challenge().contains("error=\"invalid_request\""));
    assert!(!AuthError::Missing.challenge().contains("error="));
}

#[test]
fn the_example_file_loads_and_its_tokens_log_in() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/officers.example.toml");
    let d = Directory::load(path).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let tokens: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# token for testing only: ")).collect();
    assert_eq!(tokens.len(), d.len());
    // Each test token logs in as the officer it is written above.
    let logged_in: Vec<&str> = tokens.iter().map(|t| d.authenticate(t).unwrap().id.as_str()).collect();
    let ids: Vec<&str> = d.officers().iter().map(|o| o.id.as_str()).collect();
    assert_eq!(logged_in, ids);
    check_auth(&d, Some("Bearer o9rkfjEUxwFnalhAspcewblzKO38rtUHgaxDkgTerJ0"), Ok("g1-leader"));
    // One officer at each level, and one viewer.
    let mut levels: Vec<Level> = d.officers().iter().map(|o| o.scope.level).collect();
    levels.dedup();
    assert_eq!(levels, [Level::Grid, Level::Community, Level::Street, Level::District]);
    assert_eq!(d.officers().iter().filter(|o| o.role == Role::Viewer).count(), 1);
    assert_eq!(d.on_duty_channels(&"community:C1".parse().unwrap()), ["sms-c1-duty", "dingtalk-c1"]);
}

#[test]
fn on_duty_channels_page_exactly_the_desk() {
    let d = Directory::from_toml(&format!(
        "{}{}{}{}{}{}",
        officer("c1-day", "community:C1", "channels = [\"sms-day\", \"group-c1\"]\n"),
        officer("c1-night", "community:C1", "channels = [\"sms-night\", \"group-c1\"]\n"),
        officer("c1-off", "community:C1", "channels = [\"sms-off\"]\n")
            .replace("on_duty = true", "on_duty = false"),
        officer("c1-screen", "community:C1", "channels = [\"sms-screen\"]\n")
            .replace("grid_leader", "viewer"),
        officer("g1", "grid:G1", "channels = [\"sms-g1\"]\n"),
        officer("fuhai", "street:Fuhai", "channels = [\"sms-fuhai\"]\n"),
    ))
    .unwrap();
    let channels = |desk: &str| d.on_duty_channels(&desk.parse().unwrap());
    // Both on-duty officers, the shared group once; not the off-duty one, not the viewer,
    // not the grid below nor the street above.
    assert_eq!(channels("community:C1"), ["sms-day", "group-c1", "sms-night"]);
    assert_eq!(channels("grid:G1"), ["sms-g1"]);
    assert_eq!(channels("street:Fuhai"), ["sms-fuhai"]);
    assert!(channels("community:C2").is_empty());
    // A name at another level is another desk.
    assert!(channels("grid:C1").is_empty());
    assert_eq!(
        d.channel_names().into_iter().collect::<Vec<_>>(),
        ["group-c1", "sms-day", "sms-fuhai", "sms-g1", "sms-night", "sms-off", "sms-screen"]
    );
}

/// Writes `text` to `path` with modification time `secs` after the epoch, so tests do not
/// depend on the file system's timestamp resolution.
fn write(path: &Path, text: &str, secs: u64) {
    std::fs::write(path, text).unwrap();
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
}

fn ids(watch: &DirectoryWatch) -> Vec<String> {
    watch.current().officers().iter().map(|o| o.id.clone()).collect()
}

#[test]
fn reload_swaps_on_change_and_keeps_the_old_directory_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("officers.toml");
    write(&path, &officer("a", "grid:G1", ""), 1_000);
    let watch = DirectoryWatch::open(&path).unwrap();
    assert_eq!(watch.path(), path);
    assert_eq!(ids(&watch), ["a"]);
    assert!(!watch.reload_if_changed().unwrap(), "unchanged");

    // A reader holding the old directory keeps it; new readers get the new one.
    let held = watch.current();
    write(&path, &format!("{}{}", officer("a", "grid:G1", ""), officer("b", "grid:G2", "")), 1_001);
    assert!(watch.reload_if_changed().unwrap());
    assert_eq!(ids(&watch), ["a", "b"]);
    assert_eq!(held.len(), 1);
    assert!(watch.current().authenticate("token-b").is_ok());

    // Same content size, new time: still a change.
    write(&path, &format!("{}{}", officer("a", "grid:G1", ""), officer("c", "grid:G2", "")), 1_002);
    assert!(watch.reload_if_changed().unwrap());
    assert_eq!(ids(&watch), ["a", "c"]);

    // A broken file: the error once, the old directory kept, then quiet until it changes.
    write(&path, &officer("a b", "grid:G1", ""), 1_003);
    let Err(DirectoryError::Invalid(errors)) = watch.reload_if_changed() else { panic!("must not load") };
    assert_eq!(errors.len(), 1);
    assert_eq!(ids(&watch), ["a", "c"]);
    assert!(!watch.reload_if_changed().unwrap(), "reported once");
    assert_eq!(ids(&watch), ["a", "c"]);

    // Fixed: loads.
    write(&path, &officer("d", "grid:G1", ""), 1_004);
    assert!(watch.reload_if_changed().unwrap());
    assert_eq!(ids(&watch), ["d"]);

    // Removed: an I/O error once, the directory kept; back again: loads.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(watch.reload_if_changed(), Err(DirectoryError::Io { .. })));
    assert!(!watch.reload_if_changed().unwrap(), "reported once");
    assert_eq!(ids(&watch), ["d"]);
    write(&path, &officer("e", "grid:G1", ""), 1_005);
    assert!(watch.reload_if_changed().unwrap());
    assert_eq!(ids(&watch), ["e"]);
}

#[test]
fn open_fails_without_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("officers.toml");
    assert!(matches!(DirectoryWatch::open(&path), Err(DirectoryError::Io { .. })));
    assert!(matches!(Directory::load(&path), Err(DirectoryError::Io { .. })));
    std::fs::write(&path, "[[officer]]\n").unwrap();
    assert!(matches!(DirectoryWatch::open(&path), Err(DirectoryError::Invalid(_))));
}

#[tokio::test]
async fn the_reload_loop_picks_up_changes_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("officers.toml");
    write(&path, &officer("a", "grid:G1", ""), 1_000);
    let watch = Arc::new(DirectoryWatch::open(&path).unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(watch.clone(), Duration::from_millis(10), shutdown.clone()));
    write(&path, &officer("b", "grid:G1", ""), 1_001);
    tokio::time::timeout(Duration::from_secs(5), async {
        while ids(&watch) != ["b"] {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the loop reloads the changed file");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the loop stops").unwrap();
}

#[test]
fn new_tokens_are_random_base64url_and_hash_to_their_hash() {
    let tokens: Vec<(String, String)> = (0..100).map(|_| new_token()).collect();
    for (token, hash) in &tokens {
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(*hash, token_sha256_hex(token));
        assert_eq!(hash.len(), 64);
        assert_eq!(bearer(Some(&format!("Bearer {token}"))), Ok(token.as_str()));
    }
    let distinct: std::collections::HashSet<&String> = tokens.iter().map(|(t, _)| t).collect();
    assert_eq!(distinct.len(), tokens.len());
    // A new token and its hash make a working directory entry.
    let (token, hash) = &tokens[0];
    let d = Directory::from_toml(&officer("n", "grid:G1", "").replace(&token_sha256_hex("token-n"), hash))
        .unwrap();
    assert_eq!(d.authenticate(token).unwrap().id, "n");
    // The hash is SHA-256 (FIPS 180-2 test vector "abc").
    assert_eq!(token_sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
