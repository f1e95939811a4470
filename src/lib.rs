//! batisync (skeleton)

pub mod batisimply;
