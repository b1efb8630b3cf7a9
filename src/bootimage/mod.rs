//! Boot image kinds (`bootimages/*.toml`) and their resolution into a disk layout plan.
//! The executor that writes a disk from a plan lives in [`crate::disk`].

pub mod definition;
pub(crate) mod plan;

pub use definition::{
    Catalog, Compression, CompressionSetting, Definition, Filesystem, Firmware, Format, Package,
    Role,
};
pub use plan::{
    check_request, check_staged_content, resolve, ContentSizes, Plan, PlanOptions, PlannedPartition,
};
