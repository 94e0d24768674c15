//! The test data of nixdag's tests and benches: pseudo-random generators, incompressible and
//! compressible bytes, edited copies, tar streams, NAR tokens and package-like trees, all from fixed seeds
//! so that every run sees the same bytes and no test reads data from outside.
//!
//! One crate, a dev-dependency of nixdag, so that the unit tests in `src/` (`#[cfg(test)]`), the
//! integration tests (`tests/it`) and the criterion benches (`benches/`) share one copy of each generator
//! instead of a copy per file. It does not depend on nixdag: what needs nixdag's own types (a NAR of a
//! tree, a block and its hash) stays with the tests.
//!
//! Several generators make the same kind of data by different algorithms (four kinds of incompressible
//! bytes, four kinds of text). They are kept apart, each under a name that says how it is made, because
//! tests depend on their exact output: golden sizes and counts, delta and compression ratios tuned on that
//! data, feature values pinned in the index format, and bench figures compared across commits. Merging two
//! of them would change what a test sees; the kit's own tests (`src/tests.rs`) pin every one of them.
//!
//! What stays with its tests: compositions that say something about one test (a tree with store-path
//! references every 4 KiB, a text with bytes varied so a tool's output differs), built from these.

pub mod bytes;
pub mod files;
pub mod nar;
pub mod rng;
pub mod tar;
pub mod text;

pub use bytes::{edited, noise, splitmix_bytes, std_rng_bytes, xorshift_bytes};
pub use files::{package_tree, small_files_tree, write_random, TreeStats, MIB};
pub use nar::{tok, toks};
pub use rng::{splitmix64, Xorshift};
pub use tar::{tar_of, tar_stream, tarball_content};
pub use text::{nix_words, rust_tokens, source_words, store_words};

#[cfg(test)]
mod tests;
