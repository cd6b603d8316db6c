//! Identifiers that appear in topics and payloads.

use core::fmt;
use core::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::error::IdError;

/// Longest valid village or device id, in bytes.
///
/// 32 bytes holds an IMEI (15 digits), a factory serial with a vendor prefix, or a
/// `{building}-{room}` style name, and keeps the longest topic under
/// [`crate::MAX_TOPIC_LEN`].
pub const ID_MAX_LEN: usize = 32;

/// Capacity of the in-memory id buffer. Ids longer than [`ID_MAX_LEN`] but no longer than
/// this still decode, so validation can reject them with the typed [`IdError::TooLong`]
/// instead of a generic decode error.
const ID_WIRE_CAP: usize = 64;

/// Checks an id: 1 to [`ID_MAX_LEN`] bytes of `A-Z a-z 0-9 . _ -`.
///
/// The alphabet excludes the MQTT wildcards `+` and `#`, the level separator `/`, spaces,
/// quotes and control characters, so an id can be spliced into a topic or a line-protocol
/// tag without escaping and can never widen a subscription.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > ID_MAX_LEN {
        return Err(IdError::TooLong { len: id.len() });
    }
    match id.bytes().position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))) {
        Some(at) => Err(IdError::BadChar { at }),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(heapless::String<ID_WIRE_CAP>);

        impl $name {
            /// Checks `id` and wraps it.
            pub fn new(id: &str) -> Result<Self, IdError> {
                check_id(id)?;
                // Cannot fail: check_id bounds the length below the capacity.
                Ok(Self(heapless::String::try_from(id).map_err(|_| IdError::TooLong { len: id.len() })?))
            }

            /// Whether this id (which may come from a decoded message) is valid.
            pub fn check(&self) -> Result<(), IdError> {
                check_id(&self.0)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(id: &str) -> Result<Self, IdError> {
                Self::new(id)
            }
        }
    };
}

id_type!(
    /// A device id: one detector, camera, water sensor or other field device.
    DeviceId
);
id_type!(
    /// A village id: the deployment scope one gateway (or one broker) serves.
    VillageId
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, expected: Result<(), IdError>) {
        assert_eq!(check_id(id), expected, "id {id:?}");
        assert_eq!(DeviceId::new(id).map(|_| ()), expected, "DeviceId::new({id:?})");
    }

    #[test]
    fn ids() {
        check("sd-000123", Ok(()));
        check("862177040000001", Ok(()));
        check("B12_r3.cam-2", Ok(()));
        check(&"a".repeat(ID_MAX_LEN), Ok(()));
        check("", Err(IdError::Empty));
        check(&"a".repeat(ID_MAX_LEN + 1), Err(IdError::TooLong { len: 33 }));
        check("a+b", Err(IdError::BadChar { at: 1 }));
        check("#", Err(IdError::BadChar { at: 0 }));
        check("a/b", Err(IdError::BadChar { at: 1 }));
        check("ab\n", Err(IdError::BadChar { at: 2 }));
        check("a b", Err(IdError::BadChar { at: 1 }));
        check("a\"b", Err(IdError::BadChar { at: 1 }));
        check("烟感1", Err(IdError::BadChar { at: 0 }));
    }
}
