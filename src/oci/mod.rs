//! The OCI formats layerboot reads and writes, independent of where they come from:
//! image references ([`reference`]), manifests, indexes and configs ([`manifest`]), and
//! image layouts and archives on disk ([`layout`]: the one reader of a layout's files,
//! every blob's digest verified).

pub mod layout;
pub mod manifest;
pub mod reference;
