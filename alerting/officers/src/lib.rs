//! The duty officers' side of the alarm loop: the officer directory (who answers alarms, at
//! which desk, how they are reached, and the bearer tokens they use), the officer HTTP API
//! over cases ([`api`]) and the web console ([`console`]).
//!
//! The directory is a TOML file of `[[officer]]` tables (`alerting/officers/officers.example.toml`
//! shows every field). [`Directory::load`] reads it and reports **every** problem with its
//! line and column, as the device registry does for CSV rows. A [`Directory`] is immutable;
//! [`DirectoryWatch`] reloads the file when its modification time or size changes and swaps
//! the shared pointer, so a request sees either the old or the new directory, and a file
//! that does not load leaves the old one in place.
//!
//! Main types: [`Directory`] (officers by id and by token hash), [`OfficerEntry`] (one
//! officer; [`OfficerEntry::officer`] is what the alarm engine checks scope with), [`Role`],
//! [`AuthError`] and [`bearer`] for the `Authorization` header, [`new_token`] for issuing
//! tokens, and [`run`], the reload loop.
//!
//! **Off-duty officers can still log in.** `on_duty` only decides who is paged
//! ([`Directory::on_duty_channels`]); an officer at home may still open the case list, and
//! one called in mid-incident must not wait for someone to edit the file before they can
//! acknowledge. Access is governed by [`Role`] and scope alone.

pub mod api;
pub mod console;
pub mod first_run;
mod token;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use firegrid_alerting::{Officer, Scope, ScopeParseError};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use token::{AuthError, TOKEN_LEN, bearer, new_token, token_sha256, token_sha256_hex};
pub use watch::{DirectoryWatch, run};

/// Longest officer id, in bytes. Ids appear in case event logs and URLs; 64 is room for
/// `street-fuhai-duty-night-2` style names without inviting prose.
const MAX_ID_LEN: usize = 64;

/// What an officer may do on the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 网格长: leads a grid.
    GridLeader,
    /// 网格员: a grid worker who checks on site.
    GridWorker,
    /// 值班员: staffs a community, street or district duty desk.
    DutyOfficer,
    /// 指挥长: commands at street or district level.
    Commander,
    /// Reads cases and the event stream, acts on nothing (a supervisor's wall screen).
    Viewer,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] =
        [Role::GridLeader, Role::GridWorker, Role::DutyOfficer, Role::Commander, Role::Viewer];

    /// Whether this role may act on cases (acknowledge, dispatch, close). A viewer may only
    /// list and read cases and follow the stream.
    pub const fn may_act(self) -> bool {
        !matches!(self, Role::Viewer)
    }

    /// Whether this role may use the officer API's device routes, which the gateway adds:
    /// place an unplaced device in the registry, reset a device's replay window, follow a
    /// firmware rollout. Duty officers and commanders may; grid officers and viewers may not.
    /// The routes refuse by it, and `/api/v1/me` tells the console, which shows the views
    /// of those routes only to the roles they answer.
    pub const fn may_administer_devices(self) -> bool {
        matches!(self, Role::DutyOfficer | Role::Commander)
    }

    /// The name used in the directory file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::GridLeader => "grid_leader",
            Role::GridWorker => "grid_worker",
            Role::DutyOfficer => "duty_officer",
            Role::Commander => "commander",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[officer]]` table as written in the file. Its field docs are the file format's
/// documentation. Fields whose text needs checking are kept with their position so every
/// problem can name its line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOfficer {
    /// Unique id, 1 to 64 of `A-Z a-z 0-9 . _ -`. It names the officer in case event logs.
    id: Spanned<String>,
    /// Display name (free text, not empty), e.g. `网格长 张`.
    name: Spanned<String>,
    /// `grid_leader`, `grid_worker`, `duty_officer`, `commander` or `viewer` (read only).
    role: Role,
    /// The desk the officer answers for, `level:name`: `grid:G1`, `community:C1`,
    /// `street:Fuhai`, `district:Xishan`. They see and act on cases at or below it.
    scope: Spanned<String>,
    /// Whether the officer is paged now. Off-duty officers can still log in.
    on_duty: bool,
    /// SHA-256 of the officer's bearer token, 64 hex digits (`firegrid officer-token`
    /// prints a new token and this hash). The token itself is never stored.
    token_sha256: Spanned<String>,
    /// Names of notification channels (from the gateway configuration) that reach this
    /// officer. Empty: the officer is never paged.
    #[serde(default)]
    channels: Vec<Spanned<String>>,
}

/// One duty officer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficerEntry {
    /// Unique id, 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// The desk they answer for; they see cases at or below it.
    pub scope: Scope,
    /// Whether they are paged now.
    pub on_duty: bool,
    /// SHA-256 of their bearer token.
    pub token_sha256: [u8; 32],
    /// Notification channels that reach them, in file order.
    pub channels: Vec<String>,
}

impl OfficerEntry {
    /// The officer as the alarm engine sees them: id and scope.
    pub fn officer(&self) -> Officer {
        Officer { id: self.id.clone(), scope: self.scope.clone() }
    }

    /// Whether they may act on cases; see [`Role::may_act`].
    pub fn may_act(&self) -> bool {
        self.role.may_act()
    }
}

/// Why one part of the directory file is refused. Shown after `line L, column C: `.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// The file is not valid TOML.
    #[error("TOML syntax: {0}")]
    Syntax(String),
    /// The TOML is valid but not a directory: an unknown key at the top.
    #[error("unknown key {0:?}; a directory holds only [[officer]] tables")]
    UnknownKey(String),
    /// `officer` is there but not an array of tables.
    #[error("`officer` must be written as [[officer]] tables")]
    NotOfficerTables,
    /// An officer table has an unknown or missing field, or a value of the wrong type
    /// (serde's message, which names the field and the accepted values). Reading such a
    /// table stops at its first such problem, so its other fields are checked once it is
    /// fixed.
    #[error("{0}")]
    Field(String),
    /// The id has characters or a length outside the allowed set.
    #[error("id {0:?} must be 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadId(String),
    /// Two officers share an id.
    #[error("id {id:?} is already used on line {first_line}")]
    DuplicateId {
        /// The id.
        id: String,
        /// Where it first appeared.
        first_line: usize,
    },
    /// The display name is empty.
    #[error("name must not be empty")]
    EmptyName,
    /// The scope is not `level:name`.
    #[error("{0}")]
    BadScope(ScopeParseError),
    /// `token_sha256` is not 64 hex digits.
    #[error("token_sha256 must be 64 hex digits (the SHA-256 of the token), {0}")]
    BadTokenHash(&'static str),
    /// Two officers share a token hash, so one token would log in as either of them.
    #[error(
        "officer {id:?} has the same token_sha256 as {other:?} on line {first_line}; every officer needs their own token"
    )]
    DuplicateToken {
        /// The officer with the repeated hash.
        id: String,
        /// The officer who has it first.
        other: String,
        /// Where that officer's hash is.
        first_line: usize,
    },
    /// A channel name is empty.
    #[error("channel names must not be empty")]
    EmptyChannel,
}

/// One problem and where it is (1-based line and column, in characters).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}, column {column}: {problem}")]
pub struct EntryError {
    /// Line.
    pub line: usize,
    /// Column, counted in characters.
    pub column: usize,
    /// What is wrong.
    pub problem: Problem,
}

/// Why a directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The file could not be opened or read (or is not UTF-8).
    #[error("officer directory {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file was refused; every problem is listed, in file order.
    #[error("officer directory refused:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<EntryError>),
}

/// The officer directory: officers by id and by token hash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directory {
    /// In file order.
    officers: Vec<OfficerEntry>,
    by_id: HashMap<String, u32>,
    by_token: HashMap<[u8; 32], u32>,
}

impl Directory {
    /// Loads a directory file. On error nothing is returned but every problem found, so a
    /// caller that reloads keeps the directory it has.
    pub fn load(path: impl AsRef<Path>) -> Result<Directory, DirectoryError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| DirectoryError::Io { path: path.to_owned(), source })?;
        Directory::from_toml(&text)
    }

    /// Parses directory TOML.
    pub fn from_toml(text: &str) -> Result<Directory, DirectoryError> {
        let at = |span: std::ops::Range<usize>, problem| {
            let (line, column) = line_column(text, span.start);
            EntryError { line, column, problem }
        };
        let root = match DeTable::parse(text) {
            Ok(root) => root.into_inner(),
            Err(e) => {
                // A syntax error makes everything after it uncertain, so it is reported alone.
                let span = e.span().unwrap_or(0..0);
                return Err(DirectoryError::Invalid(vec![at(span, Problem::Syntax(e.message().to_owned()))]));
            }
        };
        let mut errors = Vec::new();
        let mut tables: &[Spanned<DeValue<'_>>] = &[];
        for (key, value) in &root {
            match (key.get_ref().as_ref(), value.get_ref()) {
                ("officer", DeValue::Array(a)) if a.iter().all(|t| t.get_ref().is_table()) => tables = a,
                ("officer", _) => errors.push(at(value.span(), Problem::NotOfficerTables)),
                (other, _) => errors.push(at(key.span(), Problem::UnknownKey(other.to_owned()))),
            }
        }

        let mut officers = Vec::with_capacity(tables.len());
        // Where each id and each token hash first appears (and whose hash it is), over every
        // table that parsed, so a repeat is reported even if the first one has problems too.
        let mut id_lines: HashMap<String, usize> = HashMap::new();
        let mut hash_owners: HashMap<[u8; 32], (String, usize)> = HashMap::new();
        for table in tables {
            let raw = match RawOfficer::deserialize(ValueDeserializer::from(table.clone())) {
                Ok(raw) => raw,
                Err(e) => {
                    errors.push(at(e.span().unwrap_or(table.span()), Problem::Field(e.message().to_owned())));
                    continue;
                }
            };
            let before = errors.len();
            let line_of = |s: &Spanned<String>| line_column(text, s.span().start).0;
            let id = raw.id.get_ref();
            if !valid_id(id) {
                errors.push(at(raw.id.span(), Problem::BadId(id.clone())));
            }
            match id_lines.entry(id.clone()) {
                Entry::Occupied(e) => errors
                    .push(at(raw.id.span(), Problem::DuplicateId { id: id.clone(), first_line: *e.get() })),
                Entry::Vacant(e) => {
                    e.insert(line_of(&raw.id));
                }
            }
            if raw.name.get_ref().trim().is_empty() {
                errors.push(at(raw.name.span(), Problem::EmptyName));
            }
            let scope = raw
                .scope
                .get_ref()
                .parse::<Scope>()
                .map_err(|e| errors.push(at(raw.scope.span(), Problem::BadScope(e))))
                .ok();
            let hash = parse_hash(raw.token_sha256.get_ref())
                .map_err(|reason| errors.push(at(raw.token_sha256.span(), Problem::BadTokenHash(reason))))
                .ok();
            if let Some(hash) = hash {
                match hash_owners.entry(hash) {
                    Entry::Occupied(e) => {
                        let (other, first_line) = e.get().clone();
                        errors.push(at(
                            raw.token_sha256.span(),
                            Problem::DuplicateToken { id: id.clone(), other, first_line },
                        ));
                    }
                    Entry::Vacant(e) => {
                        e.insert((id.clone(), line_of(&raw.token_sha256)));
                    }
                }
            }
            for channel in &raw.channels {
                if channel.get_ref().trim().is_empty() {
                    errors.push(at(channel.span(), Problem::EmptyChannel));
                }
            }
            if let (true, Some(scope), Some(token_sha256)) = (errors.len() == before, scope, hash) {
                officers.push(OfficerEntry {
                    id: raw.id.into_inner(),
                    name: raw.name.into_inner(),
                    role: raw.role,
                    scope,
                    on_duty: raw.on_duty,
                    token_sha256,
                    channels: raw.channels.into_iter().map(Spanned::into_inner).collect(),
                });
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| (e.line, e.column));
            return Err(DirectoryError::Invalid(errors));
        }
        let by_id = officers.iter().enumerate().map(|(i, o)| (o.id.clone(), i as u32)).collect();
        let by_token = officers.iter().enumerate().map(|(i, o)| (o.token_sha256, i as u32)).collect();
        Ok(Directory { officers, by_id, by_token })
    }

    /// The officer holding `bearer_token`, found by the token's SHA-256 in O(1). Off-duty
    /// officers are found too: `on_duty` decides who is paged, not who may log in.
    pub fn authenticate(&self, bearer_token: &str) -> Result<&OfficerEntry, AuthError> {
        token::check_syntax(bearer_token)?;
        let hash = token_sha256(bearer_token);
        let entry =
            self.by_token.get(&hash).map(|i| &self.officers[*i as usize]).ok_or(AuthError::Unknown)?;
        // The map lookup already compared hashes, with ordinary (early-exit) equality. That
        // is safe: its timing can only tell an attacker how SHA-256 of their guess compares
        // with a stored hash, and steering a guess towards a hash needs a preimage. The
        // decision to accept is still made by a constant-time comparison, so it does not
        // depend on how the index is keyed (a prefix index would make this check the only
        // one).
        if bool::from(entry.token_sha256.ct_eq(&hash)) { Ok(entry) } else { Err(AuthError::Unknown) }
    }

    /// Channels that page the desk `desk`: those of on-duty officers whose scope is exactly
    /// the desk and who may act, in file order without repeats. A community desk's officers
    /// are paged for community-level notifications, not the grid leaders below them nor the
    /// street above (escalation reaches those through their own desks). Viewers are never
    /// paged, since they could not acknowledge.
    pub fn on_duty_channels(&self, desk: &Scope) -> Vec<String> {
        let mut channels: Vec<String> = Vec::new();
        // A directory has tens to hundreds of officers; a scan is cheaper than keeping an
        // index in step with it.
        for o in self.officers.iter().filter(|o| o.on_duty && o.may_act() && o.scope == *desk) {
            for c in &o.channels {
                if !channels.contains(c) {
                    channels.push(c.clone());
                }
            }
        }
        channels
    }

    /// Every channel name any officer lists, so the runtime can check them against the
    /// channels its configuration defines (the directory does not know them).
    pub fn channel_names(&self) -> BTreeSet<&str> {
        self.officers.iter().flat_map(|o| o.channels.iter().map(String::as_str)).collect()
    }

    /// The officer with this id: O(1).
    pub fn get(&self, id: &str) -> Option<&OfficerEntry> {
        self.by_id.get(id).map(|i| &self.officers[*i as usize])
    }

    /// Every officer, in file order.
    pub fn officers(&self) -> &[OfficerEntry] {
        &self.officers
    }

    /// Number of officers.
    pub fn len(&self) -> usize {
        self.officers.len()
    }

    /// Whether there are no officers.
    pub fn is_empty(&self) -> bool {
        self.officers.is_empty()
    }
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse_hash(text: &str) -> Result<[u8; 32], &'static str> {
    if text.len() != 64 {
        return Err("this has a different length");
    }
    let mut hash = [0; 32];
    hex::decode_to_slice(text, &mut hash).map_err(|_| "this has a character that is not 0-9 a-f A-F")?;
    Ok(hash)
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}
