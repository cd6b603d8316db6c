//! Where a case is and who may see it: [`Location`] (a building's place in the grid
//! hierarchy) and [`Scope`] (one desk: a level and the name of the unit at that level).

use serde::{Deserialize, Serialize};

use crate::Level;

/// A building's place in the hierarchy, as the device registry records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Location {
    /// District (区).
    pub district: String,
    /// Street (街道).
    pub street: String,
    /// Community (社区).
    pub community: String,
    /// Grid (网格).
    pub grid: String,
    /// Building id; empty for a case about a whole scope (a grid's communication loss).
    pub building: String,
}

impl Location {
    /// The name of the unit this location belongs to at `level`.
    pub fn name_at(&self, level: Level) -> &str {
        match level {
            Level::Grid => &self.grid,
            Level::Community => &self.community,
            Level::Street => &self.street,
            Level::District => &self.district,
        }
    }

    /// The desk that answers for this location at `level`.
    pub fn desk(&self, level: Level) -> Scope {
        Scope { level, name: self.name_at(level).to_owned() }
    }
}

/// A unit of the hierarchy and its duty desk: `grid:G3`, `community:Dongfeng`,
/// `street:Fuhai`, `district:Xishan`. An officer's scope says which cases they may see and
/// act on: everything at or below their unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scope {
    /// The level of the unit.
    pub level: Level,
    /// The unit's name at that level.
    pub name: String,
}

impl Scope {
    /// Whether a case at `location` lies within this scope.
    pub fn covers(&self, location: &Location) -> bool {
        location.name_at(self.level) == self.name
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.level.as_str(), self.name)
    }
}

/// Why a text is not a [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope {0:?} is not `level:name` with level one of grid, community, street, district")]
pub struct ScopeParseError(pub String);

impl std::str::FromStr for Scope {
    type Err = ScopeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (level, name) = s.split_once(':').ok_or_else(|| ScopeParseError(s.to_owned()))?;
        let level = Level::ALL
            .into_iter()
            .find(|l| l.as_str() == level)
            .ok_or_else(|| ScopeParseError(s.to_owned()))?;
        if name.is_empty() {
            return Err(ScopeParseError(s.to_owned()));
        }
        Ok(Scope { level, name: name.to_owned() })
    }
}
