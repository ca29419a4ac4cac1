//! guestreset: declarative, once-per-generation redemption resets for Microsoft Entra B2B guests.

pub mod graph;
pub mod resource;
