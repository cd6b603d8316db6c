//! Logging shim: the same call sites log through `defmt` on target builds, through `log`
//! on host builds that ask for it, and compile to nothing otherwise, so host tests link
//! without a defmt global logger (firmware research §1.4: a defmt call site compiled into a
//! host test binary fails to link). Format strings use only `{}`/`{:?}`, which both
//! syntaxes accept.
//!
//! With both features on (`--all-features`), defmt wins: features must stay additive, so
//! the combination compiles rather than failing.

macro_rules! info {
    ($($t:tt)*) => {{
        #[cfg(feature = "defmt")]
        ::defmt::info!($($t)*);
        #[cfg(all(feature = "log", not(feature = "defmt")))]
        ::log::info!($($t)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        let _ = ::core::format_args!($($t)*);
    }};
}

macro_rules! warning {
    ($($t:tt)*) => {{
        #[cfg(feature = "defmt")]
        ::defmt::warn!($($t)*);
        #[cfg(all(feature = "log", not(feature = "defmt")))]
        ::log::warn!($($t)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        let _ = ::core::format_args!($($t)*);
    }};
}

pub(crate) use {info, warning};
