pub mod bench;
pub mod data;
pub mod detect;
pub mod device;
pub mod eval;
pub mod train;
