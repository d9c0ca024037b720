//! One module per endpoint family. A route parses its request, builds a typed plan (every
//! 400/404 is raised there, before the first engine request), runs it through the services,
//! jobs and the response assembler, and never calls another route module.

pub mod chat;
pub mod completions;
pub mod harmlessness;
pub mod honesty;
pub mod interp;
pub mod label;
pub mod misc;
pub mod ood;
pub mod revise;
pub mod scoring;
pub mod weights;
