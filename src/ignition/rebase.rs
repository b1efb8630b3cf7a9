//! Standalone first-boot rebase config (filled in below).
