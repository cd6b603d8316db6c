//! The first run's officer: `firegrid run` with the alarm loop on, no officer directory and
//! the officer API on loopback makes one local commander for the whole district, so the first
//! alarm reaches someone who can sign in to the console. The directory is written once under
//! the data directory (mode 0600, only the token's hash); the token itself is shown once, in
//! the start banner.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use firegrid_cases::AlertingConfig;

/// The first-run officer's id.
pub const OFFICER: &str = "local-admin";

/// What [`prepare`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstRun {
    /// The directory the gateway now uses.
    pub directory: PathBuf,
    /// The officer's token, when the directory was made now (shown once).
    pub token: Option<String>,
    /// The officer's scope.
    pub scope: String,
}

/// Points `alerting` at the first-run directory under `data_dir` (making it if missing) when
/// the alarm loop runs without an officer directory and the API listens on loopback only
/// (`api_on_loopback`); `None` otherwise.
pub fn prepare(
    alerting: &mut AlertingConfig,
    data_dir: &Path,
    api_on_loopback: bool,
) -> io::Result<Option<FirstRun>> {
    if !alerting.enabled || alerting.officers.is_some() || !api_on_loopback {
        return Ok(None);
    }
    let scope = format!("district:{}", alerting.district);
    let path = data_dir.join("first-run-officers.toml");
    let token = if path.exists() { None } else { Some(write(&path, &scope)?) };
    alerting.officers = Some(path.clone());
    Ok(Some(FirstRun { directory: path, token, scope }))
}

fn write(path: &Path, scope: &str) -> io::Result<String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (token, hash) = super::new_token();
    let text = format!(
        "# Made by the first `firegrid run` without an officer directory: one local commander for the\n\
         # whole district. Replace it with your officers ([alerting] officers; see\n\
         # alerting/officers/officers.example.toml) before anyone else can reach this machine.\n\n\
         [[officer]]\nid = \"{OFFICER}\"\nname = \"Local administrator\"\nrole = \"commander\"\n\
         scope = \"{scope}\"\non_duty = true\ntoken_sha256 = \"{hash}\"\n"
    );
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(token)
}
